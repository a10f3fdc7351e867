"""A vector folder's Parquet records in id order, one row group at a time (what the index build reads; the
service reads records by id from the index's own copy, :mod:`biomedclip.serve.row_records`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from biomedclip.serve.vector_folder import VectorFolder


def scan_records(folder: VectorFolder, columns: Sequence[str] | None = None) -> Iterator[tuple[int, pa.Table]]:
    """(first global id, table) over every record of ``folder`` in id order, one row group at a time (all
    columns by default)."""
    for shard, start in zip(folder.shards, folder.starts[:-1].tolist(), strict=True):
        parquet = pq.ParquetFile(folder.parquet_path(shard))
        for group in range(parquet.metadata.num_row_groups):
            table = parquet.read_row_group(group, columns=columns and list(columns))
            yield start, table
            start += table.num_rows
