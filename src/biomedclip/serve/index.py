"""A FAISS index of figure embeddings with the figure records stored beside it.

Vectors are L2-normalised, so squared L2 distance ``d`` and cosine similarity agree (``cos = 1 - d / 2``) and
every index kind ranks the same way. The kind is chosen from the collection size unless given:

- ``flat``: exact search, for up to ``IndexConfig.exact_max`` vectors (the default up to 200k).
- ``ivfpq``: an inverted file over 4-bit product-quantised codes scanned with SIMD ("fast scan"), re-ranked
  with 8-bit scalar-quantised vectors (faiss ``IVF{nlist},PQ{m}x4fs,Refine(SQ8)``): about 550 bytes per 512-d
  figure, sub-millisecond search at a million figures, and cheap to train (16 centroids per sub-quantiser).
- ``hnsw``: a graph index over the full vectors (faster to query, slower to build, 4x the memory).

On disk an index is a folder: ``index.faiss``, ``meta.json`` (dimension, kind, settings, indexed shards with
the size, modification time and SHA-256 each had when it was indexed, see :mod:`biomedclip.serve.identity`) and
``records/part-NNNNN.parquet`` (one row per vector, in vector order: caption, pmcid, fig_id, license, shard,
offset, size, the image's SHA-256, ...). ``add`` appends vectors and records; an ``auto`` index that outgrows
``exact_max`` is rebuilt as ``ivfpq`` from its own vectors.

A search can be restricted to the figures whose records pass a :class:`FigureFilter` (year range, journal,
license, split): faiss skips the other ids while it searches (an ID selector), so a filtered search returns the k
best matching figures, not a filtered subset of the k best overall. With ``flat`` this is exact; with ``ivfpq``
and ``hnsw`` a very selective filter may return fewer than k figures (only the probed lists / visited graph
nodes are searched).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from biomedclip.serve.shards import shard_location
from biomedclip.shards import INDEX_FIELDS, arrow_schema

KINDS = ("auto", "flat", "ivfpq", "hnsw")
# Columns every record row has (missing strings become empty strings, missing numbers null), in this order.
RECORD_COLUMNS: dict[str, pa.DataType] = {f.name: f.type for f in arrow_schema(INDEX_FIELDS)}


class FigureIndexError(ValueError):
    """An index that cannot be built, read or searched as asked (bad shapes, unknown kind, missing files)."""


@dataclass
class IndexConfig:
    """How the FAISS index is built and searched; the defaults reach recall@10 >= 0.95 at 1M 512-d vectors."""

    kind: str = "auto"
    exact_max: int = 200_000
    nlist: int = 0  # IVF lists; 0 = about sqrt(n), a power of two
    pq_m: int = 64  # PQ sub-quantisers (4 bits each); lowered to a divisor of the dimension
    refine: str = "SQ8"  # re-ranking storage for ivfpq ("" = none, "Flat" = exact vectors)
    nprobe: int = 256
    k_factor: int = 64  # ivfpq re-ranks k * k_factor candidates
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    train_max: int = 65_536  # vectors sampled to train IVF-PQ
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise FigureIndexError(f"unknown index kind {self.kind!r}; choose one of {', '.join(KINDS)}")


@dataclass(frozen=True)
class FigureFilter:
    """Which figures a search may return: a year range (inclusive) and exact journal, license and split values.

    Empty fields do not filter. A figure without a year never passes a year bound.
    """

    year_min: int | None = None
    year_max: int | None = None
    journal: str = ""
    license: str = ""
    split: str = ""

    def __bool__(self) -> bool:
        return any(value not in (None, "") for value in asdict(self).values())

    def mask(self, records: pa.Table) -> np.ndarray:
        """One boolean per record row: whether the figure passes."""
        keep = pa.array(np.ones(records.num_rows, dtype=bool))
        if self.year_min is not None:
            keep = pc.and_(keep, pc.fill_null(pc.greater_equal(records["year"], self.year_min), False))
        if self.year_max is not None:
            keep = pc.and_(keep, pc.fill_null(pc.less_equal(records["year"], self.year_max), False))
        for name in ("journal", "license", "split"):
            if value := getattr(self, name):
                keep = pc.and_(keep, pc.equal(records[name], value))
        return keep.to_numpy(zero_copy_only=False)


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Return float32, C-contiguous, unit-length rows (zero rows stay zero)."""
    array = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if array.ndim != 2:
        raise FigureIndexError(f"expected a 2-d array of vectors, got shape {array.shape}")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.ascontiguousarray(array / np.maximum(norms, 1e-12))


