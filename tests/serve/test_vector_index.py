"""The streaming vector index against brute force on small synthetic vector shards: recall, filters (the exact
fallback and its cut-off), keys and parents from the Parquet records, bounded build memory, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from biomedclip.serve import vector_build
from biomedclip.serve.disk_sort import bucket_sort
from biomedclip.serve.index import FigureFilter, FigureIndexError, records_table
from biomedclip.serve.keys import KeyTable, key_hash, write_key_table
from biomedclip.serve.vector_build import VectorBuildConfig, build_vector_index
from biomedclip.serve.vector_folder import VectorFolder, write_vector_shard
from biomedclip.serve.vector_index import VectorIndex

DIM, N, SHARD = 64, 6000, 1500
CONFIG = VectorBuildConfig(
    memory_vectors=2000, part_vectors=2504, chunk=1000, ivf_min=1000, exact_max=1000, list_max=0
)  # no value lists: the exact and IVF paths (value lists are tested with their own index below)


def synthetic_records(start: int, count: int) -> list[dict]:
    """Filter values independent of the clusters; every 10th vector a panel of the vector before it."""
    rows = []
    for i in range(start, start + count):
        mixed = (i * 2654435761) % 2**32
        rows.append({
            "key": f"PMC{i}_F1" if i % 10 != 9 else f"PMC{i}_F1_panel_a",
            "parent": f"PMC{i - 1}_F1" if i % 10 == 9 else "",
            "pmcid": f"PMC{i}", "caption": f"figure {i}",
            "year": None if i % 50 == 7 else 2000 + mixed % 20,
            "journal": f"J{(mixed >> 8) % 100:02d}", "license": ("CC BY", "CC0", "CC BY-NC")[(mixed >> 4) % 3],
            "split": "test" if (mixed >> 12) % 10 == 0 else "train",
        })  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def vectors_and_queries() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((60, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def around(n: int, spread: float) -> np.ndarray:
        points = (
            centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, DIM)).astype(np.float32) * spread / 8
        )
        return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)

    return around(N, 1.0), around(40, 1.5)


@pytest.fixture(scope="module")
def vector_folder(tmp_path_factory: pytest.TempPathFactory, vectors_and_queries) -> Path:
    folder = tmp_path_factory.mktemp("vectors") / "vec"
    vectors, _ = vectors_and_queries
    for number, start in enumerate(range(0, N, SHARD)):
        table = records_table(synthetic_records(start, SHARD))
        write_vector_shard(folder, f"train-{number:05d}", vectors[start : start + SHARD], table, "tiny", 256)
    return folder


@pytest.fixture(scope="module")
def stored(vector_folder: Path) -> tuple[np.ndarray, pa.Table]:
    """The float16 vectors (as float32) and the records, read straight from the files: the reference."""
    names = sorted(p.name.removesuffix(".done.json") for p in vector_folder.glob("*.done.json"))
    vectors = np.concatenate([np.load(vector_folder / f"{n}.npy").astype(np.float32) for n in names])
    return vectors, pa.concat_tables([pq.read_table(vector_folder / f"{n}.parquet") for n in names])


@pytest.fixture(scope="module")
def index(vector_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> VectorIndex:
    out = tmp_path_factory.mktemp("index") / "index"
    report = build_vector_index(vector_folder, out, CONFIG)
    assert (report.count, report.shards, report.parts_built, report.duplicate_keys) == (N, 4, 3, 0)
    return VectorIndex.load(out)


def brute_force(stored, query: np.ndarray, k: int, passing: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    vectors, _ = stored
    ids = np.arange(len(vectors)) if passing is None else np.flatnonzero(passing)
    scores = vectors[ids] @ query
    order = np.lexsort((ids, -scores))[:k]
    return ids[order], scores[order]


def mask(stored, **conditions) -> np.ndarray:
    records = stored[1].to_pylist()
    keep = np.ones(len(records), bool)
    for i, record in enumerate(records):
        year = record["year"]
        if "year_min" in conditions and (year is None or year < conditions["year_min"]):
            keep[i] = False
        if "year_max" in conditions and (year is None or year > conditions["year_max"]):
            keep[i] = False
        for name in ("journal", "license", "split"):
            if name in conditions and record[name] != conditions[name]:
                keep[i] = False
    return keep


def recall(index: VectorIndex, stored, queries: np.ndarray, where: FigureFilter | None, passing=None) -> float:
    found = index.search_vectors(queries, 10, where)[1]
    truth = [brute_force(stored, q, 10, passing)[0] for q in queries]
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))


def test_unfiltered_recall_against_brute_force_and_exact_scores(index, stored, vectors_and_queries) -> None:
    _, queries = vectors_and_queries
    assert recall(index, stored, queries, None) >= 0.95
    scores, ids = index.search_vectors(queries[:5], 10)
    for row_scores, row_ids, query in zip(scores, ids, queries[:5], strict=True):
        np.testing.assert_allclose(row_scores, stored[0][row_ids] @ query, rtol=1e-5, atol=1e-6)  # re-ranked exactly
        assert np.all(np.diff(row_scores) <= 0)


@pytest.mark.parametrize(
    "conditions",
    [{"journal": "J07"}, {"year_min": 2003, "year_max": 2004, "license": "CC0"}, {"split": "test", "year_max": 2001}],
)
def test_a_few_passing_figures_are_searched_exactly(index, stored, vectors_and_queries, conditions) -> None:
    passing = mask(stored, **conditions)
    assert 0 < passing.sum() <= index.settings.exact_max
    for query in vectors_and_queries[1][:10]:
        scores, ids = index.search_vectors(query[None, :], 10, FigureFilter(**conditions))
        expected_ids, expected_scores = brute_force(stored, query, 10, passing)
        assert ids[0].tolist() == expected_ids.tolist()
        np.testing.assert_allclose(scores[0], expected_scores, rtol=1e-5, atol=1e-6)


def test_the_exact_fallback_cut_off(index, stored, vectors_and_queries, monkeypatch) -> None:
    """Exactly ``exact_max`` passing figures: exact; one more: the IVF index with the filter's bitmap."""
    conditions = {"split": "test"}
    passing = mask(stored, **conditions)
    count = int(passing.sum())
    query = vectors_and_queries[1][0]
    for exact_max, approximate_calls in ((count, 0), (count - 1, 1)):
        cut = VectorIndex.load(index.folder, exact_max=exact_max)
        calls = []
        original = cut._approximate
        spy = lambda *a, original=original, calls=calls: calls.append(a) or original(*a)  # noqa: E731
        monkeypatch.setattr(cut, "_approximate", spy)
        ids = cut.search_vectors(query[None, :], 10, FigureFilter(**conditions))[1][0]
        assert len(calls) == approximate_calls
        if not approximate_calls:
            assert ids.tolist() == brute_force(stored, query, 10, passing)[0].tolist()


