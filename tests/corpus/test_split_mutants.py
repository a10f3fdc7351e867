"""Split rules exactly at their boundaries (docs/MUTATION.md): the hash thresholds, the hash itself and the
tiny-corpus moves, with expectations worked out by hand or from hashlib directly."""

from __future__ import annotations

import hashlib

import pytest

from biomedclip.corpus.split import SplitConfig, article_hash, assign_splits, hash_split, moved_articles

QUARTERS = SplitConfig(train=2.0, val=1.0, test=1.0)  # normalised: test [0, 0.25), val [0.25, 0.5), train [0.5, 1)


@pytest.mark.parametrize(
    ("u", "split"), [(0.0, "test"), (0.2499, "test"), (0.25, "val"), (0.4999, "val"), (0.5, "train"), (0.9999, "train")]
)
def test_hash_thresholds_are_half_open(u: float, split: str) -> None:
    assert hash_split(u, QUARTERS) == split


def test_the_article_hash_is_the_first_eight_bytes_of_the_salted_sha256() -> None:
    """Released splits depend on this exact number: it must never change."""
    for pmcid, salt in (("PMC1", "biomedclip-split-v1"), ("PMC7654321", "other")):
        digest = hashlib.sha256(f"{salt}:{pmcid}".encode()).hexdigest()
        assert article_hash(pmcid, salt) == int(digest[:16], 16) / 2**64
    assert SplitConfig().salt == "biomedclip-split-v1"


def test_moves_fill_each_empty_split_with_the_smallest_train_hashes_test_first() -> None:
    donors = [(0.7, "PMC-b"), (0.6, "PMC-a"), (0.9, "PMC-c")]
    assert moved_articles(5, {"train"}, donors, SplitConfig()) == {"PMC-a": "test", "PMC-b": "val"}
    assert moved_articles(5, {"train", "test"}, donors, SplitConfig()) == {"PMC-a": "val"}
    assert moved_articles(5, {"train", "val", "test"}, donors, SplitConfig()) == {}
    assert moved_articles(5, {"train"}, donors, SplitConfig(val=0.0)) == {"PMC-a": "test"}  # no val wanted
    assert moved_articles(5, {"train"}, [], SplitConfig()) == {}


def test_moves_need_one_article_per_wanted_split() -> None:
    donors = [(0.6, "PMC-a"), (0.7, "PMC-b")]
    assert moved_articles(3, {"train"}, donors, SplitConfig()) == {"PMC-a": "test", "PMC-b": "val"}  # exactly 3
    assert moved_articles(2, {"train"}, donors, SplitConfig()) == {}
    no_train = SplitConfig(train=0.0, val=0.5, test=0.5)
    assert moved_articles(2, {"train"}, donors, no_train) == {"PMC-a": "test", "PMC-b": "val"}
    assert moved_articles(1, {"train"}, donors, SplitConfig(train=0.0, val=0.0, test=1.0)) == {"PMC-a": "test"}


def test_three_articles_get_one_split_each() -> None:
    splits = assign_splits(["PMC1", "PMC2", "PMC3"])
    assert sorted(splits.values()) == ["test", "train", "val"]
    by_hash = sorted(splits, key=lambda p: article_hash(p, SplitConfig().salt))
    assert splits[by_hash[-1]] == "train"  # the largest hash is never a donor
