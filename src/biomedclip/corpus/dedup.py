"""Exact and near-duplicate figure images: which figures to keep, and the duplicate clusters.

Exact duplicates share the SHA-256 of the original file; near duplicates have 64-bit perceptual hashes
(``imagehash.phash``) within ``max_distance`` bits (``<=``). Clusters are the connected components of both
relations; in each cluster the figure with the smallest key is kept, so the choice does not depend on order.

Near-duplicate candidates come from multi-index hashing: the 64 bits are cut into ``m`` bands; two hashes
within ``d`` bits differ in at most ``r = d // m`` bits of some band (pigeonhole), so every pair is found by
grouping, per band and per choice of ``r`` masked bit positions, the hashes whose remaining band bits are
equal; each candidate pair is then verified exactly. ``plan_bands`` picks ``m`` from the number of distinct
hashes so that the expected group size stays small: the work per figure stays flat as the corpus grows
(short bands of 13 bits for 100k hashes would put ~12 unrelated hashes in every group, ~120 at 1M).
Identical hashes are collapsed first, and groups larger than ``LARGE_GROUP`` (a heavy cluster of near-blank
panels) are verified block-wise in numpy and reduced to a spanning forest, so they cost no Python per pair.
Everything works on numpy arrays (8 bytes per hash, 8 per SHA code), never on Python objects per figure.

A near pair is a duplicate only when its pixels agree too (``corpus.pixels``: the distance of two tiny grey
thumbnails): distinct medical images of one modality often lie within a few bits. The check runs where the
candidate pairs are found (``near_pairs_for_masks``, a worker in a build), on each pair within ``max_distance``
bits before the pairs are reduced to a spanning forest; a figure without a thumbnail (work written before
thumbnails) is confirmed by its hash alone. The search runs over one figure per distinct SHA-256 (copies of
one file are exact duplicates already), so figures with one hash but different pixels stay apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import combinations, pairwise
from math import comb

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from biomedclip.corpus.pixels import MAX_PIXEL_DISTANCE, normalised, pair_distances, parse_thumbs

LARGE_GROUP = 64


@dataclass(frozen=True)
class DedupConfig:
    """``max_distance``: Hamming distance (bits of 64) up to which two perceptual hashes are near-duplicate
    candidates; ``max_pixel_distance``: the thumbnail distance (``corpus.pixels``) up to which a candidate is
    confirmed."""

    max_distance: int = 4
    max_pixel_distance: float = MAX_PIXEL_DISTANCE


@dataclass(frozen=True)
class Fingerprint:
    """What dedup needs of a figure: its unique key, file SHA-256, perceptual hash (16 hex digits) and
    thumbnail (``corpus.pixels``, hex; None: confirmed by its hash alone)."""

    key: str
    sha256: str
    phash: str
    thumb: str | None = None


Confirm = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``confirm(a, b)``: for index arrays into the searched hashes, whether each pair's pixels agree (bool)."""
PAIR_CHUNK = 65_536


class ThumbCheck:
    """``Confirm`` over thumbnails held in memory: ``thumbs`` (uint8 rows, one per searched hash) and ``present``
    (False: no thumbnail, the pair is confirmed by its hash)."""

    def __init__(self, thumbs: np.ndarray, present: np.ndarray, max_pixel_distance: float) -> None:
        self.thumbs, self.present, self.limit = thumbs, present, max_pixel_distance

    def rows(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Thumbnails and presence of the hashes at ``idx``."""
        return self.thumbs[idx], self.present[idx]

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ok = np.ones(len(a), bool)
        for lo in range(0, len(a), PAIR_CHUNK):
            ta, pa_ = self.rows(a[lo : lo + PAIR_CHUNK])
            tb, pb = self.rows(b[lo : lo + PAIR_CHUNK])
            close = pair_distances(normalised(ta), normalised(tb)) <= self.limit
            ok[lo : lo + PAIR_CHUNK] = close | ~(pa_ & pb)
        return ok


@dataclass(frozen=True)
class Cluster:
    """A set of duplicate figures: ``kept`` survives, ``duplicates`` are rejected; ``kind`` exact|near."""

    kept: str
    duplicates: tuple[str, ...]
    kind: str


def plan_bands(n: int, max_distance: int) -> tuple[int, int]:
    """``(bands, masked bits per band)`` with the least expected work per hash for ``n`` distinct hashes."""
    best: tuple[float, int, int] = (float("inf"), max_distance + 1, 0)
    for m in range(1, max_distance + 2):
        r, w = max_distance // m, 64 // m
        if comb(w, r) > 4096:
            continue
        cost = m * comb(w, r) * (1.0 + n / 2.0 ** (w - r))
        best = min(best, (cost, m, r))
    return best[1], best[2]


def band_masks(m: int, r: int) -> list[np.uint64]:
    """Per band, every mask that keeps the band's bits except ``r`` of them."""
    bounds = [round(i * 64 / m) for i in range(m + 1)]
    masks = []
    for lo, hi in pairwise(bounds):
        band = ((1 << (hi - lo)) - 1) << lo
        for drop in combinations(range(lo, hi), r):
            masks.append(np.uint64(band & ~sum(1 << b for b in drop)))
    return masks


def _popcount_ok(a: np.ndarray, b: np.ndarray, d: int) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(a, b)) <= d


