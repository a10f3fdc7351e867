"""Phase 2: from the work batches to the released corpus, as stages over Parquet partitions.

Every stage is a function over one unit (a batch, a shard, a catalog part) run by ``distributed.map_units``
(worker processes or Ray); the driver holds only columns of fixed-size values per figure (keys, hashes).

1. ``batch_articles``: per batch, which article results it holds; the driver keeps, per article the sources
   listed in this run (latest version per article key), one result: a final one, from the smallest batch id.
2. ``batch_fingerprints``: per batch, the SHA-256 and perceptual hash of the chosen accepted figures.
3. dedup (``dedup.cluster_labels``, its near-duplicate bands as parallel units): kept figure per cluster.
4. ``batch_rows``: per batch (every batch, chosen or not), the chosen rows with their verdict, split (a pure
   function of the article key, see ``split.py``) and shard, written to one file per shard (and per rejected
   partition) in the stage folder; the locations of its images that no shard takes go to a pack partition.
5. ``write_shard``: per shard, its rows in key order and their JPEGs read from the batch tar, or, for a batch
   whose tar a release deleted, from the previous shards and packs (``WorkStore.released``); the same rows
   become catalog part ``part-NNNNN.parquet``; rejected rows become the following parts; ``write_pack`` copies
   the other images forward. Each writes the index of where its images now lie (``work/<digest>/images``).
Names and contents of shards and catalog depend only on the chosen rows, never on how batches were formed, so a
rerun after a kill gives byte-identical shards and catalog (packs depend on the batches: internal storage).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from biomedclip.corpus.batches import WorkStore
from biomedclip.corpus.dedup import DedupConfig, cluster_labels, near_pairs_for_masks
from biomedclip.corpus.outdir import fsync_file
from biomedclip.corpus.report import write_report
from biomedclip.corpus.rows import ACCEPTED, CATALOG_SCHEMA, REJECTED
from biomedclip.corpus.split import SplitConfig, article_hash, hash_split, moved_articles
from biomedclip.errors import RunError
from biomedclip.shards import ShardWriter, shard_record, write_sizes

REJECTED_PART_ROWS = 20_000
BATCHES_PER_PACK = 256
CATALOG_BATCH_ROWS = 4096
LOCATIONS = pa.schema([("batch", pa.string()), ("key", pa.string()), ("file", pa.string()), ("offset", pa.int64()),
                       ("size", pa.int64())])  # fmt: skip
"""Where a released image lies: ``size`` bytes at ``offset`` of ``file`` (a path below OUT)."""
HEX_DIGITS = np.zeros(256, np.uint64)
HEX_DIGITS[np.frombuffer(b"0123456789abcdefABCDEF", np.uint8)] = [*range(16), *range(10, 16)]
FINGERPRINTS = pa.schema(
    [("key", pa.string()), ("article", pa.string()), ("batch", pa.string()), ("sha_hi", pa.uint64()),
     ("sha_lo", pa.uint64()), ("phash", pa.uint64()), ("split", pa.string())]
)  # fmt: skip
"""What dedup needs of a figure: the first 128 bits of its file's SHA-256 (a collision among 10^9 figures has
odds below 10^-20) and its perceptual hash; ``split`` is the source's when it knows one (a labelled folder)."""


@dataclass(frozen=True)
class Settings:
    """The parts of the build recipe phase 2 uses."""

    dedup: DedupConfig
    split: SplitConfig
    shard_size: int
    tokenizer_file: str | None = None
    single_file_rows: int = 100_000  # catalogs up to this many rows are also written as one catalog.parquet


@dataclass(frozen=True)
class Chosen:
    """The article results phase 2 uses: ``name`` (``<article>.v<version>``) and ``batch`` columns, row count."""

    table: pa.Table
    rows: int

    def by_batch(self) -> dict[str, pa.Array]:
        """The chosen names held by each batch."""
        return {batch: part["name"].combine_chunks() for batch, part in by_batch(self.table).items()}


