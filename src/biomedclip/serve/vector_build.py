"""Build a vector index from a vector folder, streaming: memory set by a setting, not by the number of vectors.

    build_vector_index("vectors/", "index/")            # biomedclip index build --vectors vectors/ -o index/

Steps (each resumable; progress lives in ``OUT/build/`` until ``meta.json`` is written last):

1. verify every done shard against its marker (hashes, shapes, record count);
2. train the coarse quantizer and the PQ codebooks on a uniform sample of at most ``memory_vectors`` vectors
   (picked in one pass over the shards);
3. add the vectors in parts of ``part_vectors`` ids, read ``memory_vectors`` at a time from the shards; each part
   is written as ``ivf/part-NNNNN.faiss`` (IVF-PQ) and ``exact/part-NNNNN.faiss`` (float16 flat); a part already
   written is kept on resume; then the IVF parts are merged into faiss on-disk inverted lists
   (``ivf/merged.faiss`` + ``ivf/lists.ivfdata``, reading the parts memory-mapped);
4. read the records' key, parent and filter columns one Parquet row group at a time into memory-mapped arrays,
   then write the filters, the key table and the panel -> parent ids (counting sorts on disk, chunk-bounded);
5. write the records again row by row (``records/``: :mod:`biomedclip.serve.row_records`), so that the service
   reads a hit's record in one read.

Parameters from N (the number of vectors; each can be set instead):

- ``nlist`` (IVF lists) = the largest power of two <= N / 32 (32 training vectors per list; the training sample
  is at most ``memory_vectors``), at most ``max_nlist`` = 4096: 4096 from 131k vectors on.
  Capping it keeps the cost of adding a vector (its coarse assignment, 4096 x 512 multiply-adds) flat as N
  grows; the lists grow instead, and their scan is SIMD fast-scan over 4-bit codes (the server repacks them).
  On the clustered synthetic vectors of ``benchmarks/index_scale.py`` (10k clusters) 4096 lists reached
  recall@10 0.99 at 1M scanning 64 of them; 1024 lists needed 256 for 0.955.
- ``pq_m`` = 64 sub-quantisers of 4 bits (32 bytes per vector; a divisor of the dimension);
- ``nprobe`` = nlist / 64, at least 16 (at most nlist): 64 from 131k vectors on;
- ``k_factor`` = 100: ``100 k`` candidates re-ranked exactly from the float16 vectors. The 4-bit codes rank a
  dense neighbourhood coarsely, more so as N grows: at 3M synthetic vectors (300 per cluster) 10 candidates per
  neighbour reached recall@10 0.77, 30 reached 0.994 (100: 0.995); at 10M (1000 per cluster) 30 reached 0.822
  and 100 (with 128 lists probed) 1.000;
- ``refine_m`` = 64 sub-quantisers of 8 bits coding each vector's residual from its IVF centroid (64 bytes + its
  2-byte list number per vector, held in memory by the server) and
  ``refine_factor`` = 30: the 8-bit codes narrow the ``k_factor k`` candidates to ``30 k`` before the float16
  vectors are read (at random, from disk when the page cache is cold). At 3M, 10 per result cost recall 0.997 ->
  0.923 (dense neighbourhoods again), 30 kept 0.997;
- ``list_max`` = 262144: values of a filter field held by at most this many vectors get value lists
  (:mod:`biomedclip.serve.value_lists`), so that filtering by them is exact and costs what they hold;
- ``exact_max`` = 131072: a filtered search over at most this many passing vectors that value lists do not serve
  is exact (faiss scans the memory-mapped float16 parts, about as costly as scanning them all: 22 ms at 1M
  here); an index of fewer than ``ivf_min`` = 16384 vectors has no IVF index (and no value lists).

Build memory: the training sample (``memory_vectors`` float32 vectors, default 131072: 256 MB at 512-d) and
then one batch of as many, plus one part's float16 copy and PQ codes (1 KB + 40 B per 512-d vector: 270 MB for
``part_vectors`` = 262144), plus ``chunk`` records' filter values; vectors are read with file reads, not
memory-mapped. The memory-mapped outputs (filter codes, postings, key table) are written through the page cache.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.ondisk import merge_ondisk

from biomedclip.serve.filters import FilterBuilder
from biomedclip.serve.index import FigureIndexError
from biomedclip.serve.keys import KeyTable, key_hash, write_key_table
from biomedclip.serve.records import scan_records
from biomedclip.serve.row_records import write_row_records
from biomedclip.serve.value_lists import build_value_lists
from biomedclip.serve.vector_folder import VectorFolder, VectorFolderError
from biomedclip.serve.vector_index import INDEX_FORMAT, KIND

CATALOG_COLUMNS = ("key", "parent", "year", "journal", "license", "split")


@dataclass
class VectorBuildConfig:
    """Settings of a streaming build; zeros are chosen from N (see the module docstring)."""

    nlist: int = 0
    max_nlist: int = 4096
    pq_m: int = 64
    nprobe: int = 0
    k_factor: int = 100
    refine_m: int = 64  # 8-bit PQ sub-quantisers of the in-memory codes that narrow the candidates (0: none)
    refine_factor: int = 30  # candidates per result read from the float16 vectors after that narrowing
    exact_max: int = 131_072  # filtered searches over at most this many passing vectors are exact
    list_max: int = 262_144  # filter values held by at most this many vectors get value lists (0: none)
    ivf_min: int = 16_384  # smaller indexes have no IVF index: every search is exact
    memory_vectors: int = 131_072  # float32 vectors held at once (training sample included)
    part_vectors: int = 262_144  # vectors per part (a multiple of 8; its float16 copy is held while it is built)
    chunk: int = 1_048_576  # records' filter values / postings held at once
    verify: bool = True  # check each shard's hashes against its done marker
    seed: int = 0


@dataclass
class VectorBuildReport:
    """What a build did."""

    count: int = 0
    shards: int = 0
    skipped_images: int = 0  # listed in the done markers
    parts_built: int = 0
    parts_kept: int = 0  # already built by an interrupted run
    duplicate_keys: int = 0
    up_to_date: bool = False
    parameters: dict[str, int] = field(default_factory=dict)


def choose_parameters(n: int, dim: int, config: VectorBuildConfig) -> dict[str, int]:
    """IVF-PQ parameters for ``n`` vectors of dimension ``dim`` (see the module docstring)."""
    nlist = config.nlist or 2 ** int(math.log2(max(1, min(config.max_nlist, n // 32, config.memory_vectors // 32))))
    pq_m = max(m for m in range(1, min(config.pq_m, dim) + 1) if dim % m == 0)
    nprobe = config.nprobe or max(16, nlist // 64)
    refine_m = max((m for m in range(1, min(config.refine_m, dim) + 1) if dim % m == 0), default=0)
    return {"nlist": nlist, "pq_m": pq_m, "nprobe": min(nprobe, nlist), "k_factor": config.k_factor,
            "refine_m": refine_m, "refine_factor": config.refine_factor,
            "exact_max": config.exact_max, "train": min(n, config.memory_vectors)}  # fmt: skip


def _atomic_write_index(index: faiss.Index, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _train(
    folder: VectorFolder, params: dict[str, int], batch: int, seed: int
) -> tuple[faiss.Index, faiss.ProductQuantizer | None]:
    """The IVF-PQ index and the refining 8-bit PQ (None without one), trained on a uniform sample of
    ``params["train"]`` vectors picked in one streaming pass."""
    n = len(folder)
    index = faiss.index_factory(folder.dim, f"IVF{params['nlist']},PQ{params['pq_m']}x4", faiss.METRIC_L2)
    faiss.extract_index_ivf(index).cp.niter = 10
    chosen = np.sort(np.random.default_rng(seed).choice(n, params["train"], replace=False))
    sample = np.empty((len(chosen), folder.dim), np.float32)
    for first, vectors in folder.read(0, n, batch):
        low, high = np.searchsorted(chosen, [first, first + len(vectors)])
        sample[low:high] = vectors[chosen[low:high] - first]
    index.train(sample)
    refine = None
    if params["refine_m"]:
        refine = faiss.ProductQuantizer(folder.dim, params["refine_m"], 8)
        refine.cp.niter = 10
        refine.train(_residuals(index, sample)[1])
    return index, refine


def _residuals(index: faiss.Index, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each vector's IVF list (nearest coarse centroid) and its residual from that centroid."""
    quantizer = faiss.extract_index_ivf(index).quantizer
    lists = quantizer.search(vectors, 1)[1][:, 0]
    return lists, vectors - quantizer.reconstruct_batch(lists)


