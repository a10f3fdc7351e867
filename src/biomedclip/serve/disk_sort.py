"""Group row numbers by a small integer code on disk, holding at most one chunk of rows in memory.

A counting sort: one pass counts each code, a second scatters the rows of each chunk to their places in a
memory-mapped output. The result lists, for each code in increasing order, its rows in increasing order (CSR
"postings"); ``offsets[c]:offsets[c + 1]`` are the rows of code ``c``. Used for the filter postings and for the
key table, so that an index build needs memory set by its chunk size, not by the number of vectors.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MAX_ROWS = 2**32 - 1  # postings are stored as uint32


def bucket_sort(codes: np.ndarray, buckets: int, out: str | Path, chunk: int) -> np.ndarray:
    """Write the rows of ``codes`` (one code in ``[0, buckets)`` per row) grouped by code to ``out`` (.npy).

    Args:
        codes: one code per row, e.g. a memory-mapped array; read ``chunk`` rows at a time.
        buckets: number of codes.
        out: the postings file (uint32 rows), written under a temporary name and renamed when complete.
        chunk: rows held in memory at once.

    Returns:
        ``offsets`` (int64, ``buckets + 1``).
    """
    n = len(codes)
    if n > MAX_ROWS:
        raise ValueError(f"{n} rows: at most {MAX_ROWS} fit uint32 postings")
    counts = np.zeros(buckets, np.int64)
    for start in range(0, n, chunk):
        counts += np.bincount(np.asarray(codes[start : start + chunk], dtype=np.int64), minlength=buckets)
    if len(counts) > buckets:
        raise ValueError(f"codes reach {len(counts) - 1}, beyond {buckets} buckets")
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint32, shape=(n,))
    cursor = offsets[:-1].copy()
    for start in range(0, n, chunk):
        chunk_codes = np.asarray(codes[start : start + chunk], dtype=np.int64)
        order = np.argsort(chunk_codes, kind="stable")
        ordered = chunk_codes[order]
        chunk_counts = np.bincount(ordered, minlength=buckets)
        first = np.cumsum(chunk_counts) - chunk_counts
        rows[cursor[ordered] + np.arange(len(ordered)) - first[ordered]] = order + start
        cursor += chunk_counts
    rows.flush()
    del rows
    os.replace(tmp, out)
    return offsets
