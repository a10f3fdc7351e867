"""Embed one corpus shard into a vector folder: ``NAME.npy`` (float16), ``NAME.parquet`` (records), ``NAME.done.json``.

The folder is the contract between ``biomedclip embed`` and the streaming index build
(:mod:`biomedclip.serve.vector_folder` reads it):

- ``vectors.json``, written first: ``{"format": "biomedclip-vectors/1", "model", "dim", "dtype": "float16"}``;
- per corpus shard (``shards/train-000000.tar`` -> ``train-000000``, ``panels/shards/train-000000.tar`` ->
  ``panels-train-000000``): its unit rows as float16 (``np.load(path, mmap_mode="r")`` works), one index record
  per row (the columns of :data:`biomedclip.serve.index.RECORD_COLUMNS`, filled as ``index build`` fills them,
  the shard named relative to the vector folder), and the done marker, written last:
  ``{"rows", "skipped": [{"key", "reason"}], "npy_sha256", "parquet_sha256", "source": {"location", "size",
  "sha256"}}``.

Every file is written beside its destination and moved into place with ``os.replace``, so a killed run leaves
whole files or ``.tmp`` leftovers, never a torn file. A shard counts as embedded only when its marker exists, its
hashes match both files and its source shard is still the one embedded; anything else is embedded again, so a
rerun after ``kill -9`` redoes only the shards without a valid marker and gives the same bytes. Images that do
not decode are skipped and listed in the marker.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from biomedclip.api import Embedder, ImageDecodeError, open_image
from biomedclip.errors import InputError, RunError
from biomedclip.model.inference import embed_images
from biomedclip.serve.identity import file_sha256
from biomedclip.serve.index import records_table
from biomedclip.serve.shards import ShardFigure, index_record, iter_shard, shard_name
from biomedclip.serve.vector_folder import HEADER, VECTORS_FORMAT, write_atomic, write_vector_shard
from biomedclip.shards import is_url

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ShardOutcome:
    """What happened to one shard: embedded now, kept (its marker was valid), or failed (``error`` says why)."""

    shard: str
    stem: str
    rows: int = 0
    skipped: int = 0
    embedded: bool = False
    error: str = ""


@dataclass
class EmbeddedFigures:
    """The unit vectors and index records of one shard's decodable figures, and the figures skipped."""

    vectors: np.ndarray
    records: list[dict[str, Any]]
    skipped: list[dict[str, str]] = field(default_factory=list)


def vector_stem(shard: str) -> str:
    """The name a shard's vectors take in a vector folder: its file name without ``.tar``, prefixed ``panels-``
    for a panel shard (``OUT/panels/shards/...``)."""
    path = PurePosixPath(str(shard).split("?", 1)[0])
    stem = path.name.removesuffix(".tar")
    if path.parent.name == "shards" and path.parent.parent.name == "panels":
        stem = f"panels-{stem}"
    return stem


def vector_stems(shards: Iterable[str]) -> dict[str, str]:
    """shard -> stem for every shard; two shards that would share a stem are an ``InputError``."""
    stems: dict[str, str] = {}
    owners: dict[str, str] = {}
    for shard in shards:
        stem = vector_stem(shard)
        if stem in owners:
            raise InputError(f"shards {owners[stem]} and {shard} would both be written as {stem}: embed them into "
                             "separate vector folders")  # fmt: skip
        owners[stem] = shard
        stems[shard] = stem
    return stems


def open_vector_folder(folder: str | Path, model: str, dim: int) -> Path:
    """Create the vector folder with its ``vectors.json``, or check that the existing one holds ``model``'s vectors.

    Raises:
        RunError: the folder holds vectors of another model or dimension, or a ``vectors.json`` that is not one.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    header = {"format": VECTORS_FORMAT, "model": model, "dim": dim, "dtype": "float16"}
    path = folder / HEADER
    if path.is_file():
        try:
            found = json.loads(path.read_text())
        except ValueError as error:
            raise RunError(f"{path} is not a vector folder header: {error}") from error
        if found != header:
            raise RunError(f"{folder} holds vectors of {found.get('model')!r} ({found.get('dim')}-d), not {model!r} "
                           f"({dim}-d): embed into another folder")  # fmt: skip
        return folder
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(header) + "\n"), tag=f".{os.getpid()}")
    return folder


def source_identity(shard: str, location: str) -> dict[str, Any]:
    """The done marker's ``source``: the shard's name in the vector folder, its size and SHA-256 (null for URLs)."""
    if is_url(shard):
        return {"location": location, "size": None, "sha256": None}
    return {"location": location, "size": os.path.getsize(shard), "sha256": file_sha256(shard)}


def _skip_reason(error: ImageDecodeError) -> str:
    """Why an image did not decode, without the memory addresses PIL puts in some messages (markers are stable)."""
    cause = error.__cause__ or error
    return re.sub(r" at 0x[0-9a-fA-F]+", "", f"undecodable image: {type(cause).__name__}: {cause}")


def prepare_figure(figure: ShardFigure, transform: Callable[[Any], torch.Tensor]) -> torch.Tensor | ImageDecodeError:
    """The model's input tensor of the figure's image, or the error that says why it does not decode."""
    try:
        return transform(open_image(figure.image))
    except ImageDecodeError as error:
        return error


def autocast_for(embedder: Embedder, precision: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on a GPU (as training runs); fp32 elsewhere."""
    if PRECISIONS[precision] is None or embedder.device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=PRECISIONS[precision])


