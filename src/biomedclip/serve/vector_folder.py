"""Read a folder of vector shards (the output of ``biomedclip embed``) without loading it.

A vector folder holds ``vectors.json`` ({"format": "biomedclip-vectors/1", "model", "dim", "dtype": "float16"})
and, per embedded corpus shard NAME, ``NAME.npy`` (float16 rows, L2-normalised), ``NAME.parquet`` (one index
record per row, row i <-> vector i) and ``NAME.done.json`` (written last: rows, skipped images, the SHA-256 of
both files). Only shards with a done marker count; they are read in sorted name order, and a vector's global id
is its running row number over that order. Vectors are memory-mapped, never read whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from biomedclip.durable import fsync_file
from biomedclip.serve.identity import file_sha256

VECTORS_FORMAT = "biomedclip-vectors/1"
HEADER = "vectors.json"
ROW_GROUP_SIZE = 4096  # records are scanned by row group (the index build holds this many records at once)


class VectorFolderError(ValueError):
    """A vector folder that is missing, malformed or does not match its done markers."""


@dataclass(frozen=True)
class VectorShard:
    """One embedded shard: its name, row count and the hashes its done marker recorded."""

    name: str
    rows: int
    npy_sha256: str
    parquet_sha256: str
    skipped: int

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "rows": self.rows, "npy_sha256": self.npy_sha256,
                "parquet_sha256": self.parquet_sha256}  # fmt: skip


class VectorFolder:
    """The done shards of a vector folder, their memory-mapped vectors and their global row numbering."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        header_path = self.path / "vectors.json"
        if not header_path.is_file():
            raise VectorFolderError(f"{self.path} is not a vector folder (no vectors.json)")
        try:
            header = json.loads(header_path.read_text())
        except json.JSONDecodeError as error:
            raise VectorFolderError(f"{header_path} is not JSON: {error}") from error
        if header.get("format") != VECTORS_FORMAT or header.get("dtype") != "float16":
            raise VectorFolderError(f"{header_path}: expected format {VECTORS_FORMAT} with float16 vectors")
        self.dim = int(header["dim"])
        self.model = str(header.get("model", ""))
        self.shards = [self._read_marker(path) for path in sorted(self.path.glob("*.done.json"))]
        self.starts = np.concatenate([[0], np.cumsum([s.rows for s in self.shards], dtype=np.int64)])
        self._mmaps: dict[str, np.ndarray] = {}

    def _read_marker(self, marker: Path) -> VectorShard:
        name = marker.name.removesuffix(".done.json")
        try:
            done = json.loads(marker.read_text())
            shard = VectorShard(name, int(done["rows"]), done["npy_sha256"], done["parquet_sha256"],
                                len(done.get("skipped", [])))  # fmt: skip
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise VectorFolderError(f"{marker}: not a done marker ({error})") from error
        return shard

    def __len__(self) -> int:
        return int(self.starts[-1])

    def npy_path(self, shard: VectorShard) -> Path:
        return self.path / f"{shard.name}.npy"

    def parquet_path(self, shard: VectorShard) -> Path:
        return self.path / f"{shard.name}.parquet"

    def verify(self, shard: VectorShard) -> None:
        """Check a shard's files against its done marker: hashes, shape, dtype and record count.

        Raises:
            VectorFolderError: what does not match.
        """
        files = ((self.npy_path(shard), shard.npy_sha256), (self.parquet_path(shard), shard.parquet_sha256))
        for path, recorded in files:
            if not path.is_file():
                raise VectorFolderError(f"{path} is missing (its done marker lists it)")
            if file_sha256(str(path)) != recorded:
                raise VectorFolderError(f"{path} does not match the SHA-256 its done marker recorded")
        vectors = self.vectors(shard)
        if vectors.dtype != np.float16 or vectors.shape != (shard.rows, self.dim):
            raise VectorFolderError(
                f"{self.npy_path(shard)}: {vectors.dtype} {vectors.shape}, expected float16 ({shard.rows}, {self.dim})"
            )
        records = pq.ParquetFile(self.parquet_path(shard)).metadata.num_rows
        if records != shard.rows:
            raise VectorFolderError(f"{self.parquet_path(shard)}: {records} records for {shard.rows} vectors")

    def vectors(self, shard: VectorShard) -> np.ndarray:
        """The shard's vectors, memory-mapped (float16, shape (rows, dim))."""
        if shard.name not in self._mmaps:
            self._mmaps[shard.name] = np.load(self.npy_path(shard), mmap_mode="r")
        return self._mmaps[shard.name]

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard number, row within the shard) of global ids."""
        shard_numbers = np.searchsorted(self.starts, ids, side="right") - 1
        return shard_numbers, ids - self.starts[shard_numbers]

    def read(self, start: int, stop: int, batch: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first id, float32 vectors) over global rows ``[start, stop)``, at most ``batch`` rows at a time.

        Read with plain file reads, not through the memory map, so a build's resident memory stays one batch.
        """
        position = start
        while position < stop:
            number = int(np.searchsorted(self.starts, position, side="right") - 1)
            shard = self.shards[number]
            local = position - int(self.starts[number])
            count = min(batch, stop - position, shard.rows - local)
            with open(self.npy_path(shard), "rb") as handle:
                handle.seek(self.vectors(shard).offset + local * self.dim * 2)
                rows = np.fromfile(handle, dtype=np.float16, count=count * self.dim)
            if len(rows) != count * self.dim:
                raise VectorFolderError(f"{self.npy_path(shard)} is shorter than its done marker says")
            yield position, rows.reshape(count, self.dim).astype(np.float32)
            position += count


