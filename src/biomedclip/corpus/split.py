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
    """A uniform number in [0, 1) derived from ``pmcid`` (or any key) and ``salt`` alone (also the folder split's)."""
    digest = hashlib.sha256(f"{salt}:{pmcid}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def hash_split(u: float, config: SplitConfig) -> str:
    """The split of an article whose ``article_hash`` is ``u`` (before the tiny-corpus rule)."""
    total = config.train + config.val + config.test
    if u < config.test / total:
        return "test"
    return "val" if u < (config.test + config.val) / total else "train"


def moved_articles(
    articles: int, present: set[str], smallest_train: list[tuple[float, str]], config: SplitConfig
) -> dict[str, str]:
    """The tiny-corpus rule from aggregates: ``articles`` listed, the splits ``present`` after hashing and the
    train articles with the smallest hashes (at least two); returns the articles moved, and where."""
    wanted = [s for s in ("test", "val") if getattr(config, s) > 0]
    moved: dict[str, str] = {}
    if articles < len(wanted) + (1 if config.train > 0 else 0):
        return moved
    donors = sorted(smallest_train)
    for split in wanted:
        if split not in present and donors:
            moved[donors.pop(0)[1]] = split
    return moved


def assign_splits(pmcids: Iterable[str], config: SplitConfig = SplitConfig()) -> dict[str, str]:
    """Map each PMCID to ``train``, ``val`` or ``test`` (see the module docstring for tiny corpora)."""
    hashes = {p: article_hash(p, config.salt) for p in sorted(set(pmcids))}
    result = {p: hash_split(u, config) for p, u in hashes.items()}
    smallest = sorted((u, p) for p, u in hashes.items() if result[p] == "train")[:2]
    result.update(moved_articles(len(hashes), set(result.values()), smallest, config))
    return result
