"""Search a vector index: an IVF-PQ index over a vector folder, exact re-ranking, filters and records on disk.

A vector index (built by :func:`biomedclip.serve.vector_build.build_vector_index` from the vector shards of
``biomedclip embed``) is a folder:

- ``meta.json`` (written last): format, count, dimension, model, the vector folder (relative path) and the done
  markers of the shards indexed, and the parameters below;
- ``ivf/merged.faiss`` + ``ivf/lists.ivfdata``: the IVF-PQ index (coarse quantizer, 4-bit PQ codes, ids) with faiss
  on-disk inverted lists, memory-mapped when opened and repacked into the SIMD fast-scan layout in RAM (faiss's
  on-disk lists do not take that layout, which scans 4-bit codes with SIMD): 40 bytes per vector
  (0.4 GB at 10M) held in memory; an index of fewer than ``ivf_min`` vectors has none (every search is exact);
- ``refine/pq.faiss`` + ``refine/part-NNNNN.npy``: an 8-bit product quantiser of residuals from the IVF centroids
  (64 sub-quantisers) and each part's rows (IVF list, code: 66 bytes per vector, read into memory when opened:
  0.66 GB at 10M), to narrow the candidates before exact re-ranking;
- ``exact/part-NNNNN.faiss``: the same parts as float16 flat indexes (faiss ``SQfp16``, 2 bytes per dimension),
  memory-mapped (``IO_FLAG_MMAP_IFC``), for exact search;
- ``filters/`` (:mod:`biomedclip.serve.filters`), ``keys/`` (:mod:`biomedclip.serve.keys`) and ``parents.npy``
  (the id of each panel's parent figure, -1 for none), all memory-mapped.

- ``records/``: the vector folder's records written again by id (:mod:`biomedclip.serve.row_records`), one read
  per hit.

The vector folder's Parquet records and ``.npy`` vectors are read by the build only (the page links its images).

Search: the IVF index proposes ``k * k_factor`` candidates from ``nprobe`` lists; their 8-bit PQ codes (in memory)
keep the best ``k * refine_factor``, which are re-ranked exactly (dot products with their float16 vectors, from
the exact parts: the only reads of the 1 KB vectors, a few per result, so a cold page cache costs little), so the
scores are the true cosine similarities. A
filtered search first turns the filter into the passing ids (:class:`~biomedclip.serve.filters.Selection`). When
one field's condition names only values with value lists (:mod:`biomedclip.serve.value_lists`: values held by
at most ``list_max`` vectors), those lists are scanned, the other fields tested on their ids (exact: recall 1;
the cost follows the listed vectors, not N). Else, when at most ``exact_max`` pass, faiss scans the float16 parts
computing distances only for them (exact; the cost is a bitmap test per vector, about as much as scanning them
all, plus a 512-d product per passing vector); otherwise faiss skips the others while it
scans the IVF lists (an ID-selector bitmap). Its candidates per result are ``k_factor`` times the passing share
(at least ``FILTERED_K_SHARE``): passing neighbours are sparser, so coarse codes rank them as well with fewer.
When the lists hold fewer than ``MIN_PASSING_PER_LIST`` passing vectors each, ``nprobe`` and the candidates grow
by ``sqrt(64 nlist / passing)``, at most ``sqrt(n / passing)`` (``nprobe`` capped at ``nlist``), so that a
selective filter still finds k neighbours in the lists it scans.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from biomedclip.serve.exact_parts import ExactParts, by_part
from biomedclip.serve.filters import FilterStore, Selection
from biomedclip.serve.index import FigureFilter, FigureIndexError, Hit, normalize
from biomedclip.serve.keys import KeyTable
from biomedclip.serve.row_records import RowRecords
from biomedclip.serve.shards import shard_location
from biomedclip.serve.value_lists import ValueLists
from biomedclip.serve.vector_folder import VectorFolder, VectorFolderError

FORMAT_FAMILY = "biomedclip-vector-index/"  # every version's format starts so
INDEX_FORMAT = FORMAT_FAMILY + "2"  # 2: records written again by id (records/)
KIND = "ivf-vectors"
MIN_PASSING_PER_LIST = 64  # a filtered IVF search probes more lists while its lists hold fewer passing vectors
FILTERED_K_SHARE = 0.3  # and re-ranks k_factor * max(passing share, this) candidates per result (times its scale)


def is_vector_index(folder: str | Path) -> bool:
    """Whether ``folder`` holds a vector index (rather than a :class:`~biomedclip.serve.index.FigureIndex`)."""
    meta = Path(folder) / "meta.json"
    try:
        return str(json.loads(meta.read_text()).get("format", "")).startswith(FORMAT_FAMILY)
    except (OSError, json.JSONDecodeError):
        return False


@dataclass(frozen=True)
class SearchSettings:
    """How a vector index searches (stored in ``meta.json``; overridable when loading)."""

    nprobe: int
    k_factor: int
    exact_max: int
    refine_factor: int = 0


class VectorIndex:
    """A built vector index, opened with bounded memory (everything per vector is memory-mapped)."""

    kind = KIND

    def __init__(self, folder: str | Path, **overrides: int) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not is_vector_index(self.folder):
            raise FigureIndexError(f"{self.folder} is not a vector index (no meta.json of format {INDEX_FORMAT})")
        self.meta = json.loads(meta_path.read_text())
        if self.meta["format"] != INDEX_FORMAT:
            raise FigureIndexError(
                f"{self.folder} was built by another version (format {self.meta['format']}, this one reads "
                f"{INDEX_FORMAT}); build it again (biomedclip index build --vectors ...)"
            )
        self.dim, self.count, self.model = int(self.meta["dim"]), int(self.meta["count"]), self.meta["model"]
        vectors_path = Path(os.path.normpath(self.folder / self.meta["vectors"]))
        try:
            self.vectors = VectorFolder(vectors_path)
        except VectorFolderError as error:
            raise FigureIndexError(f"{self.folder}: its vector folder cannot be read: {error}") from error
        indexed = [s["name"] for s in self.meta["shards"]]
        current = {s.name: s.identity() for s in self.vectors.shards}
        changed = [s["name"] for s in self.meta["shards"] if current.get(s["name"]) != s]
        if changed or list(current) != indexed:
            names = ", ".join(changed[:3]) or "shards added or removed"
            raise FigureIndexError(
                f"{self.folder} no longer matches its vector folder {vectors_path} ({names}); build it again"
            )
        settings = {**self.meta["search"], **{k: v for k, v in overrides.items() if v}}
        self.settings = SearchSettings(**settings)
        self.part_vectors = int(self.meta["part_vectors"])
        self.ivf = self._read_ivf() if self.meta["ivf"] else None
        self.exact = ExactParts(self._part_paths("exact", int(self.meta["exact_parts"])), self.part_vectors)
        self.refine = self._read_refine() if self.meta.get("refine") else None
        self.nlist = faiss.extract_index_ivf(self.ivf).nlist if self.ivf is not None else 0
        self.filters = FilterStore(self.folder / "filters")
        lists = self.meta.get("value_lists") or {}
        self.value_lists = (
            ValueLists(self.folder / "filters", lists["fields"], int(lists["list_max"]), self.filters)
            if lists.get("fields")
            else None
        )
        self.keys = KeyTable(self.folder / "keys")
        self.parents = np.load(self.folder / "parents.npy", mmap_mode="r")
        self.records = RowRecords(self.folder / "records", self.count)
        self._facets = self.filters.facets()

    def _part_paths(self, kind: str, parts: int) -> list[Path]:
        paths = [self.folder / kind / f"part-{number:05d}.faiss" for number in range(parts)]
        if missing := [path.name for path in paths if not path.is_file()]:
            raise FigureIndexError(f"{self.folder}: {kind} parts missing ({', '.join(missing[:3])}); build it again")
        return paths

    def _read_ivf(self) -> faiss.Index:
        """The IVF-PQ index: on-disk lists memory-mapped, repacked for fast scan."""
        path = self.folder / "ivf" / "merged.faiss"
        if not path.is_file() or not (self.folder / "ivf" / "lists.ivfdata").is_file():
            raise FigureIndexError(f"{self.folder}: ivf/merged.faiss or ivf/lists.ivfdata is missing; build it again")
        on_disk = faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR)
        index = faiss.IndexIVFPQFastScan(on_disk)
        if index.ntotal != self.count:
            raise FigureIndexError(f"{self.folder}: its IVF index holds {index.ntotal} vectors, meta.json {self.count}")
        return index

    def _read_refine(self) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """The IVF centroids (nlist, d), the refining PQ's centroids (M, 256, d / M) and each part's rows (list,
        code), in memory."""
        path = self.folder / "refine" / "pq.faiss"
        if not path.is_file():
            raise FigureIndexError(f"{self.folder}: refine/pq.faiss is missing; build it again")
        pq = faiss.read_ProductQuantizer(str(path))
        centroids = faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)
        paths = [self.folder / "refine" / f"part-{n:05d}.npy" for n in range(len(self.exact.indexes))]
        if missing := [p.name for p in paths if not p.is_file()]:
            raise FigureIndexError(f"{self.folder}: refine parts missing ({', '.join(missing[:3])}); build it again")
        coarse = faiss.extract_index_ivf(self.ivf).quantizer
        lists = coarse.reconstruct_n(0, coarse.ntotal)
        return lists, centroids, [np.load(p) for p in paths]  # in memory: read at random, a page cache miss each

    @classmethod
    def load(cls, folder: str | Path, **overrides: int) -> VectorIndex:
        """Open the index at ``folder`` (``nprobe=``, ``k_factor=``, ``exact_max=`` override its settings)."""
        return cls(folder, **overrides)

    def __len__(self) -> int:
        return self.count

    # searching --------------------------------------------------------------------------------------------

    def stored_vectors(self, ids: np.ndarray) -> np.ndarray:
        """The float16 vectors of sorted ``ids`` as float32, read from the memory-mapped exact parts."""
        return self.exact.vectors(ids)

    def _narrow(self, query: np.ndarray, ids: np.ndarray, keep: int) -> np.ndarray:
        """The ``keep`` of sorted ``ids`` that score best against ``query`` by their IVF centroid plus their residual's
        8-bit PQ code (sorted again)."""
        lists, centroids, parts = self.refine
        m, _, sub = centroids.shape
        table = np.einsum("mkd,md->mk", centroids, query.reshape(m, sub))
        rows = by_part(ids, parts, self.part_vectors, np.empty(len(ids), parts[0].dtype))
        approximate = lists[rows["list"]] @ query + table[np.arange(m), rows["code"]].sum(axis=1)
        return np.sort(ids[np.argpartition(-approximate, keep - 1)[:keep]])

    def _rerank(self, query: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best of ``ids`` by exact cosine similarity with their stored vectors, best first (narrowed first
        by the refining codes, held in memory, to ``k * refine_factor`` when there are more)."""
        ids = np.unique(ids[ids >= 0])
        if not len(ids):
            return np.empty(0, np.float32), np.empty(0, np.int64)
        keep = k * self.settings.refine_factor
        if self.refine is not None and keep and len(ids) > keep:
            ids = self._narrow(query, ids, keep)
        # einsum, not BLAS: OpenBLAS's threads for a matrix-vector product cost more than they save on a busy CPU
        scores = np.einsum("ij,j->i", self.stored_vectors(ids), query)
        top = np.argpartition(-scores, k - 1)[:k] if len(ids) > k else np.arange(len(ids))
        top = top[np.lexsort((ids[top], -scores[top]))]
        return scores[top].astype(np.float32), ids[top]

    def _exact(self, query: np.ndarray, selection: Selection | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over the passing vectors: faiss scans each memory-mapped float16 part, computing a distance
        only for the ids the selection's bitmap holds."""
        bitmap = selection.as_bitmap(self.count) if selection is not None else None
        all_scores, all_ids = [], []
        for number, part in enumerate(self.exact.indexes):
            start = number * self.part_vectors
            params = selector = None
            if bitmap is not None:
                bits = bitmap[start // 8 : (start + part.ntotal + 7) // 8]
                if not bits.any():
                    continue
                # the selector must stay referenced while faiss searches: the parameters hold a bare pointer
                selector = faiss.IDSelectorBitmap(part.ntotal, faiss.swig_ptr(bits))
                params = faiss.SearchParameters(sel=selector)
            scores, ids = part.search(query[None, :], k, params=params)
            del selector
            keep = ids[0] >= 0
            all_scores.append(scores[0][keep])
            all_ids.append(ids[0][keep] + start)
        if not all_ids:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        scores, ids = np.concatenate(all_scores), np.concatenate(all_ids)
        order = np.lexsort((ids, -scores))[:k]
        return scores[order].astype(np.float32), ids[order]

    def _approximate(self, query: np.ndarray, k: int, selection: Selection | None) -> np.ndarray:
        """Candidate ids from the IVF index (restricted to ``selection`` while scanning)."""
        if selection is None:
            params = faiss.SearchParametersIVF(nprobe=self.settings.nprobe)
            return self.ivf.search(query[None, :], min(k * self.settings.k_factor, self.count), params=params)[1][0]
        bitmap = selection.as_bitmap(self.count)
        share = selection.count / self.count
        # few passing per list: scan more lists and keep more candidates, so that k of them pass
        scale = min(math.sqrt(1 / share), max(1.0, math.sqrt(MIN_PASSING_PER_LIST * self.nlist / selection.count)))
        nprobe = min(self.nlist, math.ceil(self.settings.nprobe * scale))
        # passing neighbours are sparser than all: fewer candidates rank them (down to FILTERED_K_SHARE of k_factor)
        per_result = self.settings.k_factor * max(share, FILTERED_K_SHARE)
        candidates = min(selection.count, math.ceil(k * per_result * scale))
        selector = faiss.IDSelectorBitmap(self.count, faiss.swig_ptr(bitmap))
        params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
        return self.ivf.search(query[None, :], candidates, params=params)[1][0]

    def search_vectors(
        self, queries: np.ndarray, k: int = 10, where: FigureFilter | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` of shape (n, k) (cosine similarity, best first); missing neighbours have id -1."""
        queries = normalize(queries)
        if queries.shape[1] != self.dim:
            raise FigureIndexError(f"queries have dimension {queries.shape[1]}, the index has {self.dim}")
        if k < 1:
            raise FigureIndexError(f"k must be at least 1, got {k}")
        selection = self.filters.select(where) if where else None
        width = min(k, self.count if selection is None else selection.count)
        scores = np.full((len(queries), width), -np.inf, np.float32)
        ids = np.full((len(queries), width), -1, np.int64)
        if not width:
            return scores, ids
        conditions = self.filters.conditions(where) if selection is not None else {}
        listed = self.value_lists.plan(conditions) if self.value_lists is not None and conditions else None
        exact = self.ivf is None or (selection is not None and selection.count <= self.settings.exact_max)
        for row, query in enumerate(queries):
            if listed is not None:
                others = selection if len(conditions) > 1 else None
                found_scores, found = self.value_lists.search(query, *listed, width, others)
            elif exact:
                found_scores, found = self._exact(query, selection, width)
            else:
                found_scores, found = self._rerank(query, self._approximate(query, width, selection), width)
            scores[row, : len(found)], ids[row, : len(found)] = found_scores, found
        return scores, ids

    def search(self, queries: np.ndarray, k: int = 10, where: FigureFilter | None = None) -> list[list[Hit]]:
        """Nearest figures for each query (among those passing ``where``), best first, with their records."""
        scores, ids = self.search_vectors(queries, k, where)
        results = []
        for row_scores, row_ids in zip(scores, ids, strict=True):
            valid = row_ids >= 0
            records = self.records.records(row_ids[valid])
            hits = zip(row_ids[valid].tolist(), row_scores[valid].tolist(), records, strict=True)
            results.append([Hit(id=i, score=s, record=r) for i, s, r in hits])
        return results

    # records ----------------------------------------------------------------------------------------------

    def record(self, row: int) -> dict[str, Any]:
        """The record of one vector; raises ``FigureIndexError`` for an unknown row."""
        if not 0 <= row < self.count:
            raise FigureIndexError(f"no figure {row}: the index holds {self.count}")
        return self.records.record(row)

    def id_of(self, key: str) -> int | None:
        """The id of a corpus key (figure or panel), or None."""
        return self.keys.id_of(key)

    def parent_id(self, row: int, record: dict[str, Any] | None = None) -> int | None:
        """The id of the figure a panel belongs to, or None (a figure, or a panel whose figure is not indexed)."""
        parent = int(self.parents[row]) if 0 <= row < self.count else -1
        return parent if parent >= 0 else None

    def image_location(self, record: dict[str, Any]) -> str:
        """Where the record's image lies: its shard, relative names resolved against the vector folder."""
        return shard_location(self.vectors.path, record["shard"])

    def facets(self, max_values: int = 100) -> dict[str, Any]:
        """The values the filters can take (from ``filters.json``, no record read)."""
        return self.filters.facets(max_values)

    def warm(self) -> None:
        """Nothing to precompute: everything is memory-mapped or read on demand."""
