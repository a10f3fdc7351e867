"""Records by id in one read each: a vector folder's records written again row by row, for the search service.

Parquet gives a record only with its row group (4096 rows decode in about 1 ms here; even 256-row groups cost
0.3 ms, every column being decoded per call), so the ten hits of a search cost ten row-group reads, more than
the search itself. The index build therefore writes each record once more as one JSON object (UTF-8) in
``records/rows.bin``, with ``records/offsets.npy`` (int64, N + 1, memory-mapped) saying where each starts: a hit
is one ``pread`` of its own bytes, and the pages of all hits of a search are requested together first (as the
float16 vectors are, :mod:`biomedclip.serve.exact_parts`). Disk: the records' JSON size + 8 bytes per record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from biomedclip.serve.exact_parts import request_pages
from biomedclip.serve.index import FigureIndexError
from biomedclip.serve.records import scan_records
from biomedclip.serve.vector_folder import VectorFolder

ROWS, OFFSETS = "rows.bin", "offsets.npy"


def write_row_records(folder: VectorFolder, out: Path) -> None:
    """Write every record of ``folder`` in id order into ``out`` (under temporary names, renamed when complete)."""
    out.mkdir(parents=True, exist_ok=True)
    rows_tmp, offsets_tmp = out / (ROWS + ".tmp"), out / ("tmp-" + OFFSETS)
    offsets = np.lib.format.open_memmap(offsets_tmp, "w+", np.int64, (len(folder) + 1,))
    offsets[0] = position = 0
    with rows_tmp.open("wb") as rows:
        for start, table in scan_records(folder):
            encoded = [json.dumps(record, ensure_ascii=False).encode() for record in table.to_pylist()]
            rows.write(b"".join(encoded))
            ends = position + np.cumsum([len(row) for row in encoded], dtype=np.int64)
            offsets[start + 1 : start + 1 + len(encoded)] = ends
            position = int(ends[-1]) if len(ends) else position
    offsets.flush()
    del offsets
    os.replace(rows_tmp, out / ROWS)
    os.replace(offsets_tmp, out / OFFSETS)


class RowRecords:
    """The records written by :func:`write_row_records`, read by id (safe from several threads)."""

    def __init__(self, folder: Path, count: int) -> None:
        paths = folder / ROWS, folder / OFFSETS
        if missing := [path.name for path in paths if not path.is_file()]:
            raise FigureIndexError(f"{folder}: {', '.join(missing)} missing; build it again")
        self.offsets = np.load(paths[1], mmap_mode="r")
        descriptor = os.open(paths[0], os.O_RDONLY)
        if len(self.offsets) != count + 1 or int(self.offsets[-1]) != os.fstat(descriptor).st_size:
            os.close(descriptor)
            raise FigureIndexError(f"{folder}: its records do not match the index ({count} expected); build it again")
        self._file = descriptor

    def __del__(self) -> None:
        if hasattr(self, "_file"):
            os.close(self._file)

    def records(self, ids: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        """The records of ids in ``[0, N)``, in the order given."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self.offsets) - 1):
            raise IndexError(f"record ids must be in [0, {len(self.offsets) - 1})")
        starts, ends = self.offsets[ids].tolist(), self.offsets[ids + 1].tolist()
        request_pages(self._file, starts, ends)
        return [json.loads(os.pread(self._file, end - start, start)) for start, end in zip(starts, ends, strict=True)]

    def record(self, row: int) -> dict[str, Any]:
        """One record by id."""
        return self.records([row])[0]
