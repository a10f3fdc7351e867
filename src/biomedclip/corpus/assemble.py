"""Phase 2: from the work batches to the released corpus, as stages over Parquet partitions.

Every stage is a function over one unit (a batch, a shard, a catalog part) run by ``distributed.map_units``
(worker processes or Ray). The driver holds per article one name, per figure 25 bytes (its hashes and split),
and strings only for the figures in duplicate clusters; rows, captions and images stay in the workers.

1. ``batch_articles``: per batch, which article results it holds; the driver keeps, per article the sources
   listed in this run (latest version per article key), one result: a final one, from the smallest batch id.
2. ``batch_fingerprints``: per batch, the SHA-256 and perceptual hash and the split (a pure function of the
   article key, see ``split.py``, unless the source gives one) of the chosen accepted figures in key order,
   and a sample of their keys; their thumbnails go to ``thumbs/<batch>.npy`` in the stage folder, never to
   the driver.
3. dedup (``dedup.components`` on figure numbers, its near-duplicate bands as parallel units that confirm each
   candidate pair on the thumbnails they read from ``thumbs/``); ``member_keys`` fetches the keys of the
   figures in clusters, and each cluster keeps its smallest key. The rejected duplicates take the split of
   their cluster's kept figure, so a cluster never spans splits.
4. ``batch_rows``: per batch (every batch, chosen or not), the chosen rows with their verdict and split; the
   survivors are written per split and key-range partition (cut at keys of the sample), the others per
   rejected partition; the locations of its images that no shard takes go to a pack partition. The counts per
   partition give each shard's slices (``shard_pieces``): shard i of a split holds its keys of rank
   ``[i * shard_size, (i + 1) * shard_size)``.
5. ``write_shard``: per shard, its rows in key order and their JPEGs read from the batch tar, or, for a batch
   whose tar a release deleted, from the previous shards and packs (``WorkStore.released``); the same rows
   become catalog part ``part-NNNNN.parquet``; rejected rows become the following parts; ``write_pack`` copies
   the other images forward. Each writes the index of where its images now lie (``work/<digest>/images``).
Names and contents of shards and catalog depend only on the chosen rows, never on how batches were formed, so a
rerun after a kill gives byte-identical shards and catalog (packs depend on the batches: internal storage).
"""

from __future__ import annotations

import contextlib
import ctypes
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

from biomedclip.corpus.batches import DamagedWork, WorkStore, image_intact
from biomedclip.corpus.dedup import DedupConfig, ThumbCheck, components, near_pairs_for_masks
from biomedclip.corpus.pixels import THUMB_BYTES
from biomedclip.corpus.references import CAPTION, DEFAULT_REFERENCE_CHARS, training_text
from biomedclip.corpus.report import write_report
from biomedclip.corpus.rows import ACCEPTED, CATALOG_SCHEMA, REJECTED
from biomedclip.corpus.split import SPLITS, SplitConfig, article_hash, hash_split, moved_articles
from biomedclip.durable import fsync_file
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
SAMPLE_EVERY = 64
"""One key in this many of each batch goes to the driver, to cut the key range into partitions."""


@dataclass(frozen=True)
class Settings:
    """The parts of the build recipe phase 2 uses."""

    dedup: DedupConfig
    split: SplitConfig
    shard_size: int
    tokenizer_file: str | None = None
    single_file_rows: int = 100_000  # catalogs up to this many rows are also written as one catalog.parquet
    text: str = CAPTION  # the training text (``.txt`` member): ``references.TEXT_CHOICES``
    max_reference_chars: int = DEFAULT_REFERENCE_CHARS
    plots: bool = True  # the report's PNG plots (the panel corpus has none: its numbers are in the figure report)


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


@dataclass(frozen=True)
class SplitRule:
    """The split of a figure: its source's when it knows one (a labelled folder), else its article's."""

    moved: dict[str, str]  # the tiny-corpus moves (see ``split.py``)
    config: SplitConfig

    def of(self, table: pa.Table) -> pa.Array:
        """The split of each row of ``table`` (columns ``split``, ``article``)."""
        given = table["split"].combine_chunks()
        return pc.coalesce(given, split_of_articles(table["article"].combine_chunks(), self.moved, self.config))