def _large_group_edges(
    idx: np.ndarray, values: np.ndarray, d: int, confirm: Confirm | None
) -> tuple[np.ndarray, np.ndarray]:
    """Verified near pairs of one large group, reduced to edges of a spanning forest."""
    v = values[idx]
    rows, cols = [], []
    for start in range(0, len(idx), 1024):
        block = v[start : start + 1024]
        hit = np.bitwise_count(np.bitwise_xor(block[:, None], v[None, :])) <= d
        i, j = np.nonzero(hit)
        if confirm is not None:
            later = j > i + start  # each pair once; a figure's own loop adds nothing
            i, j = i[later], j[later]
            ok = confirm(idx[i + start], idx[j])
            i, j = i[ok], j[ok]
        rows.append(i + start)
        cols.append(j)
    graph = coo_matrix((np.ones(sum(len(r) for r in rows), bool), (np.concatenate(rows), np.concatenate(cols))),
                       shape=(len(idx), len(idx)))  # fmt: skip
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, -1)
    order = np.arange(len(idx))[::-1]
    first[labels[order]] = order
    keep = first[labels] != np.arange(len(idx))
    return idx[keep], idx[first[labels][keep]]


def spanning_forest(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges with the same connected components as ``(a, b)``, at most one per node: each node to its
    component's smallest node."""
    if not len(a):
        return a, b
    nodes, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    graph = coo_matrix((np.ones(len(a), bool), (inverse[: len(a)], inverse[len(a) :])), shape=(len(nodes),) * 2)
    labels = connected_components(graph, directed=False)[1]
    root = np.full(labels.max() + 1, len(nodes))
    np.minimum.at(root, labels, np.arange(len(nodes)))
    keep = root[labels] != np.arange(len(nodes))
    return nodes[keep], nodes[root[labels][keep]]


def near_pairs_for_masks(
    values: np.ndarray, masks: list[np.uint64], d: int, confirm: Confirm | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Verified edges ``(a, b)`` between indices of ``values`` (hashes) that share a masked key, within ``d``
    bits and confirmed on pixels (``confirm``; None: by the hash alone), reduced after each mask to a spanning
    forest: a dense cluster (near-blank panels) costs one edge per member, not one per pair."""
    forest = (np.empty(0, np.int64), np.empty(0, np.int64))
    for mask in masks:
        out_a, out_b = [forest[0]], [forest[1]]
        keys = values & mask
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        sizes = np.diff(np.r_[starts, len(keys)])
        run_of = np.repeat(np.arange(len(starts)), sizes)
        small = sizes[run_of] <= LARGE_GROUP
        for k in range(1, int(min(sizes.max(initial=1), LARGE_GROUP))):
            i = np.flatnonzero(small[:-k] & (run_of[:-k] == run_of[k:]))
            a, b = order[i], order[i + k]
            ok = _popcount_ok(values[a], values[b], d)
            a, b = a[ok], b[ok]
            if confirm is not None and len(a):
                ok = confirm(a, b)
                a, b = a[ok], b[ok]
            out_a.append(a)
            out_b.append(b)
        for s in np.flatnonzero(sizes > LARGE_GROUP):
            a, b = _large_group_edges(order[starts[s] : starts[s] + sizes[s]], values, d, confirm)
            out_a.append(a)
            out_b.append(b)
        forest = spanning_forest(np.concatenate(out_a), np.concatenate(out_b))
    return forest


def mask_units(n: int, max_distance: int) -> list[list[np.uint64]]:
    """The masks of ``plan_bands(n, d)``, cut into independent units of work (one per band)."""
    m, r = plan_bands(n, max_distance)
    masks = band_masks(m, r)
    per = max(1, len(masks) // m)
    return [masks[i : i + per] for i in range(0, len(masks), per)]


def components(
    sha_codes: np.ndarray, phashes: np.ndarray, max_distance: int, near_edges=None, confirm: Confirm | None = None
) -> np.ndarray:
    """Per figure its cluster label (int32).

    ``sha_codes``: a non-negative integer per distinct SHA-256; ``phashes``: uint64. The near search runs over
    the first figure of each SHA-256 (``reps``). ``near_edges(values, units, reps)`` computes the confirmed
    pairs among ``values = phashes[reps]`` (default: here, in this process, with ``confirm`` over figure
    numbers). The graph holds only the edges between different figures (a few per duplicate), 4-byte indices.
    """
    n = len(sha_codes)
    if n == 0:
        return np.zeros(0, np.int32)
    idx = np.arange(n, dtype=np.int32)
    first_sha = np.full(int(sha_codes.max()) + 1, n, np.int32)
    np.minimum.at(first_sha, sha_codes, idx)
    root = first_sha[sha_codes]
    del first_sha
    edges = [(idx, root)]
    if max_distance >= 0:
        reps = np.flatnonzero(root == idx).astype(np.int32)
        values = phashes[reps]
        units = mask_units(len(values), max_distance)
        if near_edges is None:
            check = None if confirm is None else (lambda a, b: confirm(reps[a], reps[b]))
            pairs = [near_pairs_for_masks(values, unit, max_distance, check) for unit in units]
        else:
            pairs = near_edges(values, units, reps)
        edges += [(reps[a], reps[b]) for a, b in pairs]
        del values, pairs, reps
    del root
    edges = [(a[a != b], b[a != b]) for a, b in edges]  # a figure's own loop adds nothing
    a = np.concatenate([a for a, _ in edges]).astype(np.int32)
    b = np.concatenate([b for _, b in edges]).astype(np.int32)
    del edges, idx
    graph = coo_matrix((np.ones(len(a), bool), (a, b)), shape=(n, n))
    del a, b
    return connected_components(graph, directed=False)[1]


def cluster_labels(
    sha_codes: np.ndarray, phashes: np.ndarray, max_distance: int, near_edges=None, confirm: Confirm | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per figure (indices in key order): the index of its cluster's kept figure, and whether its cluster is exact.

    Arguments as :func:`components`.
    """
    n = len(sha_codes)
    if n == 0:
        return np.arange(0), np.zeros(0, bool)
    labels = components(sha_codes, phashes, max_distance, near_edges, confirm)
    kept = np.full(labels.max() + 1, n)
    np.minimum.at(kept, labels, np.arange(n))
    lo = np.full(labels.max() + 1, np.iinfo(np.int64).max)
    hi = np.full(labels.max() + 1, np.iinfo(np.int64).min)
    np.minimum.at(lo, labels, sha_codes)
    np.maximum.at(hi, labels, sha_codes)
    return kept[labels], (lo == hi)[labels]


def find_duplicates(figures: Iterable[Fingerprint], config: DedupConfig = DedupConfig()) -> list[Cluster]:
    """Group duplicate figures; returns clusters (two or more figures) sorted by kept key."""
    figures = sorted(figures, key=lambda f: f.key)
    _, sha_codes = np.unique([f.sha256 for f in figures], return_inverse=True)
    phashes = np.array([int(f.phash, 16) for f in figures], dtype=np.uint64)
    thumbs, present = parse_thumbs([f.thumb for f in figures])
    confirm = ThumbCheck(thumbs, present, config.max_pixel_distance)
    kept, exact = cluster_labels(sha_codes.astype(np.int64), phashes, config.max_distance, confirm=confirm)
    members: dict[int, list[str]] = {}
    for i, root in enumerate(kept.tolist()):
        if root != i:
            members.setdefault(root, []).append(figures[i].key)
    return [Cluster(figures[root].key, tuple(keys), "exact" if exact[root] else "near")
            for root, keys in sorted(members.items())]  # fmt: skip
