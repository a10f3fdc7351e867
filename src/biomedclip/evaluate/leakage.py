"""Train/test leakage: which evaluated images are also in a training corpus, compared by SHA-256.

What is compared: the corpus catalog's ``sha256`` is the SHA-256 of each figure's **source image bytes** as read
from the source (``corpus/images.py`` hashes the bytes before decoding and resizing, not the JPEG written to the
shards). So the evaluated items are hashed the same way: the bytes of their source files. Items that are not
files (PCam and MedMNIST arrays, images inside shards) cannot be compared this way and are counted as unchecked.
The training images are the catalog rows with ``status = accepted`` and ``split = train``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from biomedclip.errors import InputError

COMPARED = "SHA-256 of the source image file bytes (the corpus catalog hashes source bytes, before resizing)"
UNCHECKED_REASON = "images inside shards or arrays have no source file to hash"


def catalog_path(path: str | Path) -> Path:
    """The catalog ``path`` names: a Parquet file, a folder of catalog parts, or a corpus OUT folder (its
    ``catalog/`` parts, else its ``catalog.parquet``)."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "catalog", path / "catalog.parquet"):
            if candidate.exists():
                return candidate
        if not any(path.glob("*.parquet")):
            raise InputError(f"no corpus catalog in {path} (give the OUT folder of 'corpus build' or OUT/catalog)")
    elif not path.is_file():
        raise InputError(f"no corpus catalog at {path} (give the OUT folder of 'corpus build' or OUT/catalog)")
    return path


def training_hashes(catalog: str | Path) -> set[str]:
    """SHA-256 of every accepted training image of a corpus catalog."""
    import pyarrow.parquet as pq

    path = catalog_path(catalog)
    try:
        table = pq.read_table(path, columns=["sha256", "split", "status"])  # a file or a folder of parts
    except Exception as error:  # pyarrow raises several types for a file that is not a catalog
        raise InputError(f"{path} is not a corpus catalog (needs sha256, split, status): {error}") from error
    rows = table.to_pydict()
    return {
        digest
        for digest, split, status in zip(rows["sha256"], rows["split"], rows["status"], strict=True)
        if digest and split == "train" and status == "accepted"
    }


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def known_overlap(keys: list[str], rows_path: str | Path, *, examples: int = 5) -> dict:
    """Which of the scored ``keys`` a ``corpus overlap`` report (JSON lines with ``eval`` and ``kind``) found in
    the training corpus: counts per kind (an item found both ways counts as exact) and up to ``examples`` keys."""
    kinds: dict[str, str] = {}
    try:
        with open(rows_path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    item, kind = str(row["eval"]), str(row["kind"])
                except (json.JSONDecodeError, KeyError, TypeError) as error:
                    raise InputError(f"{rows_path}:{number}: not a 'corpus overlap' row ({error})") from error
                if kinds.get(item) != "exact":
                    kinds[item] = kind
    except OSError as error:
        raise InputError(f"cannot read the overlap report {rows_path}: {error}") from error
    found = [key for key in keys if key in kinds]
    return {
        "file": Path(rows_path).name,
        "scored": len(keys),
        "exact": sum(kinds[key] == "exact" for key in found),
        "near": sum(kinds[key] == "near" for key in found),
        "examples": found[:examples],
    }


def check_overlap(
    data, catalog: str | Path | None, *, examples: int = 5, overlap_rows: str | Path | None = None
) -> dict:
    """How many items of ``data`` (a dataset with ``keys`` and optional ``paths``) are training images of ``catalog``
    (same file bytes) and, with ``overlap_rows`` (a ``corpus overlap`` report of the training corpus for this
    dataset), how many it found as exact or near copies (``known_overlap``).

    Returns a JSON-ready dict: ``catalog``, ``compared``, ``checked``, ``unchecked`` (items that are not files),
    ``overlap`` and up to ``examples`` overlapping keys, and ``known_overlap``. Call it with the exact items that
    are scored.
    """
    known = known_overlap(list(data.keys), overlap_rows, examples=examples) if overlap_rows else None
    if catalog is None:
        return {"catalog": None, "compared": None, "training_images": None, "checked": 0,
                "unchecked": len(data.keys), "overlap": 0, "examples": [], "known_overlap": known}  # fmt: skip
    hashes = training_hashes(catalog)
    paths = getattr(data, "paths", None)
    overlapping: list[str] = []
    checked = 0
    if paths is not None:
        for key, path in zip(data.keys, paths, strict=True):
            checked += 1
            if file_sha256(path) in hashes:
                overlapping.append(key)
    unchecked = len(data.keys) - checked
    return {
        "catalog": str(catalog_path(catalog)),
        "catalog_digest": catalog_digest(hashes),
        "compared": COMPARED,
        "training_images": len(hashes),
        "checked": checked,
        "unchecked": unchecked,
        "unchecked_reason": "" if not unchecked else UNCHECKED_REASON,
        "overlap": len(overlapping),
        "examples": overlapping[:examples],
        "known_overlap": known,
    }


def catalog_digest(hashes: set[str]) -> str:
    """A short digest of a catalog's training images (their sorted SHA-256s): part of a result's identity, so a
    result checked against one training corpus is never replaced by one checked against another, or by none."""
    return hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()[:12]


def leakage_line(result: dict) -> str:
    """What the leakage check of a result covered, in one line (also when nothing could be checked)."""
    leakage = result.get("leakage")
    if not leakage:
        return "leakage: not checked (no --train-catalog: scored images were not compared with a training corpus)"
    checked, unchecked = leakage["checked"], leakage.get("unchecked", 0)
    missed = f"; {unchecked} NOT checked ({leakage.get('unchecked_reason') or UNCHECKED_REASON})" if unchecked else ""
    if not checked:
        return f"leakage: NOT checked: none of the {unchecked} scored images is a file ({UNCHECKED_REASON})"
    where = f"training images of {leakage['catalog']}"
    if leakage["overlap"]:
        return f"leakage: {leakage['overlap']} of {checked} checked images are {where}{missed}"
    return f"leakage: none of {checked} checked images is among the {where}{missed}"
