"""Near-duplicate search through the block-wise path for large candidate groups, exactly at the distance limit
and at the group-size limit (docs/MUTATION.md). The reference compares every pair and joins them with a plain
union-find; all hashes below agree outside their low 21 bits, so with ``max_distance=2`` (three 21-bit bands, no
masked bits) every candidate pair comes from the two bands in which all of them are equal: one group of all."""

from __future__ import annotations

import random

import pytest

from biomedclip.corpus.dedup import LARGE_GROUP, DedupConfig, Fingerprint, find_duplicates, plan_bands

LOW_BITS = 21


def brute_force(hashes: list[int], d: int) -> set[tuple[str, tuple[str, ...]]]:
    keys = [f"h{i:05d}" for i in range(len(hashes))]
    parent = list(range(len(hashes)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            if (hashes[i] ^ hashes[j]).bit_count() <= d:
                a, b = root(i), root(j)
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[str]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(root(i), []).append(key)
    return {(g[0], tuple(g[1:])) for g in groups.values() if len(g) > 1}


def clusters(hashes: list[int], d: int) -> set[tuple[str, tuple[str, ...]]]:
    figures = [Fingerprint(f"h{i:05d}", f"sha{i}", f"{h:016x}") for i, h in enumerate(hashes)]
    return {(c.kept, c.duplicates) for c in find_duplicates(figures, DedupConfig(max_distance=d))}


def test_the_hashes_below_are_planned_as_three_unmasked_bands() -> None:
    assert plan_bands(3000, 2) == (3, 0)


def test_a_pair_exactly_at_the_limit_inside_a_large_group() -> None:
    """x and y differ in exactly 2 low bits; 100 others share their high bits but stay 3+ bits from both."""
    rng = random.Random(11)
    far = [v for v in range(1 << LOW_BITS) if v.bit_count() >= 5]
    hashes = [0b0, 0b11, *rng.sample(far, 100)]
    got = clusters(hashes, 2)
    assert ("h00000", ("h00001",)) in got
    assert got == brute_force(hashes, 2)
    assert clusters(hashes, 1) == brute_force(hashes, 1)


@pytest.mark.parametrize("size", [LARGE_GROUP - 1, LARGE_GROUP, LARGE_GROUP + 1, 2600])
def test_groups_at_and_past_the_large_group_size_match_brute_force(size: int) -> None:
    """2600 members: three blocks of 1024 rows in the large-group path."""
    rng = random.Random(size)
    low = rng.sample(range(1 << LOW_BITS), size)
    for i in range(0, size - 1, max(1, size // 20)):  # plant pairs at exactly 2 bits all through the group
        low[i + 1] = low[i] ^ (1 << rng.randrange(LOW_BITS)) ^ (1 << rng.randrange(LOW_BITS))
    hashes = list(dict.fromkeys(low))
    got = clusters(hashes, 2)
    assert got and got == brute_force(hashes, 2)


def test_no_figures_and_one_figure() -> None:
    import numpy as np

    from biomedclip.corpus.dedup import cluster_labels

    kept, exact = cluster_labels(np.zeros(0, np.int64), np.zeros(0, np.uint64), 4)
    assert kept.shape == (0,) and exact.shape == (0,) and exact.dtype == bool
    assert find_duplicates([]) == []
    kept, exact = cluster_labels(np.array([7]), np.array([5], np.uint64), 4)
    assert kept.tolist() == [0] and exact.tolist() == [True]
    assert find_duplicates([Fingerprint("only", "s", "0" * 16)]) == []


def test_near_pairs_computed_elsewhere_get_one_hash_per_file_and_the_units() -> None:
    """The distributed build computes the near pairs in workers (``near_edges``): it gets the distinct hashes and
    the units of work, and the pairs it returns make the clusters."""
    import numpy as np

    from biomedclip.corpus.dedup import cluster_labels, mask_units, near_pairs_for_masks

    phashes = np.array([0b0, 0b1, 0b1, 0b111000, 0b111011], np.uint64)  # 0-1 (1 bit), 1-1 (same), 3-4 (2 bits)
    calls = []

    def near_edges(values, units, reps):
        calls.append((values.tolist(), units, reps.tolist()))
        return [near_pairs_for_masks(values, unit, 2) for unit in units]

    kept, exact = cluster_labels(np.arange(5), phashes, 2, near_edges=near_edges)
    assert kept.tolist() == [0, 0, 0, 3, 3] and exact.tolist() == [False] * 5
    ((values, units, reps),) = calls
    assert values == [0b0, 0b1, 0b1, 0b111000, 0b111011] and reps == [0, 1, 2, 3, 4]  # one figure per SHA-256
    assert [[int(m) for m in unit] for unit in units] == [[int(m) for m in unit] for unit in mask_units(5, 2)]
    calls.clear()
    kept, _ = cluster_labels(np.array([0, 1, 1, 2, 3]), phashes, 2, near_edges=near_edges)
    assert calls[0][2] == [0, 1, 3, 4] and kept.tolist() == [0, 0, 0, 3, 3]  # figure 2 is figure 1's copy


def test_masked_bits_include_each_bands_lowest_bit() -> None:
    """With one masked bit per band (the plan for a million hashes at distance 4: three bands of 21, 22 and 21
    bits) a pair 4 bits apart whose differences are two in the first band and the lowest bit of each other band
    is found only by the masks that drop those lowest bits."""
    import numpy as np

    from biomedclip.corpus.dedup import mask_units, near_pairs_for_masks

    assert plan_bands(1_000_000, 4) == (3, 1)
    other = (1 << 0) | (1 << 1) | (1 << 21) | (1 << 43)
    values = np.array([0, other], np.uint64)
    found = set()
    for unit in mask_units(1_000_000, 4):
        a, b = near_pairs_for_masks(values, unit, 4)
        found |= {tuple(sorted(p)) for p in zip(a.tolist(), b.tolist(), strict=True)}
    assert found == {(0, 1)}
