"""Figure records read on demand from a vector folder's Parquet files, one row group at a time.

A record is found by its global id (see :mod:`biomedclip.serve.vector_folder`): the shard and row it falls in,
then the Parquet row group that holds the row. Only that row group is read, and only the columns asked for, so a
hit costs one small read however large the corpus is. Open files (their footers) are kept in a small LRU cache;
reads hold a lock (the service searches from several threads, and an open Parquet reader is not shared safely).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from biomedclip.serve.vector_folder import VectorFolder, VectorShard


class RecordStore:
    """Records of a vector folder by global id, read from Parquet row groups when asked."""

    def __init__(self, folder: VectorFolder, open_files: int = 256) -> None:
        self.folder = folder
        self.open_files = open_files
        self._files: OrderedDict[str, tuple[pq.ParquetFile, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def _file(self, shard: VectorShard) -> tuple[pq.ParquetFile, np.ndarray]:
        """The shard's open Parquet file and the first row of each of its row groups."""
        if shard.name in self._files:
            self._files.move_to_end(shard.name)
            return self._files[shard.name]
        parquet = pq.ParquetFile(self.folder.parquet_path(shard))
        sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.metadata.num_row_groups)]
        entry = (parquet, np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]))
        self._files[shard.name] = entry
        if len(self._files) > self.open_files:
            self._files.popitem(last=False)
        return entry

    def records(self, ids: Sequence[int], columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The records of global ids, in the order given (each row group read once)."""
        with self._lock:
            return self._records(np.asarray(ids, dtype=np.int64), columns)

    def _records(self, ids: np.ndarray, columns: Sequence[str] | None) -> list[dict[str, Any]]:
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self.folder)):
            raise IndexError(f"record ids must be in [0, {len(self.folder)})")
        shard_numbers, rows = self.folder.locate(ids)
        out: list[dict[str, Any]] = [{} for _ in ids]
        groups: dict[tuple[int, int], list[int]] = {}
        starts_by_shard: dict[int, np.ndarray] = {}
        for position, (number, row) in enumerate(zip(shard_numbers.tolist(), rows.tolist(), strict=True)):
            if number not in starts_by_shard:
                starts_by_shard[number] = self._file(self.folder.shards[number])[1]
            group = int(np.searchsorted(starts_by_shard[number], row, side="right") - 1)
            groups.setdefault((number, group), []).append(position)
        for (number, group), positions in groups.items():
            parquet, starts = self._file(self.folder.shards[number])
            table = parquet.read_row_group(group, columns=list(columns) if columns else None)
            local = pa.array([int(rows[p]) - int(starts[group]) for p in positions], pa.int64())
            for position, record in zip(positions, table.take(local).to_pylist(), strict=True):
                out[position] = record
        return out

    def record(self, row: int) -> dict[str, Any]:
        """One record by global id."""
        return self.records([row])[0]

    def scan(self, columns: Sequence[str] | None = None) -> Iterator[tuple[int, pa.Table]]:
        """(first global id, table) over every record in id order, one row group at a time (all columns by
        default)."""
        for shard, start in zip(self.folder.shards, self.folder.starts[:-1].tolist(), strict=True):
            parquet, starts = self._file(shard)
            for group in range(parquet.metadata.num_row_groups):
                yield start + int(starts[group]), parquet.read_row_group(group, columns=columns and list(columns))
