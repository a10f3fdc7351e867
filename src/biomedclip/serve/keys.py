"""Corpus key -> vector id, on disk: sorted 64-bit key hashes with their ids, memory-mapped.

Built in bounded memory: the hashes (one per vector, in id order) are grouped by their top bits with
:func:`~biomedclip.serve.disk_sort.bucket_sort`, then each run of buckets (at most one chunk) is sorted in memory.
A lookup is a binary search (a few pages touched). Two keys with the same hash (a duplicated key in the vector
folder, or a 64-bit collision: odds about n^2 / 2^65, 2.4e-5 at 30M) are counted at build time and a lookup
returns the first.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from biomedclip.serve.disk_sort import bucket_sort

NO_KEY = np.uint64(0)  # the hash of an empty key (a figure without a parent)


def key_hash(keys: Iterable[str | None]) -> np.ndarray:
    """uint64 hashes of keys (BLAKE2b, 8 bytes); empty or missing keys hash to 0, others never do."""
    out = []
    for key in keys:
        if not key:
            out.append(0)
            continue
        value = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
        out.append(value or 1)
    return np.array(out, dtype=np.uint64)


def write_key_table(hashes: np.ndarray, folder: str | Path, chunk: int) -> int:
    """Write ``keys.hash.npy`` (sorted hashes) and ``keys.id.npy`` (their ids) from per-id ``hashes``.

    Returns:
        How many hashes repeat an earlier one (duplicated keys or collisions).
    """
    folder = Path(folder)
    n = len(hashes)
    bits = max(1, int(np.ceil(np.log2(max(2, 4 * n / max(chunk, 1))))))
    shift = np.uint64(64 - bits)
    buckets_path = folder / "keys.buckets.tmp.npy"
    buckets = np.lib.format.open_memmap(buckets_path, "w+", np.uint32, (n,))
    for start in range(0, n, chunk):
        buckets[start : start + chunk] = np.asarray(hashes[start : start + chunk], np.uint64) >> shift
    buckets.flush()
    offsets = bucket_sort(buckets, 2**bits, folder / "keys.id.npy", chunk)
    del buckets
    buckets_path.unlink()
    ids = np.load(folder / "keys.id.npy", mmap_mode="r+")
    tmp = folder / "keys.hash.npy.tmp"
    sorted_hashes = np.lib.format.open_memmap(tmp, "w+", np.uint64, (n,))
    duplicates, first_bucket = 0, 0
    while first_bucket < 2**bits:  # runs of whole buckets, about one chunk each (equal hashes share a bucket)
        last = int(np.searchsorted(offsets, offsets[first_bucket] + chunk, side="right")) - 1
        last = max(first_bucket + 1, last)
        start, stop = int(offsets[first_bucket]), int(offsets[last])
        run_ids = np.asarray(ids[start:stop], np.int64)
        run_hashes = np.asarray(hashes[run_ids], np.uint64)
        order = np.lexsort((run_ids, run_hashes))
        sorted_hashes[start:stop], ids[start:stop] = run_hashes[order], run_ids[order]
        duplicates += int(np.count_nonzero(run_hashes[order][1:] == run_hashes[order][:-1]))
        first_bucket = last
    sorted_hashes.flush()
    ids.flush()
    del sorted_hashes, ids
    os.replace(tmp, folder / "keys.hash.npy")
    return duplicates


class KeyTable:
    """Memory-mapped key lookups of a vector index."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.hashes = np.load(folder / "keys.hash.npy", mmap_mode="r")
        self.ids = np.load(folder / "keys.id.npy", mmap_mode="r")

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """The id of each hash, -1 where no key has it (or the hash is 0: no key)."""
        hashes = np.asarray(hashes, np.uint64)
        out = np.full(len(hashes), -1, np.int64)
        if not len(self.hashes):
            return out
        where = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        found = (np.asarray(self.hashes[where]) == hashes) & (hashes != NO_KEY)
        out[found] = np.asarray(self.ids[where[found]], np.int64)
        return out

    def id_of(self, key: str) -> int | None:
        """The id of one key, or None."""
        found = int(self.lookup(key_hash([key]))[0])
        return found if found >= 0 else None
