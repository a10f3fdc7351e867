"""The search filters (year, journal, license, split) of a vector index, on disk and memory-mapped.

Built once at index time from the records, so a search never reads a record to filter. Per field:

- ``FIELD.codes.npy``: one uint32 code per vector (its value's number in ``filters.json``);
- ``FIELD.postings.npy`` + ``FIELD.offsets.npy``: the ids of each value, in increasing order (CSR);
- ``FIELD.bitmaps.npy``: for each *dense* value (at least 1/64 of the vectors; so at most 64 per field) a bitmap
  of its ids (bit ``i % 8`` of byte ``i // 8``, faiss ``IDSelectorBitmap``'s layout).

A :class:`~biomedclip.serve.index.FigureFilter` becomes one condition per field (a year range is the union of
its years) and a :class:`Selection`: the passing ids when few (a condition below 1/64 drives, the others are
tested on its ids), else a bitmap (dense values OR-ed within a field, AND-ed across fields). Disk: 4 bytes
(codes) + 4 bytes (postings) per vector and field, plus N/8 bytes per dense value.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from biomedclip.serve.disk_sort import bucket_sort
from biomedclip.serve.index import FigureFilter

FIELDS = ("year", "journal", "license", "split")
DENSE_FRACTION = 64  # a value held by at least n / 64 vectors gets a bitmap
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def set_bits(bitmap: np.ndarray, ids: np.ndarray) -> None:
    """Set the bits of sorted ``ids`` in a packed little-endian bitmap."""
    if not len(ids):
        return
    ids = np.asarray(ids, dtype=np.int64)
    byte = ids >> 3
    first = np.flatnonzero(np.concatenate([[True], byte[1:] != byte[:-1]]))
    bits = np.left_shift(1, ids & 7).astype(np.uint8)
    bitmap[byte[first]] |= np.bitwise_or.reduceat(bits, first)


def bits_set(bitmap: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Whether each id's bit is set."""
    ids = np.asarray(ids, dtype=np.int64)
    return ((bitmap[ids >> 3] >> (ids & 7).astype(np.uint8)) & 1).astype(bool)