@dataclass(frozen=True)
class Prints:
    """Stage 2's result for one batch: per chosen accepted figure, in key order, what dedup needs (the first
    128 bits of its file's SHA-256 and its perceptual hash) and its split (index in ``SPLITS``); and every
    ``SAMPLE_EVERY``-th key, from which the driver cuts the key range into partitions."""

    sha_hi: np.ndarray
    sha_lo: np.ndarray
    phash: np.ndarray
    split: np.ndarray
    sample: list[str]


def _accepted(batch: str, store: WorkStore, names: pa.Array) -> pa.Table:
    """The chosen accepted figures of ``batch`` in key order (the figure numbers dedup works on)."""
    columns = ["key", "article", "version", "status", "sha256", "phash", "thumb", "split"]
    table = _chosen_rows(batch, store, names, columns)
    return table.filter(pc.equal(table["status"], ACCEPTED)).sort_by([("key", "ascending")])


def split_codes(splits: pa.Array) -> np.ndarray:
    """Each split's index in ``SPLITS`` (int8); any other name is an error."""
    codes = pc.index_in(splits, pa.array(SPLITS))
    if codes.null_count:
        raise RunError(f"unknown split names {pc.unique(splits.filter(pc.is_null(codes))).to_pylist()}")
    return codes.to_numpy(zero_copy_only=False).astype(np.int8)


def batch_fingerprints(unit: tuple[str, pa.Array], store: WorkStore, rule: SplitRule, stage: Path) -> Prints:
    """Stage 2 for one batch: the ``Prints`` of its chosen accepted figures (25 bytes per figure); their
    thumbnails are written to ``thumbs_path(stage, batch)``."""
    batch, names = unit
    table = _accepted(batch, store, names)
    sha = table["sha256"]
    path = thumbs_path(stage, batch)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, thumb_rows(table["thumb"]))
    return Prints(
        parse_hex64(pc.utf8_slice_codeunits(sha, 0, 16)), parse_hex64(pc.utf8_slice_codeunits(sha, 16, 32)),
        parse_hex64(table["phash"]), split_codes(rule.of(table)),
        table["key"].to_pylist()[::SAMPLE_EVERY],
    )  # fmt: skip


def thumbs_path(stage: Path, batch: str) -> Path:
    """Where stage 2 puts a batch's thumbnails for stage 3's workers."""
    return stage / "thumbs" / f"{batch}.npy"


def thumb_rows(column: pa.ChunkedArray) -> np.ndarray:
    """Per value a row of ``1 + THUMB_BYTES`` uint8: 1 and the thumbnail, or zeros for a null (no thumbnail)."""
    rows = np.zeros((len(column), 1 + THUMB_BYTES), np.uint8)
    present = pc.is_valid(column).to_numpy(zero_copy_only=False)
    if present.any():
        text = pc.cast(column.filter(pa.array(present)), pa.binary()).combine_chunks()
        if (
            pc.min(pc.binary_length(text)).as_py() != 2 * THUMB_BYTES
            or pc.max(pc.binary_length(text)).as_py() != 2 * THUMB_BYTES
        ):
            raise RunError(f"a thumbnail has {2 * THUMB_BYTES} hex digits")
        offsets = np.frombuffer(text.buffers()[1], np.int32)[text.offset : text.offset + len(text) + 1]
        nibbles = HEX_DIGITS[np.frombuffer(text.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]].reshape(
            -1, THUMB_BYTES, 2
        )
        rows[present, 0] = 1
        rows[present, 1:] = (nibbles[:, :, 0] << np.uint64(4)) | nibbles[:, :, 1]
    return rows


