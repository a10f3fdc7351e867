"""The FAISS figure index: exact vs approximate recall, automatic kind, records, persistence, incremental add."""

from __future__ import annotations

import shutil
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest

from biomedclip.serve.build import build_index
from biomedclip.serve.index import FigureIndex, FigureIndexError, IndexConfig, normalize
from biomedclip.serve.shards import ShardError, iter_shard, read_image_bytes, shard_location
from biomedclip.shards import expand_shards


def exact_neighbours(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Brute-force top-k by cosine similarity in numpy (independent of faiss)."""
    return np.argsort(-(normalize(queries) @ data.T), axis=1)[:, :k]


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


@pytest.fixture
def vectors(clustered_vectors) -> tuple[np.ndarray, np.ndarray]:
    return clustered_vectors


def test_flat_index_is_exact(vectors):
    data, queries = vectors
    index = FigureIndex(64, IndexConfig(kind="flat"))
    index.add(data)
    scores, ids = index.search_vectors(queries, 10)
    truth = exact_neighbours(data, queries, 10)
    assert recall_at(ids, truth) == pytest.approx(1.0, abs=1e-3)  # ties aside, identical to brute force
    np.testing.assert_allclose(scores[:, 0], np.max(normalize(queries) @ data.T, axis=1), atol=1e-4)


@pytest.mark.parametrize(("kind", "options"), [("ivfpq", {"nlist": 64, "pq_m": 16}), ("hnsw", {})])
def test_approximate_index_recall(vectors, kind, options):
    data, queries = vectors
    index = FigureIndex(64, IndexConfig(kind=kind, **options))
    index.add(data)
    assert index.kind == kind
    _, ids = index.search_vectors(queries, 10)
    assert recall_at(ids, exact_neighbours(data, queries, 10)) >= 0.9


def test_auto_switches_from_exact_to_ivfpq_when_the_collection_grows(vectors):
    data, queries = vectors
    records = [{"key": f"k{i}", "caption": f"caption {i}"} for i in range(len(data))]
    index = FigureIndex(64, IndexConfig(exact_max=5_000, nlist=32, pq_m=16))
    index.add(data[:4_000], records[:4_000])
    assert index.kind == "flat"
    index.add(data[4_000:], records[4_000:])
    assert index.kind == "ivfpq" and len(index) == len(data)
    hits = index.search(queries[:20], 10)
    truth = exact_neighbours(data, queries[:20], 10)
    assert recall_at(np.array([[h.id for h in row] for row in hits]), truth) >= 0.9
    for row in hits:  # every hit carries the record of its own vector
        assert all(hit.record["key"] == f"k{hit.id}" for hit in row)


def test_save_load_round_trip_and_incremental_save(tmp_path, vectors):
    data, queries = vectors
    index = FigureIndex(64, IndexConfig(kind="flat"))
    index.add(data[:100], [{"caption": f"c{i}", "pmcid": f"PMC{i}", "year": 2000 + i} for i in range(100)])
    index.save(tmp_path / "ix")
    index.add(data[100:150], [{"caption": f"c{i}", "pmcid": f"PMC{i}"} for i in range(100, 150)])
    index.save(tmp_path / "ix")
    assert sorted(p.name for p in (tmp_path / "ix" / "records").iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    assert pq.read_table(tmp_path / "ix" / "records" / "part-00000.parquet").num_rows == 100

    loaded = FigureIndex.load(tmp_path / "ix")
    assert len(loaded) == 150 and loaded.kind == "flat"
    expected = index.search_vectors(queries, 5)
    np.testing.assert_array_equal(loaded.search_vectors(queries, 5)[1], expected[1])
    assert loaded.record(120)["pmcid"] == "PMC120" and loaded.record(120)["year"] is None
    assert loaded.record(3)["year"] == 2003


def test_bad_input_is_refused_with_clear_errors(tmp_path):
    index = FigureIndex(8)
    with pytest.raises(FigureIndexError, match="dimension 4"):
        index.add(np.ones((2, 4)))
    with pytest.raises(FigureIndexError, match="2 vectors but 1 records"):
        index.add(np.ones((2, 8)), [{}])
    with pytest.raises(FigureIndexError, match="unknown index kind"):
        IndexConfig(kind="lsh")
    with pytest.raises(FigureIndexError, match="at least 256"):
        FigureIndex(8, IndexConfig(kind="ivfpq")).add(np.ones((10, 8)))
    with pytest.raises(FigureIndexError, match=r"no meta\.json"):
        FigureIndex.load(tmp_path)
    index.add(np.eye(8)[:3])
    with pytest.raises(FigureIndexError, match="no figure 7"):
        index.record(7)
    hits = index.search(np.eye(8)[1:2], k=50)[0]  # k larger than the index is fine
    assert [h.id for h in hits][:1] == [1] and len(hits) == 3


def test_shard_reader_offsets_point_at_the_image_bytes(shards, figures):
    read = list(iter_shard(shards[0]))
    assert [f.key for f in read] == [f["key"] for f in figures[:6]]
    for figure, original in zip(read, figures[:6], strict=True):
        assert read_image_bytes(figure.shard, figure.offset, figure.size) == original["image"]
        assert figure.caption == original["record"]["caption"]
        assert figure.record["pmcid"] == original["record"]["pmcid"]
    with tarfile.open(shards[0]) as tar:  # cross-check one offset with tarfile's own member table
        member = tar.getmember(f"{figures[0]['key']}.png")
        assert (member.offset_data, member.size) == (read[0].offset, read[0].size)


def test_shard_reader_rejects_a_non_tar(tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"this is not a tar archive" * 40)
    with pytest.raises(ShardError, match="cannot read shard"):
        list(iter_shard(bad))


def test_built_index_holds_every_readable_figure_with_its_record(figure_index, figures, shards):
    assert len(figure_index) == len(figures)  # the undecodable image was skipped
    index_dir = figure_index.folder
    assert [shard_location(index_dir, name) for name in figure_index.shards] == [str(s.resolve()) for s in shards]
    assert not any(name.startswith("/") for name in figure_index.shards)  # relative: the index can move
    table = figure_index.records
    assert table.column("pmcid").to_pylist() == [f["record"]["pmcid"] for f in figures]
    assert table.column("caption").to_pylist() == [f["record"]["caption"] for f in figures]
    row = figure_index.record(7)
    assert row["license"] == "CC BY" and row["fig_id"] == figures[7]["record"]["fig_id"]
    assert read_image_bytes(shard_location(index_dir, row["shard"]), row["offset"], row["size"]) == figures[7]["image"]


def test_index_moved_with_its_shards_still_reads_images(tmp_path, figure_index, figures, shards):
    index_dir, shard_dir = figure_index.folder, shards[0].parent
    moved = tmp_path / "moved"
    shutil.copytree(index_dir.parent, moved / index_dir.parent.name)  # the index and its corpus move together
    shutil.copytree(shard_dir, moved / shard_dir.name)
    loaded = FigureIndex.load(moved / index_dir.parent.name / index_dir.name)
    row = loaded.record(2)
    location = shard_location(loaded.folder, row["shard"])
    assert location == str((moved / shard_dir.name / "train-000000.tar").resolve())
    assert read_image_bytes(location, row["offset"], row["size"]) == figures[2]["image"]


def test_build_is_incremental(tmp_path, embedder, shards, figure_index):
    out = tmp_path / "ix"
    first = build_index(embedder, [str(shards[0])], out)
    assert (first.figures_added, first.total) == (6, 6)
    second = build_index(embedder, expand_shards([str(shards[0].parent / "train-{000000..000001}.tar")]), out)
    assert second.shards_skipped == [str(shards[0].resolve())]
    assert (second.figures_added, second.figures_skipped, second.total) == (4, 1, 10)
    grown = FigureIndex.load(out)
    # the incrementally built index equals the one built in one go
    np.testing.assert_allclose(
        grown.faiss_index.reconstruct_n(0, 10), figure_index.faiss_index.reconstruct_n(0, 10), atol=1e-5
    )
    assert grown.records.column("key").to_pylist() == figure_index.records.column("key").to_pylist()


def test_build_refuses_another_model_and_missing_shards(tmp_path, embedder, index_dir):
    other = type(embedder)(embedder.model, embedder.transform, embedder.tokenizer, name="small", device="cpu")
    with pytest.raises(FigureIndexError, match="built with model 'local-dir:"):
        build_index(other, [], index_dir)
    with pytest.raises(FileNotFoundError, match="no shards match"):
        expand_shards([str(tmp_path / "nothing-*.tar")])
