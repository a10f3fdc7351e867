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
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations, pairwise
from math import comb

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

LARGE_GROUP = 64


@dataclass(frozen=True)
class DedupConfig:
    """``max_distance``: Hamming distance (bits of 64) up to which two perceptual hashes are near duplicates."""

    max_distance: int = 4


@dataclass(frozen=True)
class Fingerprint:
    """What dedup needs of a figure: its unique key, file SHA-256 and perceptual hash (16 hex digits)."""

    key: str
    sha256: str
    phash: str


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


def _band_masks(m: int, r: int) -> list[np.uint64]:
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


def _large_group_edges(idx: np.ndarray, values: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Verified near pairs of one large group, reduced to edges of a spanning forest."""
    v = values[idx]
    rows, cols = [], []
    for start in range(0, len(idx), 1024):
        block = v[start : start + 1024]
        hit = np.bitwise_count(np.bitwise_xor(block[:, None], v[None, :])) <= d
        i, j = np.nonzero(hit)
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


def near_pairs_for_masks(values: np.ndarray, masks: list[np.uint64], d: int) -> tuple[np.ndarray, np.ndarray]:
    """Verified edges ``(a, b)`` between indices of ``values`` (distinct hashes) that share a masked key,
    reduced after each mask to a spanning forest: a dense cluster (near-blank panels) costs one edge per member,
    not one per pair."""
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
            out_a.append(a[ok])
            out_b.append(b[ok])
        for s in np.flatnonzero(sizes > LARGE_GROUP):
            a, b = _large_group_edges(order[starts[s] : starts[s] + sizes[s]], values, d)
            out_a.append(a)
            out_b.append(b)
        forest = spanning_forest(np.concatenate(out_a), np.concatenate(out_b))
    return forest


def mask_units(n: int, max_distance: int) -> list[list[np.uint64]]:
    """The masks of ``plan_bands(n, d)``, cut into independent units of work (one per band)."""
    m, r = plan_bands(n, max_distance)
    masks = _band_masks(m, r)
    per = max(1, len(masks) // m)
    return [masks[i : i + per] for i in range(0, len(masks), per)]


def _first_and_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct ``values`` (sorted), the first index of each, and each value's position among them (int32)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new = np.ones(len(order), bool)
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    distinct = ordered[new]
    del ordered
    inverse = np.empty(len(order), np.int32)
    inverse[order] = np.cumsum(new, dtype=np.int32) - 1
    first = order[new].astype(np.int32)  # the stable sort puts each value's first index first
    return distinct, first, inverse


def components(sha_codes: np.ndarray, phashes: np.ndarray, max_distance: int, near_edges=None) -> np.ndarray:
    """Per figure its cluster label (int32).

    ``sha_codes``: a non-negative integer per distinct SHA-256; ``phashes``: uint64. ``near_edges(values,
    units)`` computes the verified pairs among distinct hashes (default: here, in this process). The graph
    holds only the edges between different figures (a few per duplicate), with 4-byte indices.
    """
    n = len(sha_codes)
    if n == 0:
        return np.zeros(0, np.int32)
    idx = np.arange(n, dtype=np.int32)
    first_sha = np.full(int(sha_codes.max()) + 1, n, np.int32)
    np.minimum.at(first_sha, sha_codes, idx)
    edges = [(idx, first_sha[sha_codes])]
    del first_sha
    if max_distance >= 0:
        values, first_ph, inv_ph = _first_and_inverse(phashes)
        edges.append((idx, first_ph[inv_ph]))
        del inv_ph
        units = mask_units(len(values), max_distance)
        if near_edges is None:
            pairs = [near_pairs_for_masks(values, unit, max_distance) for unit in units]
        else:
            pairs = near_edges(values, units)
        edges += [(first_ph[a], first_ph[b]) for a, b in pairs]
        del values, first_ph, pairs
    edges = [(a[a != b], b[a != b]) for a, b in edges]  # a figure's own loop adds nothing
    a = np.concatenate([a for a, _ in edges]).astype(np.int32)
    b = np.concatenate([b for _, b in edges]).astype(np.int32)
    del edges, idx
    graph = coo_matrix((np.ones(len(a), bool), (a, b)), shape=(n, n))
    del a, b
    return connected_components(graph, directed=False)[1]


def cluster_labels(
    sha_codes: np.ndarray, phashes: np.ndarray, max_distance: int, near_edges=None
) -> tuple[np.ndarray, np.ndarray]:
    """Per figure (indices in key order): the index of its cluster's kept figure, and whether its cluster is exact.

    Arguments as :func:`components`.
    """
    n = len(sha_codes)
    if n == 0:
        return np.arange(0), np.zeros(0, bool)
    labels = components(sha_codes, phashes, max_distance, near_edges)
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
    kept, exact = cluster_labels(sha_codes.astype(np.int64), phashes, config.max_distance)
    members: dict[int, list[str]] = {}
    for i, root in enumerate(kept.tolist()):
        if root != i:
            members.setdefault(root, []).append(figures[i].key)
    return [Cluster(figures[root].key, tuple(keys), "exact" if exact[root] else "near")
            for root, keys in sorted(members.items())]  # fmt: skip