def _catalog(folder: VectorFolder, work: Path, out: Path, chunk: int) -> int:
    """Write ``filters/``, ``keys/`` and ``parents.npy`` from the records; returns the duplicated key count."""
    n = len(folder)
    (out / "keys").mkdir(parents=True, exist_ok=True)
    filters = FilterBuilder(out / "filters", n, chunk)
    hashes = np.lib.format.open_memmap(work / "key-hashes.npy", "w+", np.uint64, (n,))
    parent_hashes = np.lib.format.open_memmap(work / "parent-hashes.npy", "w+", np.uint64, (n,))
    for start, table in scan_records(folder, CATALOG_COLUMNS):
        hashes[start : start + table.num_rows] = key_hash(table["key"].to_pylist())
        parent_hashes[start : start + table.num_rows] = key_hash(table["parent"].to_pylist())
        filters.add(start, table)
    filters.finish()
    hashes.flush()
    duplicates = write_key_table(hashes, out / "keys", chunk)
    keys = KeyTable(out / "keys")
    parents_tmp = work / "parents.npy"
    parents = np.lib.format.open_memmap(parents_tmp, "w+", np.int64, (n,))
    for start in range(0, n, chunk):
        parents[start : start + chunk] = keys.lookup(parent_hashes[start : start + chunk])
    parents.flush()
    del parents, hashes, parent_hashes
    os.replace(parents_tmp, out / "parents.npy")
    return duplicates