def write_atomic(path: Path, write: Callable[[Path], None], tag: str = "") -> None:
    """Write ``path`` through ``write(tmp)`` beside it, flush it to disk, then move it into place; ``tag`` sets
    writers of one file (torchrun ranks writing ``vectors.json``) apart."""
    tmp = path.with_name(f"{path.name}{tag}.tmp")
    write(tmp)
    fsync_file(tmp)
    os.replace(tmp, path)


def _save_npy(path: Path, vectors: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a file object: np.save would add ".npy" to a name ending in ".tmp"
        np.save(handle, vectors)


def write_vector_shard(
    folder: str | Path,
    name: str,
    vectors: np.ndarray,
    records: pa.Table,
    model: str = "",
    row_group_size: int = ROW_GROUP_SIZE,
    *,
    skipped: Sequence[dict[str, str]] = (),
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one shard of a vector folder: ``vectors.json`` first if absent, ``NAME.npy`` and ``NAME.parquet``,
    then the done marker, each atomically; returns the marker. ``records`` has the index record columns, one row
    per vector; ``skipped`` lists the images left out and ``source`` the embedded shard's identity."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vectors = np.ascontiguousarray(vectors, dtype=np.float16)
    if len(records) != len(vectors):
        raise VectorFolderError(f"{len(vectors)} vectors but {len(records)} records")
    header = folder / HEADER
    if not header.is_file():
        text = json.dumps({"format": VECTORS_FORMAT, "model": model, "dim": vectors.shape[1], "dtype": "float16"})
        write_atomic(header, lambda tmp: tmp.write_text(text + "\n"), tag=f".{os.getpid()}")
    npy, parquet = folder / f"{name}.npy", folder / f"{name}.parquet"
    write_atomic(npy, lambda tmp: _save_npy(tmp, vectors))
    write_atomic(parquet, lambda tmp: pq.write_table(records, tmp, row_group_size=row_group_size))
    done = {
        "rows": len(vectors),
        "skipped": list(skipped),
        "npy_sha256": file_sha256(str(npy)),
        "parquet_sha256": file_sha256(str(parquet)),
        "source": source or {},
    }
    write_atomic(folder / f"{name}.done.json", lambda tmp: tmp.write_text(json.dumps(done) + "\n"))
    return done
