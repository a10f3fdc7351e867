"""Contamination: which images of an evaluation dataset are in a corpus, as exact or near copies.

Exact: the same decoded pixels (``images.pixel_digest`` of the normalised image, as the catalog's
``pixel_sha256``). Near: a copy changed as publishing changes figures (resized, re-compressed, up to 5 % cropped,
grey, padded), found in two steps:

1. Candidates by hash index, never all pairs. Each evaluation image gives variants: its content
   (``pixels.content``: a uniform border trimmed, as the corpus hashes its figures) cropped by up to 5 % on
   each side (``CROPS``), so a cropped copy in the corpus meets a variant cropped nearly like it; a small image
   (MedMNIST's 28 px) also gives each crop as a padded, resized and re-compressed copy reaches the corpus
   (``_remnants``): there one pixel of blurred border, which the trim leaves partly, is a large share of the
   picture. The variants' perceptual hashes form a multi-index (``dedup.plan_bands``: bands with masked bits)
   held in memory; the corpus catalog streams through it a batch of rows at a time, each figure's hash looked
   up per mask by binary search, so the work per corpus figure depends on the size of the evaluation set only,
   not on the corpus.
2. Each candidate within ``max_distance`` bits is confirmed on pixels: the distance (``corpus.pixels``) of the
   corpus figure's thumbnail to the nearest matching variant's thumbnail, on the thumbnails' inner 6 x 6 pixels
   (``CORE``: a border remnant or a crop lands in the outer ring), at most ``max_pixel_distance``.

Both thresholds were chosen by measurement (``benchmarks/overlap.py``): 10 bits and 0.30 find 98.4 % of planted
copies of real evaluation images (resized 50-150 %, JPEG 60-95, up to 5 % cropped, grey, padded, and all at
once), with no match in 727k pairs of an evaluation image and a real image of another dataset. Within one
modality at 28 px (PneumoniaMNIST X-rays against each other) distinct pictures are confused more often; see
the benchmark's figures.

Corpus rows without ``phash``/``thumb``/``pixel_sha256`` (catalogs built before these columns) are skipped and
counted (``unchecked``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import numpy as np
from PIL import Image

from biomedclip.corpus.dedup import band_masks, plan_bands
from biomedclip.corpus.images import ImageConfig, perceptual_hash, process_image
from biomedclip.corpus.pixels import (
    THUMB_BYTES,
    THUMB_SIDE,
    content,
    normalised,
    pair_distances,
    parse_thumbs,
    thumbnail,
)

CUTS: tuple[tuple[float, float], ...] = ((0, 0), (0.025, 0), (0, 0.025), (0.05, 0), (0, 0.05), (0.025, 0.025))
"""Shares cut from (left, right), and from (top, bottom): the crops of up to 5 % each evaluation image tries."""
CROPS: tuple[tuple[float, float, float, float], ...] = tuple((x[0], y[0], x[1], y[1]) for x, y in product(CUTS, CUTS))
SMALL_SIDE = 96
"""Images with a shorter side under this (MedMNIST's 28 px) also try the border remnants of a padded copy: one
pixel of a border blurred by resizing and re-compression is a large share of them, and the trim of a uniform
border leaves it partly, on some sides."""
REMNANT_COLOURS = (0, 255)
REMNANT_SCALES = (0.5, 1.0)
REMNANT_QUALITY = 75
CORE = np.array([r * THUMB_SIDE + c for r in range(1, THUMB_SIDE - 1) for c in range(1, THUMB_SIDE - 1)])
"""The thumbnail pixels compared to confirm a candidate: all but the outer ring, where a border remnant or a
crop of a few per cent lands."""
BATCH_ROWS = 65_536
CATALOG_COLUMNS = ["key", "status", "split", "pixel_sha256", "phash", "thumb"]


@dataclass(frozen=True)
class OverlapConfig:
    """``max_distance``: bits between a corpus hash and a variant's for a candidate; ``max_pixel_distance``: the
    thumbnail distance that confirms it; ``splits``: the corpus splits compared (default: every split)."""

    max_distance: int = 10
    max_pixel_distance: float = 0.30
    splits: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class EvalPrints:
    """The fingerprints of an evaluation set: per item its id and pixel digest; per variant its item, perceptual
    hash (uint64) and thumbnail (uint8 row)."""

    ids: list[str]
    digests: list[str]
    item: np.ndarray
    hashes: np.ndarray
    thumbs: np.ndarray


@dataclass
class OverlapResult:
    """Rows ``{"key", "eval", "kind", "distance"}`` and the counts of the comparison."""

    rows: list[dict] = field(default_factory=list)
    evaluated: int = 0
    corpus_figures: int = 0
    unchecked: int = 0
    candidates: int = 0

    def found(self, kind: str | None = None) -> int:
        """Evaluation images with at least one match (of ``kind``, or of any kind)."""
        return len({r["eval"] for r in self.rows if kind is None or r["kind"] == kind})


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _boxes(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The distinct pixel boxes ``CROPS`` cut from a ``width`` x ``height`` image."""
    boxes = []
    for left, top, right, bottom in CROPS:
        box = (round(left * width), round(top * height), width - round(right * width), height - round(bottom * height))
        if box not in boxes:
            boxes.append(box)
    return boxes


def _remnants(image: Image.Image) -> Iterator[Image.Image]:
    """``image`` as a small padded copy reaches the corpus: a 1 px border of each ``REMNANT_COLOURS``, scaled by
    each ``REMNANT_SCALES``, re-compressed, then trimmed as the corpus trims (``pixels.content``)."""
    for colour in REMNANT_COLOURS:
        framed = Image.new("RGB", (image.width + 2, image.height + 2), (colour,) * 3)
        framed.paste(image, (1, 1))
        for scale in REMNANT_SCALES:
            size = (max(1, round(framed.width * scale)), max(1, round(framed.height * scale)))
            scaled = framed.resize(size, Image.Resampling.BICUBIC) if size != framed.size else framed
            out = io.BytesIO()
            scaled.save(out, format="JPEG", quality=REMNANT_QUALITY)
            with Image.open(out) as decoded:
                yield content(decoded.convert("RGB"))


def variants(image: Image.Image) -> Iterator[Image.Image]:
    """``image``'s content cropped by each of ``CROPS``; for a small image (shorter side under ``SMALL_SIDE``),
    each crop also with the border remnants of a padded copy (``_remnants``)."""
    inner = content(image)
    small = min(inner.size) < SMALL_SIDE
    for box in _boxes(*inner.size):
        crop = inner.crop(box) if box != (0, 0, *inner.size) else inner
        yield crop
        if small:
            yield from _remnants(crop)


def eval_prints(items: Iterable[tuple[str, Image.Image]], config: ImageConfig | None = None) -> EvalPrints:
    """Fingerprint evaluation images ``(id, image)`` as the corpus fingerprints its figures (``process_image``)."""
    config = config or ImageConfig()
    ids, digests, item, hashes, thumbs = [], [], [], [], []
    for i, (name, image) in enumerate(items):
        processed = process_image(_png(image.convert("RGB")), config)
        ids.append(name)
        digests.append(processed.pixel_sha256)
        with Image.open(io.BytesIO(processed.jpeg)) as decoded:
            for variant in variants(decoded.convert("RGB")):
                item.append(i)
                hashes.append(int(perceptual_hash(variant), 16))
                thumbs.append(np.frombuffer(thumbnail(variant), np.uint8))
    return EvalPrints(ids, digests, np.array(item, np.int64), np.array(hashes, np.uint64),
                      np.stack(thumbs) if thumbs else np.zeros((0, THUMB_BYTES), np.uint8))  # fmt: skip


class VariantIndex:
    """The multi-index over the variants' hashes: per mask the sorted masked keys and their variant numbers."""

    def __init__(self, hashes: np.ndarray, max_distance: int) -> None:
        m, r = plan_bands(len(hashes), max_distance)
        self.hashes, self.max_distance = hashes, max_distance
        self.masks = band_masks(m, r)
        self.tables = []
        for mask in self.masks:
            keys = hashes & mask
            order = np.argsort(keys, kind="stable")
            self.tables.append((keys[order], order))

    def candidates(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs ``(corpus position, variant)`` within ``max_distance`` bits, each once."""
        found_a, found_b = [], []
        for mask, (keys, order) in zip(self.masks, self.tables, strict=True):
            query = hashes & mask
            lo = np.searchsorted(keys, query, side="left")
            hi = np.searchsorted(keys, query, side="right")
            counts = hi - lo
            if not counts.any():
                continue
            a = np.repeat(np.arange(len(hashes)), counts)
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            b = order[np.repeat(lo, counts) + offsets]
            ok = np.bitwise_count(hashes[a] ^ self.hashes[b]) <= self.max_distance
            found_a.append(a[ok])
            found_b.append(b[ok])
        if not found_a:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        pairs = np.unique(np.stack([np.concatenate(found_a), np.concatenate(found_b)]), axis=1)
        return pairs[0], pairs[1]


def compare_batch(rows: dict[str, list], prints: EvalPrints, index: VariantIndex, by_digest: dict[str, list[int]],
                  config: OverlapConfig, result: OverlapResult) -> None:  # fmt: skip
    """Add the matches of one batch of corpus rows (columns of ``CATALOG_COLUMNS``) to ``result``."""
    compared = [status == "accepted" and split in config.splits for status, split in zip(rows["status"], rows["split"],
                                                                                       strict=True)]  # fmt: skip
    usable = [i for i, ok in enumerate(compared) if ok and rows["phash"][i] and rows["thumb"][i]]
    accepted = sum(compared)
    result.corpus_figures += accepted
    result.unchecked += accepted - len(usable)
    exact: set[tuple[int, int]] = set()
    for i in usable:
        for item in by_digest.get(rows["pixel_sha256"][i] or "", ()):
            exact.add((i, item))
            result.rows.append({"key": rows["key"][i], "eval": prints.ids[item], "kind": "exact", "distance": 0.0})
    if not usable:
        return
    positions = np.array(usable)
    hashes = np.array([int(rows["phash"][i], 16) for i in usable], np.uint64)
    a, variant = index.candidates(hashes)
    result.candidates += len(a)
    if not len(a):
        return
    thumbs, _ = parse_thumbs([rows["thumb"][i] for i in positions[np.unique(a)]])
    where = np.searchsorted(np.unique(a), a)
    distance = pair_distances(normalised(thumbs[where][:, CORE]), normalised(prints.thumbs[variant][:, CORE]))
    item = prints.item[variant]
    best: dict[tuple[int, int], float] = {}
    for corpus, it, d in zip(positions[a].tolist(), item.tolist(), distance.tolist(), strict=True):
        if d <= config.max_pixel_distance and (corpus, it) not in exact:
            best[(corpus, it)] = min(d, best.get((corpus, it), d))
    for (corpus, it), d in sorted(best.items()):
        result.rows.append({"key": rows["key"][corpus], "eval": prints.ids[it], "kind": "near",
                            "distance": round(float(d), 4)})  # fmt: skip


def catalog_batches(catalog: Path, columns: list[str] = CATALOG_COLUMNS) -> Iterator[dict[str, list]]:
    """The catalog's rows ``BATCH_ROWS`` at a time (a Parquet file or a folder of parts), as column lists."""
    import pyarrow.dataset as ds

    dataset = ds.dataset(catalog, format="parquet")
    missing = [c for c in columns if c not in dataset.schema.names]
    present = [c for c in columns if c in dataset.schema.names]
    for batch in dataset.to_batches(columns=present, batch_size=BATCH_ROWS):
        rows = batch.to_pydict()
        for name in missing:
            rows[name] = [None] * batch.num_rows
        yield rows


def find_overlap(
    prints: EvalPrints, batches: Iterable[dict[str, list]], config: OverlapConfig = OverlapConfig(),
    on_batch: Callable[[OverlapResult], None] | None = None,
) -> OverlapResult:  # fmt: skip
    """Every match between the evaluation set and the corpus rows; rows sorted by evaluation id, then key."""
    index = VariantIndex(prints.hashes, config.max_distance)
    by_digest: dict[str, list[int]] = {}
    for i, digest in enumerate(prints.digests):
        by_digest.setdefault(digest, []).append(i)
    result = OverlapResult(evaluated=len(prints.ids))
    for rows in batches:
        compare_batch(rows, prints, index, by_digest, config, result)
        if on_batch is not None:
            on_batch(result)
    result.rows.sort(key=lambda r: (r["eval"], r["kind"], r["key"]))
    return result