@dataclass
class Selection:
    """The vectors a filter lets through: sorted ``ids``, or a packed ``bitmap`` (exactly one is set)."""

    count: int
    ids: np.ndarray | None = None
    bitmap: np.ndarray | None = None

    def as_bitmap(self, n: int) -> np.ndarray:
        if self.bitmap is not None:
            return np.ascontiguousarray(self.bitmap)
        bitmap = np.zeros((n + 7) // 8, np.uint8)
        set_bits(bitmap, self.ids)
        return bitmap

    def contains(self, ids: np.ndarray) -> np.ndarray:
        if self.bitmap is not None:
            return bits_set(self.bitmap, ids)
        where = np.searchsorted(self.ids, ids)
        return self.ids[np.minimum(where, len(self.ids) - 1)] == ids if len(self.ids) else np.zeros(len(ids), bool)


class FilterBuilder:
    """Collects each vector's filter values (in id order) and writes the filter files."""

    def __init__(self, folder: str | Path, n: int, chunk: int) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.n, self.chunk = n, chunk
        self.values: dict[str, dict[Any, int]] = {name: {} for name in FIELDS}
        self.codes = {
            name: np.lib.format.open_memmap(self.folder / f"{name}.codes.npy", "w+", np.uint32, (n,)) for name in FIELDS
        }

    def add(self, start: int, table: pa.Table) -> None:
        """The filter columns of vectors ``start .. start + len(table)``."""
        for name in FIELDS:
            known = self.values[name]
            values = table[name].to_pylist()
            self.codes[name][start : start + len(values)] = [known.setdefault(v, len(known)) for v in values]

    def finish(self) -> None:
        """Write postings, bitmaps and ``filters.json`` (last)."""
        meta: dict[str, Any] = {"count": self.n, "fields": {}}
        for name in FIELDS:
            self.codes[name].flush()
            values = list(self.values[name])
            offsets = bucket_sort(self.codes[name], len(values), self.folder / f"{name}.postings.npy", self.chunk)
            np.save(self.folder / f"{name}.offsets.npy", offsets)
            counts = np.diff(offsets)
            dense = [int(c) for c in np.flatnonzero(counts * DENSE_FRACTION >= max(self.n, 1))]
            postings = np.load(self.folder / f"{name}.postings.npy", mmap_mode="r")
            bitmaps = np.lib.format.open_memmap(
                self.folder / f"{name}.bitmaps.npy", "w+", np.uint8, (len(dense), (self.n + 7) // 8)
            )
            for row, code in enumerate(dense):
                for start in range(int(offsets[code]), int(offsets[code + 1]), self.chunk):
                    set_bits(bitmaps[row], postings[start : min(start + self.chunk, int(offsets[code + 1]))])
            bitmaps.flush()
            meta["fields"][name] = {"values": values, "counts": counts.tolist(), "dense": dense}
        tmp = self.folder / "filters.json.tmp"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self.folder / "filters.json")


class FilterStore:
    """A vector index's filters, memory-mapped: turns a :class:`FigureFilter` into a :class:`Selection`."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        meta = json.loads((folder / "filters.json").read_text())
        self.n = int(meta["count"])
        self.values = {name: meta["fields"][name]["values"] for name in FIELDS}
        self.code_of = {name: {v: c for c, v in enumerate(values)} for name, values in self.values.items()}
        self.counts = {name: np.asarray(meta["fields"][name]["counts"], np.int64) for name in FIELDS}
        self.dense_row = {name: {c: r for r, c in enumerate(meta["fields"][name]["dense"])} for name in FIELDS}
        load = lambda name, part: np.load(folder / f"{name}.{part}.npy", mmap_mode="r")  # noqa: E731
        self.postings = {name: load(name, "postings") for name in FIELDS}
        self.offsets = {name: np.load(folder / f"{name}.offsets.npy") for name in FIELDS}
        self.bitmaps = {name: load(name, "bitmaps") for name in FIELDS}

    def _codes(self, name: str, where: FigureFilter) -> list[int] | None:
        """The codes one field's condition accepts; None when the filter leaves the field free."""
        if name == "year":
            if where.year_min is None and where.year_max is None:
                return None
            low = where.year_min if where.year_min is not None else -(2**31)
            high = where.year_max if where.year_max is not None else 2**31
            return [c for v, c in self.code_of[name].items() if v is not None and low <= v <= high]
        value = getattr(where, name)
        if not value:
            return None
        return [self.code_of[name][value]] if value in self.code_of[name] else []

    def _condition(self, name: str, codes: list[int]) -> Selection:
        count = int(self.counts[name][codes].sum()) if codes else 0
        postings, offsets = self.postings[name], self.offsets[name]
        if count * DENSE_FRACTION < self.n:
            parts = [np.asarray(postings[offsets[c] : offsets[c + 1]]) for c in codes]
            ids = np.sort(np.concatenate(parts)) if len(parts) > 1 else (parts[0] if parts else np.empty(0, np.uint32))
            return Selection(count, ids=ids.astype(np.int64))
        bitmap = np.zeros((self.n + 7) // 8, np.uint8)
        for code in codes:
            if code in self.dense_row[name]:
                bitmap |= self.bitmaps[name][self.dense_row[name][code]]
            else:
                set_bits(bitmap, postings[offsets[code] : offsets[code + 1]])
        return Selection(count, bitmap=bitmap)

    def conditions(self, where: FigureFilter) -> dict[str, list[int]]:
        """The value codes each field's condition accepts, for the fields ``where`` constrains."""
        return {name: codes for name in FIELDS if (codes := self._codes(name, where)) is not None}

    def select(self, where: FigureFilter) -> Selection | None:
        """The vectors passing ``where``; None when it filters nothing."""
        conditions = [self._condition(name, codes) for name, codes in self.conditions(where).items()]
        if not conditions:
            return None
        sparse = [c for c in conditions if c.ids is not None]
        if sparse:
            driver = min(sparse, key=lambda c: c.count)
            ids = driver.ids
            for other in conditions:
                if other is not driver:
                    ids = ids[other.contains(ids)]
            return Selection(len(ids), ids=ids)
        if len(conditions) == 1:
            return conditions[0]
        bitmap = conditions[0].bitmap.copy()
        for other in conditions[1:]:
            bitmap &= other.bitmap
        return Selection(int(_POPCOUNT[bitmap].sum()), bitmap=bitmap)

    def facets(self, max_values: int = 100) -> dict[str, Any]:
        """The year range and the most frequent journals, licenses and splits (as ``FigureIndex.facets``)."""
        years = [v for v, n in zip(self.values["year"], self.counts["year"], strict=True) if v is not None and n]
        facets: dict[str, Any] = {"year_min": min(years, default=None), "year_max": max(years, default=None)}
        for name in ("journal", "license", "split"):
            pairs = sorted((-int(n), v) for v, n in zip(self.values[name], self.counts[name], strict=True) if v and n)
            facets[name] = [v for _, v in pairs[:max_values]]
        return facets