@pytest.mark.parametrize("conditions", [{"split": "test"}, {"license": "CC0"}, {"year_min": 2010}])
def test_filtered_recall_through_the_ivf_index(index, stored, vectors_and_queries, conditions) -> None:
    passing = mask(stored, **conditions)
    ivf = VectorIndex.load(index.folder, exact_max=1)  # never the exact fallback
    assert recall(ivf, stored, vectors_and_queries[1], FigureFilter(**conditions), passing) >= 0.95
    found = ivf.search_vectors(vectors_and_queries[1], 10, FigureFilter(**conditions))[1]
    assert passing[found[found >= 0]].all()


@pytest.fixture(scope="module")
def listed_index(vector_folder: Path, stored, tmp_path_factory: pytest.TempPathFactory) -> VectorIndex:
    """Value lists for every value held by at most as many vectors as split=test: exactly on the cut-off."""
    out = tmp_path_factory.mktemp("listed") / "index"
    list_max = int(mask(stored, split="test").sum())
    build_vector_index(vector_folder, out, VectorBuildConfig(**{**CONFIG.__dict__, "list_max": list_max}))
    return VectorIndex.load(out)


@pytest.mark.parametrize(
    "conditions, field",
    [
        ({"split": "test"}, "split"),  # held by exactly list_max vectors: listed
        ({"journal": "J07", "license": "CC0"}, "journal"),  # the license (not listed) is tested on the ids
        ({"year_min": 2003, "year_max": 2003, "split": "test"}, "year"),  # the field with fewer vectors drives
        ({"year_min": 2003, "year_max": 2004, "journal": "J11"}, "journal"),
    ],
)
def test_value_lists_search_exactly_without_the_other_paths(
    listed_index, stored, vectors_and_queries, monkeypatch, conditions, field
) -> None:
    where = FigureFilter(**conditions)
    plan = listed_index.value_lists.plan(listed_index.filters.conditions(where))
    assert plan is not None and plan[0] == field
    for path in ("_exact", "_approximate"):
        monkeypatch.setattr(listed_index, path, lambda *a, path=path: pytest.fail(f"{path} ran"))
    passing = mask(stored, **conditions)
    for query in vectors_and_queries[1][:10]:
        scores, ids = listed_index.search_vectors(query[None, :], 10, where)
        expected_ids, expected_scores = brute_force(stored, query, 10, passing)
        assert ids[0].tolist() == expected_ids.tolist()
        np.testing.assert_allclose(scores[0], expected_scores, rtol=1e-5, atol=1e-6)


