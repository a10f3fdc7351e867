"""Exact and near-duplicate figure images: which figures to keep, and the duplicate clusters.

Exact duplicates share the SHA-256 of the original file; near duplicates have 64-bit perceptual hashes
(``imagehash.phash``) within ``max_distance`` bits. Candidate pairs come from banding (pigeonhole: two hashes
within ``d`` bits agree exactly on at least one of ``d + 1`` disjoint bands), so the cost grows with the
number of figures, not its square. In each cluster the figure with the smallest key is kept, so the choice
does not depend on processing order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass


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


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while x != root:
            self.parent[x], x = root, self.parent.get(x, x)
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


def _bands(phash: str, n_bands: int) -> list[tuple[int, int]]:
    value = int(phash, 16)
    width = -(-64 // n_bands)
    return [(i, (value >> (i * width)) & ((1 << width) - 1)) for i in range(n_bands)]


def find_duplicates(figures: Iterable[Fingerprint], config: DedupConfig = DedupConfig()) -> list[Cluster]:
    """Group duplicate figures; returns clusters (two or more figures) sorted by kept key."""
    figures = sorted(figures, key=lambda f: f.key)
    uf = _UnionFind()
    exact: set[frozenset[str]] = set()
    by_sha: dict[str, list[str]] = defaultdict(list)
    for fig in figures:
        by_sha[fig.sha256].append(fig.key)
    for keys in by_sha.values():
        for other in keys[1:]:
            uf.union(keys[0], other)
        if len(keys) > 1:
            exact.add(frozenset(keys))
    if config.max_distance >= 0:
        by_phash: dict[str, list[str]] = defaultdict(list)
        for fig in figures:
            by_phash[fig.phash].append(fig.key)
        for keys in by_phash.values():
            for other in keys[1:]:
                uf.union(keys[0], other)
        buckets: dict[tuple[int, int], list[str]] = defaultdict(list)
        for phash in by_phash:
            for band in _bands(phash, config.max_distance + 1):
                buckets[band].append(phash)
        for hashes in buckets.values():
            for i, a in enumerate(hashes):
                for b in hashes[i + 1 :]:
                    if (int(a, 16) ^ int(b, 16)).bit_count() <= config.max_distance:
                        uf.union(by_phash[a][0], by_phash[b][0])
    groups: dict[str, list[str]] = defaultdict(list)
    for fig in figures:
        groups[uf.find(fig.key)].append(fig.key)
    clusters = []
    for root, keys in sorted(groups.items()):
        if len(keys) > 1:
            kind = "exact" if frozenset(keys) in exact else "near"
            clusters.append(Cluster(kept=root, duplicates=tuple(k for k in keys if k != root), kind=kind))
    return clusters
