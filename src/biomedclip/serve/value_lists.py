"""Exact filtered search over few vectors: each modest filter value's float16 vectors, stored together.

A filter that lets through 100k of 1M vectors cannot be served well by either other path: the IVF index finds
neighbours only near the query's clusters (a selective filter's best matches may lie anywhere, and 4-bit codes
rank them too coarsely), and a scan of the float16 parts costs as much as an unfiltered brute force, whatever
the filter keeps (faiss tests every id against the bitmap). So every value of a field held by at most
``list_max`` vectors (a journal, a year, a small split) gets an inverted list holding its vectors' float16 copies
and ids, one faiss IVF index per field (``filters/FIELD.lists.faiss`` + ``FIELD.lists.ivfdata``: list number = the
value's code in ``filters.json``, on-disk lists, memory-mapped). A search whose most selective field names only
listed values, at most ``list_max`` vectors in all, scans exactly those lists (faiss ``search_preassigned``),
testing the other fields' conditions on the scanned ids: the float16 scores of the exact path, at a cost
proportional to the listed vectors (about 3 ms for 100k here) instead of to N.

Disk: 1 KB + 8 B per listed 512-d vector and field (at most N per field). Built part by part from the exact
parts (``part_vectors`` vectors' copies in memory at once), then merged into the on-disk lists.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.ondisk import merge_ondisk

from biomedclip.serve.exact_parts import float16_view
from biomedclip.serve.filters import FIELDS, FilterStore, Selection
from biomedclip.serve.index import FigureIndexError

_READ_ROWS = 65_536  # float16 vectors decoded at once while building


def listed_codes(counts: np.ndarray, list_max: int) -> np.ndarray:
    """The codes of a field's values that get a list: held by at least one vector and at most ``list_max``."""
    return np.flatnonzero((counts > 0) & (counts <= list_max))


def _empty_lists(dim: int, nlist: int) -> faiss.IndexIVFScalarQuantizer:
    """An IVF index of ``nlist`` float16 lists that is never asked to assign a vector (its quantizer is a dummy)."""
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(np.zeros((nlist, dim), np.float32))
    index = faiss.IndexIVFScalarQuantizer(
        quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT, False
    )
    index.is_trained = True
    return index


def build_value_lists(
    filters_dir: Path, work: Path, exact_parts: list[Path], dim: int, part_vectors: int, list_max: int,
    say: Callable[[str], None],
) -> list[str]:  # fmt: skip
    """Write the value lists of every field that has a listed value; returns those fields.

    Each part's lists are written to ``work`` first (kept by an interrupted build), then merged.
    """
    store = FilterStore(filters_dir)
    codes = {name: np.load(filters_dir / f"{name}.codes.npy", mmap_mode="r") for name in FIELDS}
    fields = [name for name in FIELDS if len(listed_codes(store.counts[name], list_max))]
    if not fields:
        return []
    for name in fields:
        merged_path = filters_dir / f"{name}.lists.faiss"
        if merged_path.is_file():
            continue
        listed = np.zeros(len(store.counts[name]), bool)
        listed[listed_codes(store.counts[name], list_max)] = True
        say(f"writing the {name} value lists ({int(store.counts[name][listed].sum())} vectors)")
        part_paths = []
        for number, exact_path in enumerate(exact_parts):
            part_path = work / f"lists-{name}-{number:05d}.faiss"
            part_paths.append(part_path)
            if not part_path.is_file():
                _write_part(exact_path, number * part_vectors, codes[name], listed, part_path)
        data = filters_dir / f"{name}.lists.ivfdata"
        data.unlink(missing_ok=True)
        merged = _empty_lists(dim, len(store.counts[name]))
        merge_ondisk(merged, [str(path) for path in part_paths], str(data))
        tmp = merged_path.with_name(merged_path.name + ".tmp")
        faiss.write_index(merged, str(tmp))
        os.replace(tmp, merged_path)
        for path in part_paths:
            path.unlink()
    return fields


