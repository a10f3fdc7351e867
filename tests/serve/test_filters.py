"""Filtered figure search (year, journal, license, split) against numpy brute force over the passing subset."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from biomedclip.serve.index import FigureFilter, FigureIndex, IndexConfig, normalize

JOURNALS = ("Radiology", "Cell", "BMC Med")
LICENSES = ("CC BY", "CC0", "CC BY-NC")


def make_records(n: int) -> list[dict]:
    """Records cycling through years 2015..2024 (every 11th has none), journals, licenses and splits."""
    return [
        {
            "key": f"k{i}",
            "year": None if i % 11 == 0 else 2015 + i % 10,
            "journal": JOURNALS[i % 3],
            "license": LICENSES[i % 7 % 3],
            "split": "test" if i % 5 == 0 else "train",
        }
        for i in range(n)
    ]


def passes(record: dict, where: FigureFilter) -> bool:
    """The filter rule written out per record, independent of the pyarrow implementation."""
    year = record["year"]
    if where.year_min is not None and (year is None or year < where.year_min):
        return False
    if where.year_max is not None and (year is None or year > where.year_max):
        return False
    wanted = {name: getattr(where, name) for name in ("journal", "license", "split")}
    return all(not value or record[name] == value for name, value in wanted.items())


def brute_force(data: np.ndarray, queries: np.ndarray, allowed: np.ndarray, k: int) -> list[list[int]]:
    ids = np.flatnonzero(allowed)
    scores = normalize(queries) @ data[ids].T
    return [ids[np.argsort(-row)[:k]].tolist() for row in scores]


FILTERS = [
    FigureFilter(year_min=2019),  # exactly on a year present: 2019 is included
    FigureFilter(year_max=2016, journal="Cell"),
    FigureFilter(year_min=2020, year_max=2020, split="test"),
    FigureFilter(license="CC0", split="train"),
]


@pytest.fixture(scope="module")
def indexed(clustered_vectors):
    data, queries = clustered_vectors
    records = make_records(len(data))
    return data, queries[:40], records


@pytest.mark.parametrize("where", FILTERS, ids=str)
def test_flat_filtered_search_is_brute_force_over_the_passing_figures(indexed, where):
    data, queries, records = indexed
    index = FigureIndex(64, IndexConfig(kind="flat"))
    index.add(data, records)
    allowed = np.array([passes(r, where) for r in records])
    np.testing.assert_array_equal(where.mask(index.records), allowed)
    hits = index.search(queries, 10, where)
    for row, truth in zip(hits, brute_force(data, queries, allowed, 10), strict=True):
        assert all(passes(records[hit.id], where) for hit in row)
        assert len(set(hit.id for hit in row) & set(truth)) >= 9  # ties aside, identical


def test_year_bounds_are_inclusive_and_figures_without_a_year_fail_them():
    index = FigureIndex(2, IndexConfig(kind="flat"))
    index.add(np.eye(2, dtype=np.float32)[[0, 1, 1]], [{"year": 2019}, {"year": 2020}, {"year": None}])
    assert FigureFilter(year_min=2019, year_max=2019).mask(index.records).tolist() == [True, False, False]
    assert FigureFilter(year_min=2020).mask(index.records).tolist() == [False, True, False]
    assert FigureFilter().mask(index.records).tolist() == [True, True, True]
    assert not FigureFilter() and FigureFilter(split="x")


@pytest.mark.parametrize(("kind", "options"), [("ivfpq", {"nlist": 64, "pq_m": 16}), ("hnsw", {})])
def test_approximate_filtered_search_returns_only_passing_figures(indexed, kind, options):
    data, queries, records = indexed
    index = FigureIndex(64, IndexConfig(kind=kind, **options))
    index.add(data, records)
    where = FigureFilter(journal="Radiology", split="train")  # about a quarter of the figures
    allowed = np.array([passes(r, where) for r in records])
    hits = index.search(queries, 10, where)
    truth = brute_force(data, queries, allowed, 10)
    assert all(passes(records[hit.id], where) for row in hits for hit in row)
    recall = np.mean([len({h.id for h in row} & set(t)) / 10 for row, t in zip(hits, truth, strict=True)])
    assert recall >= 0.9


def test_a_filter_nothing_passes_gives_no_hits_and_a_loaded_index_filters_alike(indexed, tmp_path):
    data, queries, records = indexed
    index = FigureIndex(64, IndexConfig(kind="flat"))
    index.add(data[:500], records[:500])
    assert index.search(queries[:2], 5, FigureFilter(journal="Nature")) == [[], []]
    where = FigureFilter(year_min=2022, license="CC BY")
    index.save(tmp_path / "index")
    loaded = FigureIndex.load(tmp_path / "index")
    assert [[h.id for h in row] for row in loaded.search(queries[:3], 5, where)] == [
        [h.id for h in row] for row in index.search(queries[:3], 5, where)
    ]


def test_facets_list_values_by_frequency_and_the_year_range(indexed):
    data, _, records = indexed
    index = FigureIndex(64, IndexConfig(kind="flat"))
    index.add(data[:1000], records[:1000])
    facets = index.facets()
    years = [r["year"] for r in records[:1000] if r["year"] is not None]
    assert (facets["year_min"], facets["year_max"]) == (min(years), max(years))
    for name in ("journal", "license", "split"):
        counts = Counter(r[name] for r in records[:1000])
        assert facets[name] == sorted(counts, key=lambda value: (-counts[value], value))
    assert index.facets(max_values=1)["journal"] == [Counter(r["journal"] for r in records[:1000]).most_common(1)[0][0]]
    empty = FigureIndex(64).facets()
    assert empty == {"year_min": None, "year_max": None, "journal": [], "license": [], "split": []}
