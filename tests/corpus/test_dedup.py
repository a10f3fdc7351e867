"""Dedup: exact and perceptual duplicates, deterministic kept figure, clusters."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from biomedclip.corpus.dedup import DedupConfig, Fingerprint, find_duplicates
from biomedclip.corpus.images import process_image

JPG = "pmc/packages/extracted/PMC10487465/PMC10487465/ijms-24-13282-g00{}.jpg"


def _fingerprint(key: str, data: bytes) -> Fingerprint:
    image = process_image(data)
    return Fingerprint(key, image.sha256, image.phash)


def _variant(data: bytes) -> bytes:
    """The same figure re-encoded smaller and slightly brighter: a near duplicate, not an exact one."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img = ImageEnhance.Brightness(img.resize((img.width // 2, img.height // 2))).enhance(1.05)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=70)
    return buf.getvalue()


def test_exact_and_near_duplicates_on_real_figures(shared_fixtures: Path) -> None:
    one = (shared_fixtures / JPG.format(1)).read_bytes()
    two = (shared_fixtures / JPG.format(2)).read_bytes()
    three = (shared_fixtures / JPG.format(3)).read_bytes()
    figures = [
        _fingerprint("PMC2_f1", one),
        _fingerprint("PMC1_f9", one),  # exact copy in another article
        _fingerprint("PMC3_f2", _variant(two)),
        _fingerprint("PMC1_f2", two),
        _fingerprint("PMC1_f3", three),
    ]
    clusters = find_duplicates(figures)
    assert [(c.kept, c.duplicates, c.kind) for c in clusters] == [
        ("PMC1_f2", ("PMC3_f2",), "near"),
        ("PMC1_f9", ("PMC2_f1",), "exact"),
    ]
    random.Random(0).shuffle(figures)
    assert find_duplicates(figures) == clusters  # the kept figure does not depend on order


def test_distance_threshold_and_transitive_clusters() -> None:
    base = 0x0F0F0F0F0F0F0F0F
    hashes = {"a": base, "b": base ^ 0b111, "c": base ^ 0b111 ^ (0b111 << 20), "d": ~base & (2**64 - 1)}
    figures = [Fingerprint(k, k, f"{v:016x}") for k, v in hashes.items()]
    clusters = find_duplicates(figures, DedupConfig(max_distance=4))
    assert [(c.kept, c.duplicates) for c in clusters] == [("a", ("b", "c"))]  # c joins through b (6 bits from a)
    assert find_duplicates(figures, DedupConfig(max_distance=2)) == []


def test_distinct_random_images_are_not_merged() -> None:
    rng = np.random.default_rng(1)
    figures = []
    for i in range(40):
        img = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        figures.append(_fingerprint(f"k{i:02d}", buf.getvalue()))
    assert find_duplicates(figures) == []


