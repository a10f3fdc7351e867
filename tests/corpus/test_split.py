"""Split by article: deterministic, ratios, tiny corpora, stable under growth."""

from __future__ import annotations

from collections import Counter

from biomedclip.corpus.split import SplitConfig, article_hash, assign_splits


def test_deterministic_and_order_free() -> None:
    ids = [f"PMC{i}" for i in range(500)]
    assert assign_splits(ids) == assign_splits(list(reversed(ids)))


def test_ratios_at_scale() -> None:
    config = SplitConfig(train=0.8, val=0.1, test=0.1)
    counts = Counter(assign_splits([f"PMC{i}" for i in range(20_000)], config).values())
    assert abs(counts["train"] / 20_000 - 0.8) < 0.02
    assert abs(counts["val"] / 20_000 - 0.1) < 0.01
    assert abs(counts["test"] / 20_000 - 0.1) < 0.01


def test_paper_ratios_by_default() -> None:
    counts = Counter(assign_splits([f"PMC{i}" for i in range(100_000)]).values())
    assert abs(counts["test"] / 100_000 - 0.0475) < 0.003
    assert 40 < counts["val"] < 150


def test_tiny_corpus_gets_val_and_test() -> None:
    splits = assign_splits(["PMC1", "PMC2", "PMC3", "PMC4", "PMC5"])
    assert set(splits.values()) == {"train", "val", "test"}
    assert Counter(splits.values())["train"] == 3
    # too few articles to fill three splits: the hash alone decides (u >= 0.0484 is train by default)
    config = SplitConfig()
    two = assign_splits(["PMC1", "PMC2"], config)
    assert two == {p: "train" if article_hash(p, config.salt) >= 0.0484 else two[p] for p in two}


def test_growth_keeps_existing_assignments() -> None:
    small = assign_splits([f"PMC{i}" for i in range(2_000)])
    large = assign_splits([f"PMC{i}" for i in range(4_000)])
    moved = [p for p in small if small[p] != large[p]]
    assert len(moved) <= 2  # only the tiny-corpus moves, never needed here


def test_salt_changes_the_split() -> None:
    ids = [f"PMC{i}" for i in range(1_000)]
    assert assign_splits(ids) != assign_splits(ids, SplitConfig(salt="other"))


def test_the_build_splits_like_assign_splits_from_aggregates() -> None:
    import pyarrow as pa

    from biomedclip.corpus.assemble import split_of_articles, tiny_corpus_moves

    for ids in (["PMC1"], ["PMC1", "PMC2"], [f"PMC{i}" for i in range(5)], [f"PMC{i}" for i in range(3_000)]):
        for config in (SplitConfig(), SplitConfig(train=0.8, val=0.1, test=0.1), SplitConfig(val=0.0)):
            keys = pa.array(ids)
            moved = tiny_corpus_moves(keys, config)
            assert dict(zip(ids, split_of_articles(keys, moved, config).to_pylist(), strict=True)) == assign_splits(
                ids, config
            )


def test_duplicate_clusters_spanning_splits_are_counted() -> None:
    import pyarrow as pa

    from biomedclip.corpus.assemble import cluster_counts

    dups = pa.table({
        "key": ["b", "d", "e"], "duplicate_of": ["a", "c", "c"], "kind": ["exact", "exact", "near"],
        "split": ["test", "val", "val"], "kept_split": ["train", "val", "val"],
    })  # fmt: skip
    counts = cluster_counts(dups)
    assert counts["clusters"] == {"exact": 1, "near": 1} and counts["duplicates"] == 3
    assert counts["leaks"] == 1  # a (train) and b (test); c, d, e all val