def by_batch(table: pa.Table) -> dict[str, pa.Table]:
    """``table`` cut by its ``batch`` column (sorted by batch id), each part sent to one unit of work.

    Each part is a compact copy: a pickled slice of an Arrow table would carry the whole table's buffers.
    """
    if not len(table):
        return {}
    encoded = pc.dictionary_encode(table["batch"]).combine_chunks()
    codes = encoded.indices.to_numpy()
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.r_[True, codes[order][1:] != codes[order][:-1], True])
    parts = {
        encoded.dictionary[codes[order[lo]]].as_py(): table.take(pa.array(order[lo:hi]))
        for lo, hi in pairwise(bounds.tolist())
    }
    return dict(sorted(parts.items()))


def batch_articles(batch: str, store: WorkStore) -> pa.Table:
    """Stage 1: ``name, batch, final`` for each article result in ``batch``."""
    table = store.read_rows(batch, ["article", "version", "final"])
    names = pc.binary_join_element_wise(table["article"], pc.cast(pc.fill_null(table["version"], 0), pa.string()),
                                        ".v")  # fmt: skip
    result = pa.table({"name": names, "final": table["final"]})
    result = result.group_by(["name"]).aggregate([("final", "min"), ("final", "count")])
    return result.append_column("batch", pa.array([batch] * len(result), pa.string()))


def choose(listing: pa.Table, held: pa.Table) -> Chosen:
    """Latest listed version per article key, and the best result of it (final first, then smallest batch)."""
    listing = listing.sort_by([("article", "ascending"), ("version", "descending"), ("name", "ascending")])
    art = listing["article"].combine_chunks()
    first = np.r_[True, pc.not_equal(art[1:], art[:-1]).to_numpy(zero_copy_only=False)] if len(art) else []
    latest = listing.filter(pa.array(first, pa.bool_())) if len(art) else listing
    held = held.filter(pc.is_in(held["name"], latest["name"]))
    held = held.sort_by([("name", "ascending"), ("final_min", "descending"), ("batch", "ascending")])
    names = held["name"].combine_chunks()
    keep = np.r_[True, pc.not_equal(names[1:], names[:-1]).to_numpy(zero_copy_only=False)] if len(names) else []
    held = held.filter(pa.array(keep, pa.bool_())) if len(names) else held
    return Chosen(held.select(["name", "batch"]), pc.sum(held["final_count"]).as_py() or 0)


def _names(table: pa.Table) -> pa.ChunkedArray:
    """``<article>.v<version>`` of each row."""
    return pc.binary_join_element_wise(table["article"], pc.cast(pc.fill_null(table["version"], 0), pa.string()), ".v")


def _chosen_rows(batch: str, store: WorkStore, names: pa.Array, columns: list[str] | None = None) -> pa.Table:
    table = store.read_rows(batch, columns)
    return table.filter(pc.is_in(_names(table), names))


def batch_fingerprints(unit: tuple[str, pa.Array], store: WorkStore) -> pa.Table:
    """Stage 2 for one batch: ``FINGERPRINTS`` of its chosen accepted figures (hashes as integers: 24 bytes)."""
    batch, names = unit
    table = _chosen_rows(
        batch, store, names, ["key", "article", "version", "status", "sha256", "phash", "batch", "split"]
    )
    table = table.filter(pc.equal(table["status"], ACCEPTED))
    sha = table["sha256"]
    columns = {
        "key": table["key"], "article": table["article"], "batch": table["batch"],
        "sha_hi": parse_hex64(pc.utf8_slice_codeunits(sha, 0, 16)),
        "sha_lo": parse_hex64(pc.utf8_slice_codeunits(sha, 16, 32)),
        "phash": parse_hex64(table["phash"]),
        "split": table["split"],
    }  # fmt: skip
    return pa.table(columns, schema=FINGERPRINTS)