def _write_part(exact_path: Path, start: int, codes: np.ndarray, listed: np.ndarray, out: Path) -> None:
    """The lists of one exact part's vectors whose value is listed."""
    exact = faiss.read_index(str(exact_path), faiss.IO_FLAG_MMAP_IFC)
    stored = float16_view(exact)
    part_codes = np.asarray(codes[start : start + exact.ntotal], np.int64)
    rows = np.flatnonzero(listed[part_codes])
    lists = _empty_lists(exact.d, len(listed))
    for first in range(0, len(rows), _READ_ROWS):
        chunk = rows[first : first + _READ_ROWS].astype(np.int64)
        vectors = stored[chunk].astype(np.float32)
        ids = chunk + start
        assign = part_codes[chunk]
        lists.add_core(len(chunk), faiss.swig_ptr(vectors), faiss.swig_ptr(ids), faiss.swig_ptr(assign))
    tmp = out.with_name(out.name + ".tmp")
    faiss.write_index(lists, str(tmp))
    os.replace(tmp, out)


class ValueLists:
    """The value lists of a vector index's fields, opened with their lists memory-mapped."""

    def __init__(self, filters_dir: Path, fields: list[str], list_max: int, store: FilterStore) -> None:
        self.list_max = list_max
        self.store = store
        paths = [filters_dir / f"{name}.{kind}" for name in fields for kind in ("lists.faiss", "lists.ivfdata")]
        if missing := [path.name for path in paths if not path.is_file()]:
            raise FigureIndexError(f"{filters_dir}: value lists missing ({', '.join(missing[:3])}); build it again")
        self.indexes = {
            name: faiss.read_index(str(filters_dir / f"{name}.lists.faiss"), faiss.IO_FLAG_ONDISK_SAME_DIR)
            for name in fields
        }

    def plan(self, conditions: dict[str, list[int]]) -> tuple[str, list[int]] | None:
        """The field whose listed values a search scans (the fewest vectors) and their codes, or None when no
        field's condition names only listed values of at most ``list_max`` vectors in all."""
        options = []
        for name, codes in conditions.items():
            counts = self.store.counts[name][codes] if codes else np.zeros(0, np.int64)
            total = int(counts.sum())
            if name in self.indexes and total <= self.list_max:  # so is each value: each is listed
                options.append((total, name, [c for c, n in zip(codes, counts.tolist(), strict=True) if n]))
        return min(options)[1:] if options else None

    def search(
        self, query: np.ndarray, name: str, codes: list[int], k: int, others: Selection | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best vectors of the lists ``codes`` of field ``name`` (and in ``others``, when given), best first."""
        if not codes:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        selector = None
        if others is not None:
            # the selector and its bitmap must stay referenced while faiss searches (the parameters hold pointers)
            bitmap = others.as_bitmap(self.store.n)
            selector = faiss.IDSelectorBitmap(self.store.n, faiss.swig_ptr(bitmap))
        params = faiss.SearchParametersIVF(nprobe=len(codes), sel=selector)
        query = np.ascontiguousarray(query[None, :], np.float32)
        assign = np.asarray(codes, np.int64)
        centroid_scores = np.zeros(len(codes), np.float32)
        scores, ids = np.empty(k, np.float32), np.empty(k, np.int64)
        # the C++ call: the Python wrapper takes no search parameters (the lists' count and the selector)
        self.indexes[name].search_preassigned_c(
            1, faiss.swig_ptr(query), k, faiss.swig_ptr(assign), faiss.swig_ptr(centroid_scores),
            faiss.swig_ptr(scores), faiss.swig_ptr(ids), False, params,
        )  # fmt: skip
        del selector
        keep = ids >= 0
        scores, ids = scores[keep], ids[keep]
        order = np.lexsort((ids, -scores))
        return scores[order].astype(np.float32), ids[order]