def _brute_force_clusters(figures: list[Fingerprint], d: int) -> set[tuple[str, tuple[str, ...]]]:
    """Reference: every pair compared (numpy), components by a plain union-find, smallest key kept."""
    keys = sorted(f.key for f in figures)
    by_key = {f.key: f for f in figures}
    values = np.array([int(by_key[k].phash, 16) for k in keys], dtype=np.uint64)
    near = np.bitwise_count(values[:, None] ^ values[None, :]) <= d
    same = np.array([[by_key[a].sha256 == by_key[b].sha256 for b in keys] for a in keys])
    parent = list(range(len(keys)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(near | same), strict=True):
        ri, rj = find(int(i)), find(int(j))
        parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[str]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(find(i), []).append(key)
    return {(g[0], tuple(g[1:])) for g in groups.values() if len(g) > 1}


def _flip(value: int, bits: list[int]) -> int:
    for b in bits:
        value ^= 1 << b
    return value


def test_pairs_exactly_at_the_distance_limit_match_brute_force() -> None:
    rng = random.Random(7)
    for d in (0, 2, 4, 6):
        figures = []
        for i in range(150):
            base = rng.getrandbits(64)
            figures.append(Fingerprint(f"k{i:03d}a", f"s{i}a", f"{base:016x}"))
            at_limit = _flip(base, rng.sample(range(64), d))  # exactly d bits: a near duplicate
            figures.append(Fingerprint(f"k{i:03d}b", f"s{i}b", f"{at_limit:016x}"))
            beyond = _flip(base, rng.sample(range(64), d + 1))  # d + 1 bits from base
            figures.append(Fingerprint(f"k{i:03d}c", f"s{i}c", f"{beyond:016x}"))
        figures.append(Fingerprint("k999", "s0a", "0" * 16))  # an exact copy of k000a's file
        got = {(c.kept, c.duplicates) for c in find_duplicates(figures, DedupConfig(max_distance=d))}
        assert got == _brute_force_clusters(figures, d)
        assert ("k000a", ("k000b", "k999")) in got or ("k000a", ("k000b", "k000c", "k999")) in got


def test_a_heavy_cluster_of_near_blank_hashes_matches_brute_force() -> None:
    rng = random.Random(3)
    figures = [Fingerprint(f"blank{i:04d}", f"b{i}", f"{_flip(0, rng.sample(range(64), rng.randint(0, 3))):016x}")
               for i in range(400)]  # fmt: skip
    figures += [Fingerprint(f"r{i:04d}", f"r{i}", f"{rng.getrandbits(64):016x}") for i in range(400)]
    got = {(c.kept, c.duplicates) for c in find_duplicates(figures, DedupConfig(max_distance=4))}
    assert got == _brute_force_clusters(figures, 4)
    assert any(len(dups) > 300 for _, dups in got)


def test_band_plans_cover_every_pair_for_large_n() -> None:
    from biomedclip.corpus.dedup import mask_units, near_pairs_for_masks, plan_bands

    assert plan_bands(100, 4) == (5, 0) and plan_bands(1_000_000, 4) == (3, 1)  # longer bands as N grows
    rng = np.random.default_rng(5)
    values = np.unique(rng.integers(0, 2**63, 2000, dtype=np.uint64))
    planted = values[:200] ^ np.uint64(0b1011) ^ (np.uint64(1) << np.uint64(40))  # 4 bits away
    values = np.unique(np.concatenate([values, planted]))
    expected = {
        (int(a), int(b))
        for a, b in zip(*np.nonzero(np.triu(np.bitwise_count(values[:, None] ^ values) <= 4, 1)), strict=True)
    }
    for n in (100, 1_000_000, 30_000_000):  # the plan for each corpus size finds the same pairs
        found = set()
        for unit in mask_units(n, 4):
            a, b = near_pairs_for_masks(values, unit, 4)
            found |= {(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist(), strict=True)}
        assert found == expected


def test_near_pairs_come_back_as_a_spanning_forest_of_the_brute_force_components() -> None:
    """A dense cluster of near-blank hashes: one edge per member at most, the same components as all pairs."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from biomedclip.corpus.dedup import mask_units, near_pairs_for_masks, spanning_forest

    rng = np.random.default_rng(0)
    blank = {sum(1 << int(b) for b in rng.choice(64, rng.integers(0, 3), replace=False)) for _ in range(600)}
    values = np.array(sorted(blank | {int(v) for v in rng.integers(0, 2**63, 400)}), np.uint64)

    def components_of(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        graph = coo_matrix((np.ones(len(a), bool), (a, b)), shape=(len(values),) * 2)
        labels = connected_components(graph, directed=False)[1]
        return np.unique(labels, return_inverse=True)[1]  # canonical: numbered in first-seen order

    brute = np.nonzero(np.triu(np.bitwise_count(values[:, None] ^ values[None, :]) <= 4, 1))
    edges = [near_pairs_for_masks(values, unit, 4) for unit in mask_units(len(values), 4)]
    a, b = np.concatenate([e[0] for e in edges]), np.concatenate([e[1] for e in edges])
    assert all(len(e[0]) < len(values) for e in edges) and len(brute[0]) > 10 * len(values)
    assert np.array_equal(components_of(a, b), components_of(*brute))
    forest = spanning_forest(*brute)
    assert len(forest[0]) < len(values) and np.array_equal(components_of(*forest), components_of(*brute))