def _batches(figures: Iterator[ShardFigure], size: int) -> Iterator[list[ShardFigure]]:
    batch: list[ShardFigure] = []
    for figure in figures:
        batch.append(figure)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def embed_shard_figures(
    embedder: Embedder,
    shard: str,
    name: str,
    *,
    batch_size: int = 64,
    pool: Executor | None = None,
    precision: str = "fp32",
) -> EmbeddedFigures:
    """Embed every decodable figure of ``shard`` (named ``name`` in the records), ``batch_size`` per forward pass
    (autocast to ``precision`` on a GPU); images are decoded and transformed on ``pool`` when given. Samples without
    an image or with one that does not decode are listed in ``skipped``.

    Raises:
        ShardError: the shard cannot be read.
    """
    skipped: list[dict[str, str]] = []
    figures = iter_shard(shard, on_no_image=lambda key: skipped.append({"key": key, "reason": "no image member"}))
    vectors, records = [], []
    for batch in _batches(figures, batch_size):
        prepare = lambda figure: prepare_figure(figure, embedder.transform)  # noqa: E731
        tensors = []
        for figure, prepared in zip(batch, pool.map(prepare, batch) if pool else map(prepare, batch), strict=True):
            if isinstance(prepared, ImageDecodeError):
                skipped.append({"key": figure.key, "reason": _skip_reason(prepared)})
                continue
            tensors.append(prepared)
            records.append(index_record(figure, name))
        if tensors:
            with autocast_for(embedder, precision):
                vectors.append(embed_images(embedder.model, tensors, lambda t: t, batch_size=len(tensors)))
    stacked = np.concatenate(vectors) if vectors else np.zeros((0, embedder.dim), np.float32)
    return EmbeddedFigures(stacked, records, sorted(skipped, key=lambda item: item["key"]))


def marker_is_valid(folder: Path, stem: str, source: dict[str, Any]) -> dict[str, Any] | None:
    """The done marker of ``stem`` if it exists, its hashes match its files and it was made from ``source``."""
    try:
        done = json.loads((folder / f"{stem}.done.json").read_text())
        if done["source"] != source:
            return None
        for suffix, key in ((".npy", "npy_sha256"), (".parquet", "parquet_sha256")):
            if file_sha256(str(folder / f"{stem}{suffix}")) != done[key]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return done


def embed_shard(
    embedder: Embedder,
    shard: str,
    folder: str | Path,
    stem: str,
    *,
    batch_size: int = 64,
    pool: Executor | None = None,
    precision: str = "fp32",
) -> ShardOutcome:
    """Make ``folder/stem.*`` hold ``shard``'s vectors: keep them if the done marker is valid, else embed the shard.

    Raises:
        ShardError: the shard cannot be read.
        RunError: the stem's marker names another shard (a different corpus in the same folder).
    """
    folder = Path(folder)
    name = shard_name(folder, shard)
    marker = folder / f"{stem}.done.json"
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text())["source"]["location"]
        except (OSError, ValueError, KeyError, TypeError):
            previous = name  # a damaged marker: redone
        if previous != name:
            raise RunError(f"{marker} holds the vectors of {previous}, not of {name}: embed into another folder")
    source = source_identity(shard, name)
    done = marker_is_valid(folder, stem, source)
    if done is not None:
        return ShardOutcome(shard, stem, rows=done["rows"], skipped=len(done["skipped"]))
    marker.unlink(missing_ok=True)
    embedded = embed_shard_figures(embedder, shard, name, batch_size=batch_size, pool=pool, precision=precision)
    table = records_table(embedded.records)
    write_vector_shard(folder, stem, embedded.vectors, table, skipped=embedded.skipped, source=source)
    return ShardOutcome(shard, stem, rows=len(table), skipped=len(embedded.skipped), embedded=True)