def test_value_lists_cut_off(listed_index, stored, vector_folder, tmp_path) -> None:
    """A value held by one vector more than list_max gets no list; a field with no listed value gets no file."""
    test_count = int(mask(stored, split="test").sum())
    assert listed_index.meta["value_lists"] == {"fields": ["year", "journal", "split"], "list_max": test_count}
    out = tmp_path / "index"
    build_vector_index(vector_folder, out, VectorBuildConfig(**{**CONFIG.__dict__, "list_max": test_count - 1}))
    cut = VectorIndex.load(out)
    assert cut.value_lists.plan(cut.filters.conditions(FigureFilter(split="test"))) is None
    assert cut.value_lists.plan(cut.filters.conditions(FigureFilter(journal="J07")))[0] == "journal"
    assert not (out / "filters" / "license.lists.faiss").exists()


@pytest.mark.parametrize(
    "lost", ["filters/journal.lists.ivfdata", "refine/part-00001.npy", "exact/part-00002.faiss", "records/rows.bin"]
)
def test_an_index_missing_a_file_is_refused_by_name(listed_index, tmp_path, lost) -> None:
    import shutil

    copy = tmp_path / "index"
    shutil.copytree(listed_index.folder, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["vectors"] = str(Path(listed_index.folder, meta["vectors"]).resolve())  # the copy's vectors stay put
    (copy / "meta.json").write_text(json.dumps(meta))
    (copy / lost).unlink()
    with pytest.raises(FigureIndexError, match=f"{Path(lost).name}.*build it again"):
        VectorIndex.load(copy)


def test_a_filter_nothing_passes_returns_no_hits(index, vectors_and_queries) -> None:
    _, ids = index.search_vectors(vectors_and_queries[1][:2], 10, FigureFilter(journal="no such journal"))
    assert ids.shape == (2, 0)
    assert index.search(vectors_and_queries[1][:1], 10, FigureFilter(year_min=1800, year_max=1801)) == [[]]


def test_hits_carry_the_records_keys_and_parents(index, stored, vectors_and_queries) -> None:
    records = stored[1].to_pylist()
    row_of = {r["key"]: i for i, r in enumerate(records)}
    hits = [hit for result in index.search(vectors_and_queries[1], 10) for hit in result]
    assert any(hit.record["parent"] for hit in hits)
    for hit in hits:
        assert hit.record == records[hit.id]
        expected_parent = row_of[records[hit.id]["parent"]] if records[hit.id]["parent"] else None
        assert index.parent_id(hit.id, hit.record) == expected_parent
        assert index.id_of(hit.record["key"]) == hit.id
    assert index.id_of("PMC-nothing") is None
    facets = index.facets()
    years = [r["year"] for r in records if r["year"] is not None]
    assert (facets["year_min"], facets["year_max"]) == (min(years), max(years))
    assert set(facets["license"]) == {"CC BY", "CC0", "CC BY-NC"} and facets["split"][0] == "train"


def test_the_build_holds_at_most_memory_vectors(vector_folder, tmp_path, monkeypatch) -> None:
    held = []
    read = VectorFolder.read

    def counting_read(self, start, stop, batch):
        for first, vectors in read(self, start, stop, batch):
            held.append(len(vectors))
            yield first, vectors

    monkeypatch.setattr(VectorFolder, "read", counting_read)
    config = VectorBuildConfig(memory_vectors=700, part_vectors=2504, chunk=1000, ivf_min=1000)
    build_vector_index(vector_folder, tmp_path / "index", config)
    assert sum(held) == 2 * N and max(held) == 700  # every vector twice: to pick the training sample, to add it


def test_an_interrupted_build_resumes_and_equals_a_clean_one(vector_folder, index, tmp_path, monkeypatch) -> None:
    writes = []
    real_write = vector_build._atomic_write_index

    def failing_write(faiss_index, path):
        if path.name == "part-00001.faiss":
            raise OSError("disk full (simulated)")
        writes.append(path.name)
        real_write(faiss_index, path)

    monkeypatch.setattr(vector_build, "_atomic_write_index", failing_write)
    with pytest.raises(OSError, match="simulated"):
        build_vector_index(vector_folder, tmp_path / "index", CONFIG)
    assert writes == ["trained.faiss", "part-00000.faiss", "part-00000.faiss"]  # ivf, exact
    assert not (tmp_path / "index/meta.json").exists()
    monkeypatch.setattr(vector_build, "_atomic_write_index", real_write)
    report = build_vector_index(vector_folder, tmp_path / "index", CONFIG)
    assert (report.parts_kept, report.parts_built) == (1, 2)
    assert build_vector_index(vector_folder, tmp_path / "index", CONFIG).up_to_date
    resumed = VectorIndex.load(tmp_path / "index")
    queries = np.random.default_rng(0).standard_normal((5, DIM)).astype(np.float32)
    assert resumed.search_vectors(queries, 10)[1].tolist() == index.search_vectors(queries, 10)[1].tolist()


def test_an_index_of_another_format_is_refused(index, tmp_path) -> None:
    import shutil

    copy = tmp_path / "index"
    shutil.copytree(index.folder, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta.update(format="biomedclip-vector-index/1", vectors=str(Path(index.folder, meta["vectors"]).resolve()))
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(FigureIndexError, match=r"another version .*format biomedclip-vector-index/1.*build it again"):
        VectorIndex.load(copy)


def test_a_changed_vector_folder_is_refused(vector_folder, tmp_path) -> None:
    import shutil

    copy = tmp_path / "vec"
    shutil.copytree(vector_folder, copy)
    build_vector_index(copy, tmp_path / "index", CONFIG)
    marker = copy / "train-00001.done.json"
    done = json.loads(marker.read_text())
    marker.write_text(json.dumps({**done, "npy_sha256": "0" * 64}))
    with pytest.raises(FigureIndexError, match="no longer matches"):
        VectorIndex.load(tmp_path / "index")
    with pytest.raises(FigureIndexError, match="does not match the SHA-256"):
        build_vector_index(copy, tmp_path / "index", CONFIG)


def test_bucket_sort_groups_rows_stably(tmp_path) -> None:
    codes = np.random.default_rng(1).integers(0, 7, 10_000).astype(np.uint32)
    offsets = bucket_sort(codes, 9, tmp_path / "rows.npy", chunk=999)
    assert np.load(tmp_path / "rows.npy").tolist() == np.argsort(codes, kind="stable").tolist()
    assert offsets.tolist() == [0, *np.cumsum(np.bincount(codes, minlength=9)).tolist()]


def test_key_table_finds_every_key_and_counts_duplicates(tmp_path) -> None:
    keys = [f"PMC{i}_F{i % 3}" for i in range(5000)] + ["PMC7_F1"]  # one duplicate
    write_key_table(key_hash(keys), tmp_path, chunk=300)
    table = KeyTable(tmp_path)
    assert [table.id_of(k) for k in keys[:5000]] == list(range(5000))
    assert table.id_of("PMC5000_F0") is None and table.lookup(key_hash(["", "x"])).tolist() == [-1, -1]
    assert write_key_table(key_hash(keys), tmp_path, chunk=300) == 1


def test_the_cli_builds_a_vector_index_and_reports_bad_input(vector_folder, tmp_path) -> None:
    from click.testing import CliRunner

    from biomedclip.cli import main

    def run(*args):
        return CliRunner().invoke(main, ["index", "build", *map(str, args)], catch_exceptions=False)

    result = run("--vectors", vector_folder, "-o", tmp_path / "index", "--memory-vectors", 3000)
    assert result.exit_code == 0, result.output
    assert f"{N} vectors from 4 shards" in result.output and "built in" in result.output
    again = run("--vectors", vector_folder, "-o", tmp_path / "index", "--memory-vectors", 3000)
    assert again.exit_code == 0 and "already up to date" in again.output
    both = run("--vectors", vector_folder, "--shards", "x.tar", "-o", tmp_path / "other")
    assert both.exit_code == 2 and "either --shards or --vectors" in both.output
    not_vectors = run("--vectors", tmp_path, "-o", tmp_path / "other")
    assert not_vectors.exit_code == 1 and "not a vector folder" in not_vectors.output
    assert len(VectorIndex.load(tmp_path / "index")) == N