class StoredThumbs(ThumbCheck):
    """``ThumbCheck`` over the thumbnails stage 2 wrote (``thumbs_path``), read by figure number where needed:
    ``files[i]`` holds the figures from ``starts[i]``; ``reps`` maps searched hashes to figure numbers."""

    def __init__(self, files: list[Path], starts: np.ndarray, reps: np.ndarray, max_pixel_distance: float) -> None:
        super().__init__(np.zeros((0, THUMB_BYTES), np.uint8), np.zeros(0, bool), max_pixel_distance)
        self.files, self.starts, self.reps = files, starts, reps
        self.open: dict[int, np.ndarray] = {}

    def rows(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        figures = self.reps[idx]
        batch = np.searchsorted(self.starts, figures, side="right") - 1
        out = np.zeros((len(idx), 1 + THUMB_BYTES), np.uint8)
        for b in np.unique(batch).tolist():
            if b not in self.open:
                self.open[b] = np.load(self.files[b], mmap_mode="r")
            mine = batch == b
            out[mine] = self.open[b][figures[mine] - self.starts[b]]
        return out[:, 1:], out[:, 0].astype(bool)


def member_keys(unit: tuple[str, pa.Array, np.ndarray], store: WorkStore) -> pa.Array:
    """The keys at positions ``rows`` of a batch's chosen accepted figures in key order (stage 2's order)."""
    batch, names, rows = unit
    return _accepted(batch, store, names)["key"].combine_chunks().take(pa.array(rows))


def near_edges_unit(
    unit: list, values: np.ndarray, max_distance: int, check: StoredThumbs
) -> tuple[np.ndarray, np.ndarray]:
    """Stage 3's parallel part: near pairs for one unit of band masks, confirmed on the stored thumbnails."""
    return near_pairs_for_masks(values, unit, max_distance, check)


@dataclass(frozen=True)
class Decisions:
    """What phase 2 decided for every batch alike: the split rule, the key partitions, how many rejected parts
    and packs."""

    split: SplitRule
    splitters: tuple[str, ...]  # sorted keys: partition p holds the keys k with splitters[p-1] <= k < splitters[p]
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


def partition_of(keys: pa.Array, splitters: tuple[str, ...]) -> np.ndarray:
    """The key-range partition of each key: the number of splitters ``<=`` it."""
    return np.searchsorted(np.array(splitters, dtype=str), np.array(keys.to_pylist(), dtype=str), side="right")


def shard_pieces(counts: dict[tuple[str, int], int], shard_size: int) -> dict[str, list[tuple[str, int, int]]]:
    """Per shard ``{split}-NNNNNN.tar``, the slices ``(partition folder, start, stop)`` of the key-sorted
    partitions that hold its samples: shard i of a split takes ranks ``[i * shard_size, (i + 1) * shard_size)``
    of that split in key order, and the partitions of a split hold consecutive key ranges."""
    shards: dict[str, list[tuple[str, int, int]]] = {}
    for split in SPLITS:
        rank = 0
        for (name, partition), count in sorted((k, v) for k, v in counts.items() if k[0] == split):
            lo, hi = rank, rank + count
            for shard in range(lo // shard_size, -(-hi // shard_size)):
                start, stop = max(lo, shard * shard_size), min(hi, (shard + 1) * shard_size)
                shards.setdefault(f"{name}-{shard:06d}.tar", []).append(
                    (f"{name}-p{partition:06d}", start - lo, stop - lo)
                )
            rank = hi
    return dict(sorted(shards.items()))


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


@dataclass(frozen=True)
class RowCounts:
    """Stage 4's result for one batch: survivors per ``(split, partition)``, their articles per split."""

    partitions: dict[tuple[str, int], int]
    articles: dict[str, int]
    damaged: str = ""  # what is wrong with the batch's images (then nothing was written for it)


def _damaged_images(rows: pa.Table, store: WorkStore) -> str:
    """What is wrong with the images of ``rows`` where ``_locate`` found them, "" when every one is intact."""
    images = rows.filter(pc.is_valid(rows["image_size"])).select(["key", "image_file", "image_offset", "image_size",
                                                                  "image_sha256"])  # fmt: skip
    bad = []
    for row in images.sort_by([("image_file", "ascending"), ("image_offset", "ascending")]).to_pylist():
        try:
            data = store.out.read_range(row["image_file"], row["image_offset"], row["image_size"])
        except Exception:  # a missing or unreadable file, local or on S3, is damage like any other
            data = b""
        if not image_intact(data, row["image_size"], row["image_sha256"]):
            bad.append(row)
    if not bad:
        return ""
    files = sorted({row["image_file"] for row in bad})
    return f"{len(bad)} of its {len(images)} images differ from what was stored (in {', '.join(files[:3])})"


def batch_rows(
    unit: tuple[str, pa.Array, pa.Table, pa.Table | None], store: WorkStore, decisions: Decisions, stage: Path
) -> RowCounts:
    """Stage 4 for one batch: its chosen rows completed with their verdict (``dups``: ``key, duplicate_of,
    kind, kept_split`` of its duplicates) and split (a duplicate's is its kept figure's), the survivors
    written per key-range partition of their split, the others per rejected partition, into ``stage``; the
    images no shard takes (duplicates, results not chosen) go to a pack. ``released`` locates the images of a
    batch whose tar was deleted (None: read the tar)."""
    batch, names, dups, released = unit
    rows = _locate(store.read_rows(batch), batch, store, released)
    if damaged := _damaged_images(rows, store):
        return RowCounts({}, {}, damaged)
    chosen = pc.is_in(_names(rows), names)
    table = rows.filter(chosen)
    idx = pc.index_in(table["key"], dups["key"])
    dup_of = dups["duplicate_of"].combine_chunks().take(idx)
    is_dup = pc.is_valid(dup_of)
    status = pc.if_else(is_dup, REJECTED, table["status"])
    kind = pc.binary_join_element_wise(dups["kind"].combine_chunks().take(idx), "_duplicate", "")
    columns = {
        "status": status, "reason": pc.if_else(is_dup, kind, table["reason"]),
        "detail": pc.if_else(is_dup, "", table["detail"]), "duplicate_of": dup_of,
        "split": pc.coalesce(dups["kept_split"].combine_chunks().take(idx), decisions.split.of(table)),
    }  # fmt: skip
    for name, column in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, column)
    kept = pc.equal(table["status"], ACCEPTED)
    survivors, rejected = table.filter(kept), table.filter(pc.invert(kept))
    partitions: dict[tuple[str, int], int] = {}
    articles: dict[str, int] = {}
    part_of = partition_of(survivors["key"].combine_chunks(), decisions.splitters)
    for split in pc.unique(survivors["split"]).to_pylist():
        mine = pc.equal(survivors["split"], split).to_numpy(zero_copy_only=False)
        articles[split] = int(pc.count_distinct(survivors.filter(mine)["article"]).as_py())
        for part in np.unique(part_of[mine]).tolist():
            rows_here = survivors.filter(pa.array(mine & (part_of == part)))
            partitions[(split, part)] = len(rows_here)
            _write(rows_here, stage / "rows" / f"{split}-p{part:06d}" / f"{batch}.parquet")
    if len(rejected):
        buckets = _bucket(rejected["article"], decisions.rejected_parts)
        for b in pc.unique(buckets).to_pylist():
            _write(rejected.filter(pc.equal(buckets, b)), stage / "rows" / f"rejected-{b:05d}" / f"{batch}.parquet")
    in_shard = pc.and_(chosen, pc.is_in(rows["key"], survivors["key"]))
    packed = rows.filter(pc.and_(pc.is_valid(rows["image_size"]), pc.invert(in_shard)))
    if len(packed):
        pack = int(hashlib.sha1(batch.encode()).hexdigest()[:8], 16) % decisions.packs
        _write(packed.select(["key", "batch", "image_file", "image_offset", "image_size"]),
               stage / "rows" / f"pack-{pack:05d}" / f"{batch}.parquet")  # fmt: skip
    return RowCounts(partitions, articles)


def _bucket(articles: pa.ChunkedArray, parts: int) -> pa.Array:
    return pa.array([int(hashlib.sha1(a.encode()).hexdigest()[:8], 16) % parts for a in articles.to_pylist()])


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _catalog_table(folder: Path, schema: pa.Schema = CATALOG_SCHEMA) -> pa.Table:
    tables = [pq.read_table(p) for p in sorted(folder.glob("*.parquet"))]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return table.sort_by([("key", "ascending")])


def _write_durable(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    fsync_file(path)


def write_shard(
    unit: tuple[str, int, list[tuple[str, int, int]]], store: WorkStore, stage: Path, settings: Settings
) -> int:
    """Stage 5 for one shard: its samples in key order (slices of its split's key-sorted partitions, see
    ``shard_pieces``), their training text as ``settings.text`` says, and its catalog part; returns the sample
    count."""
    name, part, pieces = unit
    table = pa.concat_tables([_catalog_table(stage / "rows" / folder, store.catalog).slice(lo, hi - lo)
                              for folder, lo, hi in pieces])  # fmt: skip
    table = table.set_column(table.schema.get_field_index("shard"), "shard", pa.array([name] * len(table), pa.string()))
    split = name.rsplit("-", 1)[0]
    tmp = stage / "tmp" / name
    shutil.rmtree(tmp, ignore_errors=True)
    with ShardWriter(tmp, split, max_samples=len(table) + 1) as writer:
        for row in table.to_pylist():
            jpeg = store.out.read_range(row["image_file"], row["image_offset"], row["image_size"])
            text = training_text(row["caption"], row["inline_references"], settings.text, settings.max_reference_chars)
            writer.write(row["key"], jpeg, text, shard_record(row, store.record_fields))
    target = stage / "shards" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    (tmp / f"{split}-000000.tar").replace(target)
    fsync_file(target)
    shutil.rmtree(tmp, ignore_errors=True)
    batch_of = {f"{k}.jpg": b for k, b in zip(table["key"].to_pylist(), table["batch"].to_pylist(), strict=True)}
    _write_index(target, f"shards/{name}", batch_of, stage / store.images / f"index-{part:05d}.parquet")
    catalog = table.select(store.catalog.names).cast(store.catalog)
    _write_durable(catalog, stage / "catalog" / f"part-{part:05d}.parquet")
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


def write_rejected_part(unit: tuple[str, int], stage: Path, schema: pa.Schema = CATALOG_SCHEMA) -> int:
    """Stage 5 for one rejected partition: its catalog part (columns ``schema``) in key order."""
    name, part = unit
    table = _catalog_table(stage / "rows" / name, schema)
    _write_durable(table.select(schema.names).cast(schema), stage / "catalog" / f"part-{part:05d}.parquet")
    return len(table)


def write_single_catalog(parts: list[Path], stage: Path, schema: pa.Schema = CATALOG_SCHEMA) -> int:
    """``catalog.parquet``: the catalog parts one after the other, a few thousand rows at a time."""
    with pq.ParquetWriter(stage / "catalog.parquet", schema) as writer:
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


def sha_codes(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """An integer per distinct (hi, lo) pair (the first 128 bits of a SHA-256), int32."""
    order = np.lexsort((lo, hi))
    new = np.ones(len(order), bool)
    ordered = hi[order]
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    ordered = lo[order]
    new[1:] |= ordered[1:] != ordered[:-1]
    del ordered
    codes = np.empty(len(order), np.int32)
    codes[order] = np.cumsum(new, dtype=np.int32) - 1
    return codes


def trim_memory() -> None:
    """Give the heap's free pages back to the system (glibc keeps them otherwise): the driver's resident
    memory then falls back after each per-figure step instead of staying at its peak."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def duplicates(
    columns: dict[str, list[np.ndarray]], units: list[tuple[str, pa.Array]], store: WorkStore, settings: Settings,
    run: Callable, stage: Path,
) -> pa.Table:  # fmt: skip
    """``key, duplicate_of, kind, batch, split, kept_split`` of every duplicate, from the batches' ``Prints``
    columns (``sha_hi, sha_lo, phash, split``: one array per unit, emptied here as they are joined).

    The driver holds 25 bytes per figure (hashes and split) and the keys of the figures in clusters only:
    clusters are found on figure numbers (batch order, then key order), and only their members' keys are
    fetched, to keep the smallest key of each cluster.
    """
    starts = np.cumsum([0] + [len(part) for part in columns["phash"]])
    splits = _concat(columns.pop("split"), np.int8)
    phash = _concat(columns.pop("phash"), np.uint64)
    codes = sha_codes(_concat(columns.pop("sha_hi"), np.uint64), _concat(columns.pop("sha_lo"), np.uint64))

    files = [thumbs_path(stage, batch) for batch, _ in units]

    def near_edges(values: np.ndarray, mask_units: list, reps: np.ndarray) -> list:
        check = StoredThumbs(files, starts[:-1], reps, settings.dedup.max_pixel_distance)
        return run(near_edges_unit, mask_units, values, settings.dedup.max_distance, check)

    labels = components(codes, phash, settings.dedup.max_distance, near_edges)
    del phash
    members = np.flatnonzero((np.bincount(labels) > 1)[labels]) if len(labels) else np.zeros(0, np.int64)
    codes, labels, splits = codes[members], labels[members], splits[members]
    trim_memory()
    batch_of = np.searchsorted(starts, members, side="right") - 1
    wanted = np.unique(batch_of).tolist()
    fetch = [(*units[b], members[batch_of == b] - starts[b]) for b in wanted]
    keys = run(member_keys, fetch, store)
    table = pa.table({
        "key": pa.concat_arrays([pa.array([], pa.string()), *keys]), "label": labels, "code": codes,
        "batch": np.repeat(np.array([units[b][0] for b in wanted], dtype=object), [len(f[2]) for f in fetch]),
        "split": np.array(SPLITS, dtype=object)[splits],
    }).sort_by([("label", "ascending"), ("key", "ascending")])  # fmt: skip
    label, code = table["label"].to_numpy(), table["code"].to_numpy()
    first = np.r_[True, label[1:] != label[:-1]] if len(label) else np.zeros(0, bool)
    heads = np.flatnonzero(first)
    cluster = np.cumsum(first) - 1  # each row's cluster, numbered in label order
    exact = np.minimum.reduceat(code, heads) == np.maximum.reduceat(code, heads) if len(heads) else np.zeros(0, bool)
    dups = table.filter(pa.array(~first))
    keep_at = pa.array(heads[cluster[~first]])
    kind = np.where(exact[cluster[~first]], "exact", "near")
    return pa.table({
        "key": dups["key"], "duplicate_of": table["key"].take(keep_at), "kind": pa.array(kind, pa.string()),
        "batch": dups["batch"].cast(pa.string()), "split": dups["split"].cast(pa.string()),
        "kept_split": table["split"].take(keep_at).cast(pa.string()),
    })  # fmt: skip


def _chosen(store: WorkStore, listing: pa.Table, run: Callable) -> tuple[Chosen, pa.Array]:
    """Stage 1: the chosen article results of ``store``, and their article keys."""
    held = run(batch_articles, store.batches(), store)
    empty = pa.table({"name": pa.array([], pa.string()), "final_min": pa.array([], pa.bool_()),
                      "final_count": pa.array([], pa.int64()), "batch": pa.array([], pa.string())})  # fmt: skip
    chosen = choose(listing, pa.concat_tables([empty, *held]))
    return chosen, pc.unique(pc.replace_substring_regex(chosen.table["name"], r"\.v[0-9]+$", ""))


def split_rule(store: WorkStore, listing: pa.Table, config: SplitConfig, run: Callable) -> SplitRule:
    """The split rule of the figures of ``store`` (the panel corpus takes its figures' rule: a panel's split is its
    article's, whatever the articles with panels are)."""
    return SplitRule(tiny_corpus_moves(_chosen(store, listing, run)[1], config), config)


def assemble(
    stage: Path, store: WorkStore, listing: pa.Table, settings: Settings, run: Callable, *,
    rule: SplitRule | None = None, panels: dict | None = None,
) -> dict:  # fmt: skip
    """Phase 2 into ``stage`` (see the module docstring); ``run`` maps a stage function over units; ``rule``: the
    split rule (None: the rule of this store's articles); ``panels``: the panel corpus's counts for the report
    (``report.panel_counts``), None without panels."""
    trim_memory()  # what phase 1's listing left
    batches = store.batches()
    chosen, articles = _chosen(store, listing, run)
    names_of, rows = chosen.by_batch(), chosen.rows
    rule = rule or SplitRule(tiny_corpus_moves(articles, settings.split), settings.split)
    units, n_articles = list(names_of.items()), len(articles)
    del chosen, articles
    trim_memory()
    prints = run(batch_fingerprints, units, store, rule, stage)
    sample = sorted(key for p in prints for key in p.sample)
    accepted = sum(len(p.phash) for p in prints)
    columns = {name: [getattr(p, name) for p in prints] for name in ("sha_hi", "sha_lo", "phash", "split")}
    del prints
    dups = duplicates(columns, units, store, settings, run, stage)
    shutil.rmtree(stage / "thumbs", ignore_errors=True)
    step = max(1, settings.shard_size // SAMPLE_EVERY)  # partitions of about a shard each
    trim_memory()
    decisions = Decisions(rule, tuple(sample[step::step]),
                          max(1, -(-(rows - accepted + len(dups)) // REJECTED_PART_ROWS)),
                          max(1, len(batches) // BATCHES_PER_PACK))  # fmt: skip
    dups_of = by_batch(dups.select(["key", "duplicate_of", "kind", "kept_split", "batch"]))
    no_dups = pa.table({"key": pa.array([], pa.string()), "duplicate_of": pa.array([], pa.string()),
                        "kind": pa.array([], pa.string()), "kept_split": pa.array([], pa.string())})  # fmt: skip
    tars, released = store.tars(), store.released()
    located = by_batch(released) if released is not None else {}
    none = pa.array([], pa.string())
    nowhere = LOCATIONS.empty_table()
    row_units = [(b, names_of.get(b, none), dups_of.get(b, no_dups), None if b in tars else located.get(b, nowhere))
                 for b in batches]  # fmt: skip
    partitions: dict[tuple[str, int], int] = {}
    split_articles = dict.fromkeys(SPLITS, 0)
    results = run(batch_rows, row_units, store, decisions, stage)
    damaged = {unit[0]: counts.damaged for unit, counts in zip(row_units, results, strict=True) if counts.damaged}
    if damaged:  # before any image is copied: the build drops these batches and processes their articles again
        raise DamagedWork(damaged)
    for counts in results:
        for part, n in counts.partitions.items():
            partitions[part] = partitions.get(part, 0) + n
        for split, n in counts.articles.items():
            split_articles[split] += n  # an article's chosen result lies in one batch
    del row_units, names_of, units, dups_of, located, released
    trim_memory()
    pieces = shard_pieces(partitions, settings.shard_size)
    shard_list = list(pieces)
    counts = run(write_shard, [(name, i, pieces[name]) for i, name in enumerate(shard_list)], store, stage, settings)
    rejected_units = sorted(p.name for p in (stage / "rows").glob("rejected-*")) if (stage / "rows").exists() else []
    run(write_rejected_part, [(name, len(shard_list) + i) for i, name in enumerate(rejected_units)], stage,
        store.catalog)  # fmt: skip
    pack_units = sorted(p.name for p in (stage / "rows").glob("pack-*")) if (stage / "rows").exists() else []
    run(write_pack, [(name, int(name.removeprefix("pack-"))) for name in pack_units], store, stage)
    (stage / store.images).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(stage / "rows", ignore_errors=True)
    shutil.rmtree(stage / "tmp", ignore_errors=True)
    (stage / "shards").mkdir(exist_ok=True)
    write_sizes(stage / "shards", dict(zip(shard_list, counts, strict=True)))
    (stage / "catalog").mkdir(exist_ok=True)
    parts = sorted((stage / "catalog").glob("part-*.parquet"))
    if rows <= settings.single_file_rows:  # in a worker: the driver's memory stays flat
        run(write_single_catalog, [parts], stage, store.catalog)
    _write_durable(dups.select(["key", "duplicate_of", "kind"]).sort_by([("key", "ascending")]),
                   stage / "clusters.parquet")  # fmt: skip
    return write_report(stage, parts, plots=settings.plots, tokenizer=settings.tokenizer_file, shards=len(shard_list),
                        split_articles=split_articles, articles=n_articles, panels=panels,
                        **cluster_counts(dups))  # fmt: skip


def cluster_counts(dups: pa.Table) -> dict[str, Any]:
    """The report's dedup numbers from the duplicates (``duplicate_of, kind, split, kept_split``)."""
    per_cluster = pa.table({"kept": dups["duplicate_of"], "exact": pc.equal(dups["kind"], "exact"),
                            "leak": pc.not_equal(dups["split"], dups["kept_split"])}).group_by("kept").aggregate(
        [("exact", "all"), ("leak", "any")])  # fmt: skip
    exact = int(pc.sum(pc.cast(per_cluster["exact_all"], pa.int64())).as_py() or 0)
    return {
        "clusters": {"exact": exact, "near": len(per_cluster) - exact},
        "duplicates": len(dups),
        "leaks": int(pc.sum(pc.cast(per_cluster["leak_any"], pa.int64())).as_py() or 0),
    }