def build_vector_index(
    vectors: str | Path,
    out: str | Path,
    config: VectorBuildConfig | None = None,
    on_step: Callable[[str], None] | None = None,
) -> VectorBuildReport:
    """Build (or resume building) the vector index at ``out`` over the vector folder ``vectors``.

    An index at ``out`` built from the same done shards with the same settings is left as it is; anything else
    there (an older index, another folder's build) is replaced.

    Raises:
        FigureIndexError: the vector folder is empty, malformed, or does not match its done markers.
    """
    config = config or VectorBuildConfig()
    if config.part_vectors % 8 or config.part_vectors < 8:
        raise FigureIndexError(f"part_vectors must be a positive multiple of 8, got {config.part_vectors}")
    say = on_step or (lambda message: None)
    out, vectors = Path(out), Path(vectors)
    try:
        folder = VectorFolder(vectors)
    except VectorFolderError as error:
        raise FigureIndexError(str(error)) from error
    n = len(folder)
    if not n:
        raise FigureIndexError(f"{vectors} holds no embedded vectors (no NAME.done.json with rows)")
    params = choose_parameters(n, folder.dim, config)
    plan = {"format": INDEX_FORMAT, "shards": [s.identity() for s in folder.shards], "parameters": params,
            "config": {k: v for k, v in asdict(config).items() if k != "verify"}}  # fmt: skip
    report = VectorBuildReport(count=n, shards=len(folder.shards), parameters=params)
    report.skipped_images = sum(s.skipped for s in folder.shards)
    meta_path, work = out / "meta.json", out / "build"
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("plan") == plan:
        report.up_to_date = True
        return report
    if not (work / "plan.json").is_file() or json.loads((work / "plan.json").read_text()) != plan:
        for stale in ("meta.json", "ivf", "exact", "refine", "filters", "keys", "parents.npy", "records", "build"):
            path = out / stale
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        work.mkdir(parents=True)
        _atomic_write_text(work / "plan.json", json.dumps(plan))
    if config.verify:
        say(f"verifying {len(folder.shards)} shards")
        for shard in folder.shards:
            try:
                folder.verify(shard)
            except VectorFolderError as error:
                raise FigureIndexError(str(error)) from error
    parts = math.ceil(n / config.part_vectors)
    with_ivf = n >= config.ivf_min  # else every search is exact
    trained_path, refine_path = work / "trained.faiss", out / "refine" / "pq.faiss"
    with_refine = with_ivf and bool(params["refine_m"])
    for kind in ("ivf", "exact", "refine"):
        (out / kind).mkdir(exist_ok=True)
    if with_ivf and not (trained_path.is_file() and (refine_path.is_file() or not with_refine)):
        say(f"training IVF{params['nlist']},PQ{params['pq_m']}x4 on {params['train']} vectors")
        trained, refine = _train(folder, params, config.memory_vectors, config.seed)
        if refine is not None:
            tmp = refine_path.with_name(refine_path.name + ".tmp")
            faiss.write_ProductQuantizer(refine, str(tmp))
            os.replace(tmp, refine_path)
        _atomic_write_index(trained, trained_path)
    refine = faiss.read_ProductQuantizer(str(refine_path)) if with_refine else None
    for number in range(parts):
        ivf_path, exact_path = (out / kind / f"part-{number:05d}.faiss" for kind in ("ivf", "exact"))
        codes_path = out / "refine" / f"part-{number:05d}.npy"
        if exact_path.is_file() and (ivf_path.is_file() or not with_ivf) and (codes_path.is_file() or not refine):
            report.parts_kept += 1
            continue
        start, stop = number * config.part_vectors, min(n, (number + 1) * config.part_vectors)
        say(f"adding vectors {start}..{stop} (part {number + 1} of {parts})")
        ivf = faiss.read_index(str(trained_path)) if with_ivf else None
        exact = faiss.IndexScalarQuantizer(folder.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        codes = np.empty(stop - start, [("list", "<u2"), ("code", "u1", (refine.code_size if refine else 0,))])
        for first, batch in folder.read(start, stop, config.memory_vectors):
            if ivf is not None:  # assigned once: the IVF index and the refining codes share the coarse lists
                lists, residuals = _residuals(ivf, batch)
                ids = np.arange(first, first + len(batch), dtype=np.int64)
                faiss.extract_index_ivf(ivf).add_core(
                    len(batch), faiss.swig_ptr(batch), faiss.swig_ptr(ids), faiss.swig_ptr(lists)
                )
                if refine is not None:
                    rows = slice(first - start, first - start + len(batch))
                    codes["list"][rows], codes["code"][rows] = lists, refine.compute_codes(residuals)
            exact.add(batch)  # float16 in, float16 stored: the same values
        if refine is not None:
            tmp = codes_path.with_name(codes_path.name + ".tmp.npy")
            np.save(tmp, codes)
            os.replace(tmp, codes_path)
        if ivf is not None:
            _atomic_write_index(ivf, ivf_path)
        _atomic_write_index(exact, exact_path)
        report.parts_built += 1
        del ivf, exact, codes
    ivf_parts = [out / "ivf" / f"part-{number:05d}.faiss" for number in range(parts)]
    if with_ivf and not (out / "ivf" / "merged.faiss").is_file():
        say(f"merging {parts} parts into on-disk inverted lists")
        (out / "ivf" / "lists.ivfdata").unlink(missing_ok=True)
        merged = faiss.read_index(str(trained_path))
        merge_ondisk(merged, [str(path) for path in ivf_parts], str(out / "ivf" / "lists.ivfdata"))
        _atomic_write_index(merged, out / "ivf" / "merged.faiss")
        del merged
    say("writing filters, key table and panel parents")
    report.duplicate_keys = _catalog(folder, work, out, config.chunk)
    listed: list[str] = []
    if with_ivf and config.list_max:
        exact_parts = [out / "exact" / f"part-{number:05d}.faiss" for number in range(parts)]
        listed = build_value_lists(
            out / "filters", work, exact_parts, folder.dim, config.part_vectors, config.list_max, say
        )
    if not (out / "records" / "offsets.npy").is_file():
        say("writing the records by id")
        write_row_records(folder, out / "records")
    meta = {"format": INDEX_FORMAT, "kind": KIND, "count": n, "dim": folder.dim, "model": folder.model,
            "vectors": os.path.relpath(vectors.resolve(), out.resolve()), "shards": plan["shards"],
            "part_vectors": config.part_vectors, "ivf": with_ivf, "exact_parts": parts,
            "search": {k: params[k] for k in ("nprobe", "k_factor", "refine_factor", "exact_max")},
            "refine": with_refine, "parameters": params,
            "value_lists": {"fields": listed, "list_max": config.list_max},
            "duplicate_keys": report.duplicate_keys, "plan": plan}  # fmt: skip
    _atomic_write_text(meta_path, json.dumps(meta, indent=1))
    for path in ivf_parts:  # merged into lists.ivfdata
        path.unlink(missing_ok=True)
    shutil.rmtree(work)
    return report
