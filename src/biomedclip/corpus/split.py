"""Deterministic train/val/test split by article (hash of the PMCID), so no article spans two splits.

Defaults follow PMC-15M (train 13.9M / dev 13.6k / test 725,739 of 15.28M pairs): val 0.09 %, test 4.75 %.
At that rate a small corpus would get no validation article at all, so when a split with a non-zero ratio
ends up empty and there are at least as many articles as such splits, the train articles whose hash is
smallest are moved there (one per empty split, test first). The hash assignment itself never depends on the
other articles, so an article keeps its split as a corpus grows, except for those few moved in tiny corpora.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class SplitConfig:
    """Share of articles per split (normalised), and the salt of the hash (change it for another split)."""

    train: float = 0.9516
    val: float = 0.0009
    test: float = 0.0475
    salt: str = "biomedclip-split-v1"


def article_hash(pmcid: str, salt: str) -> float:
    """A uniform number in [0, 1) derived from ``pmcid`` alone."""
    digest = hashlib.sha256(f"{salt}:{pmcid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(pmcids: Iterable[str], config: SplitConfig = SplitConfig()) -> dict[str, str]:
    """Map each PMCID to ``train``, ``val`` or ``test`` (see the module docstring for tiny corpora)."""
    total = config.train + config.val + config.test
    bounds = [("test", config.test / total), ("val", (config.test + config.val) / total), ("train", 1.0)]
    hashes = {p: article_hash(p, config.salt) for p in sorted(set(pmcids))}
    result = {p: next(name for name, upper in bounds if u < upper) for p, u in hashes.items()}
    wanted = [s for s in ("test", "val") if getattr(config, s) > 0]
    if len(hashes) >= len(wanted) + (1 if config.train > 0 else 0):
        for split in wanted:
            if split not in result.values():
                donors = sorted((u, p) for p, u in hashes.items() if result[p] == "train")
                if donors:
                    result[donors[0][1]] = split
    return result


def cross_split_clusters(clusters: Iterable, split_of_key: dict[str, str]) -> int:
    """How many duplicate clusters (from ``dedup.find_duplicates``) have members in more than one split.

    Only each cluster's kept figure is accepted, so such clusters never put the same image in two splits;
    this count says how many cross-split leaks dedup removed.
    """
    return sum(1 for c in clusters if len({split_of_key[k] for k in (c.kept, *c.duplicates)}) > 1)