def near_edges_unit(unit: list, values: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Stage 3's parallel part: verified near pairs for one unit of band masks."""
    return near_pairs_for_masks(values, unit, max_distance)


@dataclass(frozen=True)
class Decisions:
    """What phase 2 decided for every batch alike: tiny-corpus split moves and how many rejected parts."""

    moved: dict[str, str]
    split: SplitConfig
    rejected_parts: int
    packs: int = 1


def split_of_articles(articles: pa.Array, moved: dict[str, str], config: SplitConfig) -> pa.Array:
    """Split per article key (vectorised over a column)."""
    return pa.array([moved.get(a) or hash_split(article_hash(a, config.salt), config) for a in articles.to_pylist()],
                    pa.string())  # fmt: skip


def tiny_corpus_moves(articles: pa.Array, config: SplitConfig) -> dict[str, str]:
    """The tiny-corpus rule of ``split.py`` from aggregates over the chosen article keys."""
    present: set[str] = set()
    smallest: list[tuple[float, str]] = []
    for article in articles.to_pylist():
        u = article_hash(article, config.salt)
        split = hash_split(u, config)
        present.add(split)
        if split == "train":
            smallest = sorted([*smallest, (u, article)])[:2]
    return moved_articles(len(articles), present, smallest, config)


def shard_names(keys: pa.Array, splits: pa.Array, shard_size: int) -> pa.Array:
    """``{split}-NNNNNN.tar`` per survivor: key order within each split, ``shard_size`` samples per shard."""
    order = pc.sort_indices(pa.table({"split": splits, "key": keys}), [("split", "ascending"), ("key", "ascending")])
    split_sorted = splits.take(order).to_pylist()
    names: list[str | None] = [None] * len(keys)
    rank: dict[str, int] = {}
    for pos, split in zip(order.to_pylist(), split_sorted, strict=True):
        n = rank.get(split, 0)
        rank[split] = n + 1
        names[pos] = f"{split}-{n // shard_size:06d}.tar"
    return pa.array(names, pa.string())


def _locate(table: pa.Table, batch: str, store: WorkStore, released: pa.Table | None) -> pa.Table:
    """``table`` with ``image_file, image_offset, image_size``: in the batch tar, else where the last release put it."""
    if released is None:
        file = pc.if_else(pc.is_valid(table["image_size"]), store.path(batch, ".tar"), pa.scalar(None, pa.string()))
        return table.append_column("image_file", file)
    idx = pc.index_in(table["key"], released["key"])
    if pc.any(pc.and_(pc.is_valid(table["image_size"]), pc.is_null(idx))).as_py():
        raise RunError(f"the images of work batch {batch} are neither in its tar nor in the released images")
    for name, column in (("image_offset", "offset"), ("image_size", "size")):
        table = table.set_column(table.schema.get_field_index(name), name, released[column].take(idx))
    return table.append_column("image_file", released["file"].take(idx))


def batch_rows(
    unit: tuple[str, pa.Array, pa.Table, pa.Table | None], store: WorkStore, decisions: Decisions, stage: Path
) -> int:
    """Stage 4 for one batch: its chosen rows completed with ``verdicts`` (``key, duplicate_of, kind, shard`` of
    its accepted figures) and the split, written per shard / rejected partition into ``stage``; the images no
    shard takes (duplicates, results not chosen) go to a pack. ``released`` locates the images of a batch
    whose tar was deleted (None: read the tar)."""
    batch, names, verdicts, released = unit
    rows = _locate(store.read_rows(batch), batch, store, released)
    chosen = pc.is_in(_names(rows), names)
    table = rows.filter(chosen)
    idx = pc.index_in(table["key"], verdicts["key"])
    dup_of = verdicts["duplicate_of"].combine_chunks().take(idx)
    is_dup = pc.is_valid(dup_of)
    status = pc.if_else(is_dup, REJECTED, table["status"])
    kind = pc.binary_join_element_wise(verdicts["kind"].combine_chunks().take(idx), "_duplicate", "")
    columns = {
        "status": status, "reason": pc.if_else(is_dup, kind, table["reason"]),
        "detail": pc.if_else(is_dup, "", table["detail"]), "duplicate_of": dup_of,
        "split": pc.coalesce(
            table["split"].combine_chunks(),
            split_of_articles(table["article"].combine_chunks(), decisions.moved, decisions.split),
        ),
        "shard": verdicts["shard"].combine_chunks().take(idx),
    }  # fmt: skip
    for name, column in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, column)
    shard = table["shard"]
    for name in pc.unique(shard).to_pylist():
        if name is None:
            part = table.filter(pc.is_null(shard))
            buckets = _bucket(part["article"], decisions.rejected_parts)
            for b in pc.unique(buckets).to_pylist():
                _write(part.filter(pc.equal(buckets, b)), stage / "rows" / f"rejected-{b:05d}" / f"{batch}.parquet")
        else:
            _write(table.filter(pc.equal(shard, name)), stage / "rows" / name / f"{batch}.parquet")
    in_shard = pc.and_(chosen, pc.is_in(rows["key"], table.filter(pc.is_valid(shard))["key"]))
    packed = rows.filter(pc.and_(pc.is_valid(rows["image_size"]), pc.invert(in_shard)))
    if len(packed):
        pack = int(hashlib.sha1(batch.encode()).hexdigest()[:8], 16) % decisions.packs
        _write(packed.select(["key", "batch", "image_file", "image_offset", "image_size"]),
               stage / "rows" / f"pack-{pack:05d}" / f"{batch}.parquet")  # fmt: skip
    return len(table)


