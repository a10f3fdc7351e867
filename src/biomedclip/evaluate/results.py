"""Evaluation results: one JSON file per result identity, holding metrics, counts and the resolved settings.

A result's ``identity`` is a hash of everything that changes its numbers: task, model, dataset spec, split and
every setting except those that only change speed or where output goes (:data:`NEUTRAL_SETTINGS`), and the
digest of the training catalog the scored images were checked against (none: unchecked). So runs that differ in
prompts, max-items, seed, label fractions, split ratios or leakage check get their own file and their own report
row: a rerun without ``--train-catalog`` never replaces the result that carries the leakage flag; a rerun with the
same settings and catalog replaces its file.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path, PurePath

from biomedclip import __version__

RESULT_SUFFIX = ".result.json"
# Settings that do not change a result's numbers (speed, devices, caches, checks that only report).
NEUTRAL_SETTINGS = frozenset(
    {
        "batch_size",
        "device",
        "num_workers",
        "cache_dir",
        "query_chunk",
        "gallery_chunk",
        "train_catalog",
        "train_overlap",
    }
)


def slug(text: str, limit: int = 60) -> str:
    """A file-name-safe form of ``text`` that keeps its beginning; long ones end in a hash of the whole text."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"
    if len(safe) <= limit:
        return safe
    return f"{safe[: limit - 9]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def spec_name(spec: str) -> str:
    """A short readable name of a model or dataset spec: ``lc25000_lung:/data/LC25000`` -> ``lc25000_lung-LC25000``."""
    kind, sep, rest = spec.partition(":")
    if sep and re.fullmatch(r"[A-Za-z][\w-]*", kind) and not rest.startswith("//"):
        tail = PurePath(rest.rstrip("/")).name
        return f"{kind}-{tail}" if tail else kind
    return PurePath(spec.rstrip("/")).name or spec


def prompts_hash(classnames: list[str] | tuple[str, ...], templates: list[str] | tuple[str, ...]) -> str:
    """A short hash of a prompt set (class names in order and templates)."""
    return hashlib.sha256(json.dumps([list(classnames), list(templates)]).encode()).hexdigest()[:12]


def result_identity(
    task: str, model: str, dataset: str, split: str, settings: dict, leakage: dict | None = None
) -> str:
    """The hash of what changes a result's numbers or what they can be trusted for (see the module docstring)."""
    numeric = {k: v for k, v in settings.items() if k not in NEUTRAL_SETTINGS}
    checked_against = (leakage or {}).get("catalog_digest", "unchecked")
    parts = [task, model, dataset, split, numeric] + ([checked_against] if checked_against != "unchecked" else [])
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def make_result(
    task: str,
    model: str,
    dataset: str,
    split: str,
    metrics: dict,
    settings: dict,
    *,
    counts: dict | None = None,
    leakage: dict | None = None,
) -> dict:
    """The result record written for every evaluation run.

    ``counts`` (see :func:`biomedclip.evaluate.tasks.dataset_counts`): images scored and found, how the split
    was chosen, the majority-class rate. ``leakage``: the overlap with a training corpus, when one was checked.
    """
    result = {
        "task": task,
        "model": model,
        "dataset": dataset,
        "split": split,
        "identity": result_identity(task, model, dataset, split, settings, leakage),
        "metrics": metrics,
        "settings": settings,
        "biomedclip_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if counts is not None:
        result["counts"] = counts
    if leakage is not None:
        result["leakage"] = leakage
    return result


def result_stem(result: dict) -> str:
    """``<task>__<model>__<dataset>__<split>__<identity>``: readable, and unique per identity."""
    identity = result.get("identity") or result_identity(
        result["task"], result["model"], result["dataset"], result.get("split", ""), result.get("settings", {})
    )
    parts = (result["task"], spec_name(result["model"]), spec_name(result["dataset"]), result.get("split", ""))
    return "__".join(slug(p) for p in parts) + f"__{identity}"


def write_result(result: dict, out_dir: str | Path) -> Path:
    """Write ``<result_stem>.result.json`` under ``out_dir`` and return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / (result_stem(result) + RESULT_SUFFIX)
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def read_results(paths: list[str | Path]) -> list[dict]:
    """Every result JSON in the given files or folders (recursively), in a stable order."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(path.rglob(f"*{RESULT_SUFFIX}")))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no result file or folder at {path}")
    results = []
    for file in files:
        try:
            record = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read result {file}: {error}") from error
        if not isinstance(record, dict) or not {"task", "model", "dataset", "metrics"} <= set(record):
            raise ValueError(f"{file} is not an evaluation result (needs task, model, dataset, metrics)")
        results.append(record)
    return results


def counts_line(result: dict) -> str:
    """``82 of 450 images (split test by hash 70/10/20), majority class 0.512`` (empty without counts)."""
    counts = result.get("counts")
    if not counts:
        return ""
    line = f"{counts['n']} of {counts['found']} {counts.get('unit', 'images')}"
    if counts.get("rule"):
        line += f" ({counts['rule']})"
    if counts.get("majority_rate") is not None:
        line += f", majority class {counts['majority_rate']:.3f}"
    return line


def leakage_warning(result: dict) -> str:
    """A loud warning (a line per check) when the scored images overlap the training corpus, else ``""``."""
    leakage = result.get("leakage") or {}
    lines = []
    if leakage.get("overlap"):
        lines.append(
            f"WARNING: LEAKAGE: {leakage['overlap']} of {leakage['checked']} scored images are in the training "
            f"corpus {leakage['catalog']} (same SHA-256); these numbers overstate the model"
        )
    known = leakage.get("known_overlap") or {}
    if known.get("exact") or known.get("near"):
        lines.append(
            f"WARNING: LEAKAGE: {known['exact'] + known['near']} of {known['scored']} scored images have copies in "
            f"the training corpus according to {known['file']} (exact {known['exact']}, near {known['near']}); "
            "these numbers overstate the model"
        )
    return "\n".join(lines)