def _pq_m(dim: int, wanted: int) -> int:
    return max(m for m in range(1, min(wanted, dim) + 1) if dim % m == 0)


def _nlist(n: int, wanted: int) -> int:
    if wanted:
        return max(1, min(wanted, n // 39))
    return max(1, min(2 ** round(math.log2(max(math.sqrt(n), 1))), n // 39))


def records_table(records: Sequence[dict[str, Any]]) -> pa.Table:
    """The index records as a table with the columns of :data:`RECORD_COLUMNS` (missing values filled, types cast)."""
    columns: dict[str, list[Any]] = {name: [] for name in RECORD_COLUMNS}
    for record in records:
        for name, dtype in RECORD_COLUMNS.items():
            value = record.get(name)
            if pa.types.is_integer(dtype):
                try:
                    value = int(value) if value not in (None, "") else None
                except (TypeError, ValueError):
                    value = None
            elif pa.types.is_list(dtype):  # a panel's box
                try:
                    value = [int(v) for v in value] if value else None
                except (TypeError, ValueError):
                    value = None
            else:
                value = "" if value is None else str(value)
            columns[name].append(value)
    return pa.table({name: pa.array(values, type=RECORD_COLUMNS[name]) for name, values in columns.items()})


@dataclass
class Hit:
    """One search result: the vector's row id, its cosine similarity to the query and its figure record."""

    id: int
    score: float
    record: dict[str, Any] = field(default_factory=dict)


class FigureIndex:
    """Figure embeddings in a FAISS index, with one record per vector."""

    def __init__(self, dim: int, config: IndexConfig | None = None) -> None:
        if dim <= 0:
            raise FigureIndexError(f"dimension must be positive, got {dim}")
        self.dim = dim
        self.config = config or IndexConfig()
        self.kind = "flat" if self.config.kind in ("auto", "flat") else self.config.kind
        self.faiss_index: faiss.Index | None = faiss.IndexFlatL2(dim) if self.kind == "flat" else None
        self.shards: list[str] = []  # relative to ``folder`` (see serve.shards.shard_name)
        self.identities: dict[str, dict[str, Any]] = {}  # shard name -> bytes, mtime_ns, sha256 when indexed
        self.folder: Path | None = None  # where the index was saved or loaded from
        self.model: str = ""
        self._parts: list[pa.Table] = []
        self._saved_parts = 0
        self._records: pa.Table | None = None
        self._parents: dict[str, int] | None = None

    def __len__(self) -> int:
        return 0 if self.faiss_index is None else int(self.faiss_index.ntotal)

    # building ---------------------------------------------------------------------------------------------

    def _build_approximate(self, vectors: np.ndarray) -> faiss.Index:
        n = len(vectors)
        cfg = self.config
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, cfg.hnsw_m)
            index.hnsw.efConstruction = cfg.ef_construction
        else:
            if n < 256:
                raise FigureIndexError(f"an ivfpq index needs at least 256 vectors to train, got {n}; use kind 'flat'")
            nlist = _nlist(n, cfg.nlist)
            spec = f"IVF{nlist},PQ{_pq_m(self.dim, cfg.pq_m)}x4fs" + (f",Refine({cfg.refine})" if cfg.refine else "")
            index = faiss.index_factory(self.dim, spec, faiss.METRIC_L2)
            rng = np.random.default_rng(cfg.seed)
            sample = vectors if n <= cfg.train_max else vectors[np.sort(rng.choice(n, cfg.train_max, replace=False))]
            index.train(sample)
        self._set_search_parameters(index)
        return index

    def _set_search_parameters(self, index: faiss.Index) -> None:
        if self.kind == "ivfpq":
            faiss.extract_index_ivf(index).nprobe = self.config.nprobe
            if isinstance(index, faiss.IndexRefine):
                index.k_factor = self.config.k_factor
        elif self.kind == "hnsw":
            faiss.downcast_index(index).hnsw.efSearch = self.config.ef_search

    def add(self, vectors: np.ndarray, records: Sequence[dict[str, Any]] | None = None) -> None:
        """Append vectors (normalised here) and their records; row ``len(self) + i`` is ``records[i]``."""
        vectors = normalize(vectors)
        if vectors.shape[1] != self.dim:
            raise FigureIndexError(f"vectors have dimension {vectors.shape[1]}, the index has {self.dim}")
        records = list(records) if records is not None else [{} for _ in range(len(vectors))]
        if len(records) != len(vectors):
            raise FigureIndexError(f"{len(vectors)} vectors but {len(records)} records")
        if not len(vectors):
            return
        total = len(self) + len(vectors)
        if self.faiss_index is None:
            self.faiss_index = self._build_approximate(vectors)
        elif self.config.kind == "auto" and self.kind == "flat" and total > self.config.exact_max:
            if len(self):
                vectors = np.concatenate([self.faiss_index.reconstruct_n(0, len(self)), vectors])
            self.kind = "ivfpq"
            self.faiss_index = self._build_approximate(vectors)
        self.faiss_index.add(vectors)
        self._parts.append(records_table(records))
        self._records = self._parents = None

    # querying ---------------------------------------------------------------------------------------------

    @property
    def records(self) -> pa.Table:
        """All records, one row per vector, in vector order."""
        if self._records is None:
            self._records = (
                pa.concat_tables(self._parts) if self._parts else records_table([]).slice(0, 0)
            ).combine_chunks()
        return self._records

    def parent_rows(self) -> dict[str, int]:
        """The row of each indexed figure that an indexed panel names as its ``parent`` (an index of figure and
        panel shards); {} for figures alone, or an index made before panels."""
        if self._parents is None:
            records = self.records
            self._parents = {}
            if "parent" in records.column_names:
                parents = pc.unique(records["parent"])
                parents = parents.filter(pc.invert(pc.equal(parents, "")))
                mask = pc.fill_null(pc.is_in(records["key"], parents), False).to_numpy(zero_copy_only=False)
                rows = np.flatnonzero(mask).tolist()
                keys = records["key"].take(pa.array(rows, pa.int64())).to_pylist()
                self._parents = dict(zip(keys, rows, strict=True))
        return self._parents

    def parent_id(self, row: int, record: dict[str, Any]) -> int | None:
        """The row of the figure the panel ``record`` belongs to, or None (a figure, or its figure not indexed)."""
        return self.parent_rows().get(record.get("parent") or "")

    def image_location(self, record: dict[str, Any]) -> str:
        """Where the record's image lies: its shard (named relative to the index folder)."""
        return shard_location(self.folder, record["shard"])

    def warm(self) -> None:
        """Work done once before serving: the panel -> parent rows."""
        self.parent_rows()

    def record(self, row: int) -> dict[str, Any]:
        """The record of one vector; raises ``FigureIndexError`` for an unknown row."""
        if not 0 <= row < len(self):
            raise FigureIndexError(f"no figure {row}: the index holds {len(self)}")
        return self.records.slice(row, 1).to_pylist()[0]

    def facets(self, max_values: int = 100) -> dict[str, Any]:
        """What the records hold, for filter menus: the year range and the most frequent journals, licenses and
        splits (at most ``max_values`` each, most frequent first)."""
        table = self.records
        years = pc.min_max(table["year"]).as_py() if table.num_rows else {"min": None, "max": None}
        facets: dict[str, Any] = {"year_min": years["min"], "year_max": years["max"]}
        for name in ("journal", "license", "split"):
            counts = pc.value_counts(table[name]).to_pylist() if table.num_rows else []
            counts = sorted((c for c in counts if c["values"]), key=lambda c: (-c["counts"], c["values"]))
            facets[name] = [c["values"] for c in counts[:max_values]]
        return facets

    def _search_parameters(self, allowed: np.ndarray) -> tuple[faiss.SearchParameters, np.ndarray]:
        """faiss search parameters that skip the ids not ``allowed`` (and the bitmap they point into)."""
        bits = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")
        selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=self.config.ef_search), bits
        if self.kind == "ivfpq":
            ivf = faiss.SearchParametersIVF(sel=selector, nprobe=self.config.nprobe)
            if isinstance(self.faiss_index, faiss.IndexRefine):
                return faiss.IndexRefineSearchParameters(k_factor=self.config.k_factor, base_index_params=ivf), bits
            return ivf, bits
        return faiss.SearchParameters(sel=selector), bits

    def search_vectors(
        self, queries: np.ndarray, k: int = 10, where: FigureFilter | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw search: ``(scores, ids)`` arrays of shape (n, k); missing neighbours have id -1.

        ``where`` restricts the search to the figures whose records pass it.
        """
        queries = normalize(queries)
        if queries.shape[1] != self.dim:
            raise FigureIndexError(f"queries have dimension {queries.shape[1]}, the index has {self.dim}")
        if k < 1:
            raise FigureIndexError(f"k must be at least 1, got {k}")
        if not len(self):
            return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
        if where:
            allowed = where.mask(self.records)
            if not allowed.any():
                return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
            params, _bits = self._search_parameters(allowed)  # _bits must outlive the search
            distances, ids = self.faiss_index.search(queries, min(k, int(allowed.sum())), params=params)
        else:
            distances, ids = self.faiss_index.search(queries, min(k, len(self)))
        return (1.0 - distances / 2.0).astype(np.float32), ids

    def search(self, queries: np.ndarray, k: int = 10, where: FigureFilter | None = None) -> list[list[Hit]]:
        """Nearest figures for each query vector (among those passing ``where``), best first, with their records."""
        scores, ids = self.search_vectors(queries, k, where)
        table = self.records
        results = []
        for row_scores, row_ids in zip(scores, ids, strict=True):
            valid = [(int(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True) if i >= 0]
            rows = table.take(pa.array([i for i, _ in valid], type=pa.int64())).to_pylist() if valid else []
            results.append([Hit(id=i, score=s, record=r) for (i, s), r in zip(valid, rows, strict=True)])
        return results

    # persistence ------------------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Write the index folder; records already on disk are kept and only new parts are written."""
        folder = self.folder = Path(folder)
        (folder / "records").mkdir(parents=True, exist_ok=True)
        existing = sorted((folder / "records").glob("part-*.parquet"))
        if len(existing) != self._saved_parts:  # another folder, or a stale one: write every part afresh
            for path in existing:
                path.unlink()
            self._saved_parts = 0
        for number in range(self._saved_parts, len(self._parts)):
            _atomic(
                folder / "records" / f"part-{number:05d}.parquet", lambda p, t=self._parts[number]: pq.write_table(t, p)
            )
        self._saved_parts = len(self._parts)
        if self.faiss_index is not None:
            _atomic(folder / "index.faiss", lambda p: faiss.write_index(self.faiss_index, str(p)))
        meta = {
            "dim": self.dim,
            "kind": self.kind,
            "count": len(self),
            "model": self.model,
            "shards": self.shards,
            "shard_identities": self.identities,
            "parts": len(self._parts),
            "config": asdict(self.config),
        }
        _atomic(folder / "meta.json", lambda p: p.write_text(json.dumps(meta, indent=2)))
        return folder

    @classmethod
    def load(cls, folder: str | Path, **search_overrides: int) -> FigureIndex:
        """Read an index folder written by :meth:`save`; ``nprobe=...`` etc. override the search settings."""
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise FigureIndexError(f"{folder} is not a biomedclip index (no meta.json)")
        meta = json.loads(meta_path.read_text())
        config = IndexConfig(**{**meta["config"], **search_overrides})
        index = cls(meta["dim"], config)
        index.kind = meta["kind"]
        index.model = meta.get("model", "")
        index.folder = folder
        index.shards = list(meta.get("shards", []))
        index.identities = dict(meta.get("shard_identities", {}))
        faiss_path = folder / "index.faiss"
        index.faiss_index = faiss.read_index(str(faiss_path)) if faiss_path.is_file() else None
        if index.faiss_index is not None:
            index._set_search_parameters(index.faiss_index)
        parts = [folder / "records" / f"part-{n:05d}.parquet" for n in range(meta["parts"])]
        index._parts = [pq.read_table(path) for path in parts]
        index._saved_parts = len(parts)
        if sum(part.num_rows for part in index._parts) != len(index):
            raise FigureIndexError(f"{folder}: {len(index)} vectors but a different number of records")
        return index


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