def _bucket(articles: pa.ChunkedArray, parts: int) -> pa.Array:
    return pa.array([int(hashlib.sha1(a.encode()).hexdigest()[:8], 16) % parts for a in articles.to_pylist()])


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _catalog_table(folder: Path) -> pa.Table:
    tables = [pq.read_table(p) for p in sorted(folder.glob("*.parquet"))]
    table = pa.concat_tables(tables) if tables else CATALOG_SCHEMA.empty_table()
    return table.sort_by([("key", "ascending")])


def _write_durable(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    fsync_file(path)


def write_shard(unit: tuple[str, int], store: WorkStore, stage: Path) -> int:
    """Stage 5 for one shard: its samples in key order and its catalog part; returns the sample count."""
    name, part = unit
    table = _catalog_table(stage / "rows" / name)
    split = name.rsplit("-", 1)[0]
    tmp = stage / "tmp" / name
    shutil.rmtree(tmp, ignore_errors=True)
    with ShardWriter(tmp, split, max_samples=len(table) + 1) as writer:
        for row in table.to_pylist():
            jpeg = store.out.read_range(row["image_file"], row["image_offset"], row["image_size"])
            writer.write(row["key"], jpeg, row["caption"], shard_record(row))
    target = stage / "shards" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    (tmp / f"{split}-000000.tar").replace(target)
    fsync_file(target)
    shutil.rmtree(tmp, ignore_errors=True)
    batch_of = {f"{k}.jpg": b for k, b in zip(table["key"].to_pylist(), table["batch"].to_pylist(), strict=True)}
    _write_index(target, f"shards/{name}", batch_of, stage / store.images / f"index-{part:05d}.parquet")
    _write_durable(
        table.select(CATALOG_SCHEMA.names).cast(CATALOG_SCHEMA), stage / "catalog" / f"part-{part:05d}.parquet"
    )
    return len(table)


def _write_index(tar_path: Path, file: str, batch_of: dict[str, str], path: Path) -> None:
    """The released location (``file``, offset, size) of every image member of ``tar_path`` named in ``batch_of``."""
    rows: dict[str, list] = {"batch": [], "key": [], "file": [], "offset": [], "size": []}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            if member.name in batch_of:
                key = member.name.rsplit("/", 1)[-1].removesuffix(".jpg")
                for column, value in zip(rows, (batch_of[member.name], key, file, member.offset_data, member.size),
                                         strict=True):  # fmt: skip
                    rows[column].append(value)
    _write_durable(pa.table(rows, schema=LOCATIONS), path)


def write_pack(unit: tuple[str, int], store: WorkStore, stage: Path) -> int:
    """Stage 5 for one pack: the images no shard holds, ``<batch>/<key>.jpg`` in order, and their index."""
    name, number = unit
    table = pa.concat_tables([pq.read_table(p) for p in sorted((stage / "rows" / name).glob("*.parquet"))])
    table = table.sort_by([("batch", "ascending"), ("key", "ascending")])
    file = f"{store.images}/pack-{number:05d}.tar"
    target = stage / file
    target.parent.mkdir(parents=True, exist_ok=True)
    members = {}
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        for row in table.to_pylist():
            jpeg = store.out.read_range(row["image_file"], row["image_offset"], row["image_size"])
            info = tarfile.TarInfo(f"{row['batch']}/{row['key']}.jpg")
            info.size, info.mtime, info.mode = len(jpeg), 0, 0o644
            tar.addfile(info, io.BytesIO(jpeg))
            members[info.name] = row["batch"]
    fsync_file(target)
    _write_index(target, file, members, stage / store.images / f"index-pack-{number:05d}.parquet")
    return len(table)


def write_rejected_part(unit: tuple[str, int], stage: Path) -> int:
    """Stage 5 for one rejected partition: its catalog part in key order."""
    name, part = unit
    table = _catalog_table(stage / "rows" / name)
    _write_durable(
        table.select(CATALOG_SCHEMA.names).cast(CATALOG_SCHEMA), stage / "catalog" / f"part-{part:05d}.parquet"
    )
    return len(table)


def write_single_catalog(parts: list[Path], stage: Path) -> int:
    """``catalog.parquet``: the catalog parts one after the other, a few thousand rows at a time."""
    with pq.ParquetWriter(stage / "catalog.parquet", CATALOG_SCHEMA) as writer:
        for part in parts:
            for rows in pq.ParquetFile(part).iter_batches(batch_size=CATALOG_BATCH_ROWS):
                writer.write_batch(rows)
    fsync_file(stage / "catalog.parquet")
    return len(parts)


def parse_hex64(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Strings of 16 hex digits to uint64, vectorised (no Python object per value)."""
    if not len(column):
        return np.zeros(0, np.uint64)
    arr = pc.cast(column, pa.binary())
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    if arr.null_count or pc.min(pc.binary_length(arr)).as_py() != 16 or pc.max(pc.binary_length(arr)).as_py() != 16:
        raise ValueError("expected 16 hex digits per value")
    offsets = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset : arr.offset + len(arr) + 1]
    text = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0] : offsets[-1]].reshape(-1, 16)
    nibbles = HEX_DIGITS[text]
    shifts = np.arange(60, -1, -4, dtype=np.uint64)
    return np.bitwise_or.reduce(nibbles << shifts, axis=1)


def dedup_verdicts(fingerprints: pa.Table, config: DedupConfig, near_edges: Any) -> pa.Table:
    """``key, duplicate_of, kind`` for every chosen accepted figure (``duplicate_of`` null for the kept ones)."""
    table = fingerprints.sort_by([("key", "ascending")])
    keys = table["key"].combine_chunks()
    sha = np.stack([table["sha_hi"].to_numpy(), table["sha_lo"].to_numpy()], axis=1)
    sha_codes = np.unique(sha, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)
    phash = table["phash"].to_numpy()
    kept, exact = cluster_labels(sha_codes, phash, config.max_distance, near_edges)
    is_dup = pa.array(kept != np.arange(len(kept)))
    none = pa.scalar(None, pa.string())
    kind = pa.array(np.where(exact, "exact", "near").tolist(), pa.string())
    table = table.select(["key", "article", "batch"])
    table = table.append_column("duplicate_of", pc.if_else(is_dup, keys.take(pa.array(kept)), none))
    return table.append_column("kind", pc.if_else(is_dup, kind, none))


def assemble(stage: Path, store: WorkStore, listing: pa.Table, settings: Settings, run: Callable) -> dict:
    """Phase 2 into ``stage`` (see the module docstring); ``run`` maps a stage function over units."""
    batches = store.batches()
    held = run(batch_articles, batches, store)
    empty = pa.table({"name": pa.array([], pa.string()), "final_min": pa.array([], pa.bool_()),
                      "final_count": pa.array([], pa.int64()), "batch": pa.array([], pa.string())})  # fmt: skip
    chosen = choose(listing, pa.concat_tables([empty, *held]))
    names_of = chosen.by_batch()
    prints = run(batch_fingerprints, list(names_of.items()), store)
    fingerprints = pa.concat_tables([FINGERPRINTS.empty_table(), *prints])

    def near_edges(values: np.ndarray, units: list) -> list:
        return run(near_edges_unit, units, values, settings.dedup.max_distance)

    verdicts = dedup_verdicts(fingerprints, settings.dedup, near_edges)
    articles = pc.unique(pc.replace_substring_regex(chosen.table["name"], r"\.v[0-9]+$", ""))
    moved = tiny_corpus_moves(articles, settings.split)
    given = fingerprints["split"].combine_chunks().take(pc.index_in(verdicts["key"], fingerprints["key"]))
    computed = split_of_articles(verdicts["article"].combine_chunks(), moved, settings.split)
    verdicts = verdicts.append_column("split", pc.coalesce(given, computed))  # a source's own split wins
    survivors = verdicts.filter(pc.is_null(verdicts["duplicate_of"]))
    shards = shard_names(survivors["key"].combine_chunks(), survivors["split"].combine_chunks(), settings.shard_size)
    shard_of = shards.take(pc.index_in(verdicts["key"], survivors["key"]))
    verdicts = verdicts.append_column("shard", shard_of)
    decisions = Decisions(moved, settings.split, max(1, -(-(chosen.rows - len(survivors)) // REJECTED_PART_ROWS)),
                          max(1, len(batches) // BATCHES_PER_PACK))  # fmt: skip
    by = by_batch(verdicts)
    empty_verdicts = verdicts.schema.empty_table()
    tars, released = store.tars(), store.released()
    located = by_batch(released) if released is not None else {}
    none = pa.array([], pa.string())
    nowhere = LOCATIONS.empty_table()
    units = [(b, names_of.get(b, none), by.get(b, empty_verdicts), None if b in tars else located.get(b, nowhere))
             for b in batches]  # fmt: skip
    run(batch_rows, units, store, decisions, stage)
    shard_list = sorted(set(shards.to_pylist()))
    counts = run(write_shard, [(name, i) for i, name in enumerate(shard_list)], store, stage)
    rejected_units = sorted(p.name for p in (stage / "rows").glob("rejected-*")) if (stage / "rows").exists() else []
    run(write_rejected_part, [(name, len(shard_list) + i) for i, name in enumerate(rejected_units)], stage)
    pack_units = sorted(p.name for p in (stage / "rows").glob("pack-*")) if (stage / "rows").exists() else []
    run(write_pack, [(name, int(name.removeprefix("pack-"))) for name in pack_units], store, stage)
    (stage / store.images).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(stage / "rows", ignore_errors=True)
    shutil.rmtree(stage / "tmp", ignore_errors=True)
    (stage / "shards").mkdir(exist_ok=True)
    write_sizes(stage / "shards", dict(zip(shard_list, counts, strict=True)))
    (stage / "catalog").mkdir(exist_ok=True)
    parts = sorted((stage / "catalog").glob("part-*.parquet"))
    if chosen.rows <= settings.single_file_rows:  # in a worker: the driver's memory stays flat
        run(write_single_catalog, [parts], stage)
    dups = verdicts.filter(pc.is_valid(verdicts["duplicate_of"]))
    _write_durable(dups.select(["key", "duplicate_of", "kind"]).sort_by([("key", "ascending")]),
                   stage / "clusters.parquet")  # fmt: skip
    return write_report(stage, parts, tokenizer=settings.tokenizer_file, shards=len(shard_list),
                        **cluster_counts(verdicts, int(pc.count_distinct(articles).as_py())))  # fmt: skip


def cluster_counts(verdicts: pa.Table, articles: int) -> dict[str, Any]:
    """The report's dedup and split numbers from the verdicts (``key, article, duplicate_of, kind, split``)."""
    dups = verdicts.filter(pc.is_valid(verdicts["duplicate_of"]))
    kept_split = verdicts["split"].combine_chunks().take(pc.index_in(dups["duplicate_of"], verdicts["key"]))
    per_cluster = pa.table({"kept": dups["duplicate_of"], "exact": pc.equal(dups["kind"], "exact"),
                            "leak": pc.not_equal(dups["split"], kept_split)}).group_by("kept").aggregate(
        [("exact", "all"), ("leak", "any")])  # fmt: skip
    exact = int(pc.sum(pc.cast(per_cluster["exact_all"], pa.int64())).as_py() or 0)
    survivors = verdicts.filter(pc.is_null(verdicts["duplicate_of"]))
    split_articles = {}
    for split in ("train", "val", "test"):
        mine = survivors.filter(pc.equal(survivors["split"], split))["article"]
        split_articles[split] = int(pc.count_distinct(mine).as_py()) if len(mine) else 0
    return {
        "articles": articles,
        "clusters": {"exact": exact, "near": len(per_cluster) - exact},
        "duplicates": len(dups),
        "leaks": int(pc.sum(pc.cast(per_cluster["leak_any"], pa.int64())).as_py() or 0),
        "split_articles": split_articles,
    }
