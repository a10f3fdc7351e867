"""Phase 2: from the work batches to the released corpus, as stages over Parquet partitions.

Every stage is a function over one unit (a batch, a shard, a catalog part) run by ``distributed.map_units``
(worker processes or Ray); the driver holds only columns of fixed-size values per figure (keys, hashes).

1. ``batch_articles``: per batch, which article results it holds; the driver keeps, per article the sources
   listed in this run (latest version per article key), one result: a final one, from the smallest batch id.
2. ``batch_fingerprints``: per batch, the SHA-256 and perceptual hash of the chosen accepted figures.
3. dedup (``dedup.cluster_labels``, its near-duplicate bands as parallel units): kept figure per cluster.
4. ``batch_rows``: per batch, the chosen rows with their verdict, split (a pure function of the article key,
   see ``split.py``) and shard, written to one file per shard (and per rejected partition) in the stage folder.
5. ``write_shard``: per shard, its rows in key order and their JPEGs read from the batch tars; the same rows
   become catalog part ``part-NNNNN.parquet``; rejected rows become the following parts.
Names and contents depend only on the chosen rows, never on how batches were formed, so a rerun after a kill
gives byte-identical shards and catalog.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from biomedclip.corpus.batches import WorkStore
from biomedclip.corpus.dedup import DedupConfig, near_pairs_for_masks
from biomedclip.corpus.outdir import fsync_file
from biomedclip.corpus.rows import ACCEPTED, CATALOG_SCHEMA, RECORD_FIELDS, REJECTED
from biomedclip.corpus.shards import ShardWriter
from biomedclip.corpus.split import SplitConfig, article_hash, hash_split, moved_articles

REJECTED_PART_ROWS = 100_000


@dataclass(frozen=True)
class Chosen:
    """The article results phase 2 uses: names (``<article>.v<version>``), the batch holding each, row count."""

    names: pa.Array
    batches: pa.Array
    rows: int


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
    return Chosen(
        held["name"].combine_chunks(), held["batch"].combine_chunks(), pc.sum(held["final_count"]).as_py() or 0
    )


def _chosen_rows(batch: str, store: WorkStore, chosen: Chosen, columns: list[str] | None = None) -> pa.Table:
    table = store.read_rows(batch, columns)
    names = pc.binary_join_element_wise(table["article"], pc.cast(pc.fill_null(table["version"], 0), pa.string()),
                                        ".v")  # fmt: skip
    mine = chosen.names.filter(pc.equal(chosen.batches, batch))
    return table.filter(pc.is_in(names, mine))


def batch_fingerprints(batch: str, store: WorkStore, chosen: Chosen) -> pa.Table:
    """Stage 2: ``key, sha256, phash`` of the chosen accepted figures of ``batch``."""
    table = _chosen_rows(batch, store, chosen, ["key", "article", "version", "status", "sha256", "phash"])
    table = table.filter(pc.equal(table["status"], ACCEPTED))
    return table.select(["key", "article", "sha256", "phash"])


def near_edges_unit(unit: list, values: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Stage 3's parallel part: verified near pairs for one unit of band masks."""
    return near_pairs_for_masks(values, unit, max_distance)


@dataclass(frozen=True)
class Verdicts:
    """Phase 2 decisions by key: duplicates (``dup_keys`` -> ``dup_of``, ``dup_kind``) and shard per survivor."""

    dup_keys: pa.Array
    dup_of: pa.Array
    dup_kind: pa.Array
    shard_keys: pa.Array
    shard_names: pa.Array
    moved: dict[str, str]
    split: SplitConfig
    rejected_parts: int


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


def _article_of_key(key_articles: pa.Table, keys: pa.Array) -> pa.Array:
    index = pc.index_in(keys, key_articles["key"])
    return key_articles["article"].combine_chunks().take(index)


def batch_rows(batch: str, store: WorkStore, chosen: Chosen, verdicts: Verdicts, stage: Path) -> dict[str, int]:
    """Stage 4: the chosen rows of ``batch`` completed, written per shard / rejected partition into ``stage``."""
    table = _chosen_rows(batch, store, chosen)
    idx = pc.index_in(table["key"], verdicts.dup_keys)
    is_dup = pc.is_valid(idx)
    status = pc.if_else(is_dup, REJECTED, table["status"])
    reason = pc.if_else(is_dup, pc.binary_join_element_wise(verdicts.dup_kind.take(idx), "_duplicate", ""),
                        table["reason"])  # fmt: skip
    detail = pc.if_else(is_dup, "", table["detail"])
    columns = {
        "status": status, "reason": reason, "detail": detail, "duplicate_of": verdicts.dup_of.take(idx),
        "split": split_of_articles(table["article"].combine_chunks(), verdicts.moved, verdicts.split),
        "shard": verdicts.shard_names.take(pc.index_in(table["key"], verdicts.shard_keys)),
    }  # fmt: skip
    for name, column in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, column)
    counts: dict[str, int] = {}
    shard = table["shard"]
    for name in pc.unique(shard).to_pylist():
        if name is None:
            part = table.filter(pc.is_null(shard))
            buckets = _bucket(part["article"], verdicts.rejected_parts)
            for b in pc.unique(buckets).to_pylist():
                _write(part.filter(pc.equal(buckets, b)), stage / "rows" / f"rejected-{b:05d}" / f"{batch}.parquet")
        else:
            part = table.filter(pc.equal(shard, name))
            _write(part, stage / "rows" / name / f"{batch}.parquet")
        counts[name or "rejected"] = counts.get(name or "rejected", 0) + len(part)
    return counts


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
            jpeg = store.image(row["batch"], row["image_offset"], row["image_size"])
            writer.write(row["key"], jpeg, row["caption"], {f: row[f] for f in RECORD_FIELDS})
    target = stage / "shards" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    (tmp / f"{split}-000000.tar").replace(target)
    fsync_file(target)
    shutil.rmtree(tmp, ignore_errors=True)
    _write_durable(
        table.select(CATALOG_SCHEMA.names).cast(CATALOG_SCHEMA), stage / "catalog" / f"part-{part:05d}.parquet"
    )
    return len(table)


def write_rejected_part(unit: tuple[str, int], stage: Path) -> int:
    """Stage 5 for one rejected partition: its catalog part in key order."""
    name, part = unit
    table = _catalog_table(stage / "rows" / name)
    _write_durable(
        table.select(CATALOG_SCHEMA.names).cast(CATALOG_SCHEMA), stage / "catalog" / f"part-{part:05d}.parquet"
    )
    return len(table)


def dedup_verdicts(fingerprints: pa.Table, config: DedupConfig, near_edges: Any) -> tuple[pa.Array, pa.Array, pa.Array]:
    """``(duplicate keys, kept key of each, kind)`` over every chosen accepted figure."""
    from biomedclip.corpus.dedup import cluster_labels

    table = fingerprints.sort_by([("key", "ascending")])
    keys = table["key"].combine_chunks()
    sha = pc.dictionary_encode(table["sha256"].combine_chunks())
    phash = np.array([int(h, 16) for h in table["phash"].to_pylist()], dtype=np.uint64)
    kept, exact = cluster_labels(sha.indices.to_numpy().astype(np.int64), phash, config.max_distance, near_edges)
    dup = np.flatnonzero(kept != np.arange(len(kept)))
    kind = pa.array(np.where(exact[dup], "exact", "near").tolist(), pa.string())
    return keys.take(pa.array(dup)), keys.take(pa.array(kept[dup])), kind
