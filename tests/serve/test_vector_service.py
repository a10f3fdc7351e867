"""The service on a vector index: figures and panels of the sample corpus embedded into vector shards (as
``biomedclip embed`` writes them), indexed by the streaming build, searched and served through HTTP."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from biomedclip.api import ImageDecodeError, open_image
from biomedclip.corpus.build import BuildConfig, build
from biomedclip.corpus.sources import open_source
from biomedclip.serve.app import create_app
from biomedclip.serve.index import records_table
from biomedclip.serve.shards import index_record, iter_shard
from biomedclip.serve.vector_build import build_vector_index
from biomedclip.serve.vector_folder import write_vector_shard
from biomedclip.serve.vector_index import VectorIndex
from biomedclip.shards import expand_shards

SAMPLE = Path(__file__).resolve().parents[2] / "data/sample/pmc"


@pytest.fixture(scope="module")
def vector_folder(embedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Figure and panel shards of the sample corpus, embedded by the tiny model into a vector folder."""
    corpus = tmp_path_factory.mktemp("corpus") / "out"
    build([open_source(str(SAMPLE))], corpus, BuildConfig(unit="both"), workers=0)
    folder = tmp_path_factory.mktemp("vectors") / "vec"
    for shard in expand_shards(f"{corpus}/shards::{corpus}/panels/shards"):
        images, records = [], []
        for figure in iter_shard(shard):
            try:
                images.append(open_image(figure.image))
            except ImageDecodeError:
                continue
            records.append(index_record(figure, str(Path(shard).resolve())))
        stem = ("panels-" if "/panels/" in shard else "") + Path(shard).stem
        write_vector_shard(folder, stem, embedder.embed_images(images), records_table(records), embedder.name)
    return folder


@pytest.fixture(scope="module")
def records(vector_folder: Path) -> list[dict]:
    """Every record in id order, read straight from the Parquet files (sorted shard names, as the index reads)."""
    names = sorted(p.name.removesuffix(".done.json") for p in vector_folder.glob("*.done.json"))
    return pa.concat_tables([pq.read_table(vector_folder / f"{n}.parquet") for n in names]).to_pylist()


@pytest.fixture(scope="module")
def client(embedder, vector_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("index") / "index"
    build_vector_index(vector_folder, out)
    with TestClient(create_app(embedder, VectorIndex.load(out)), raise_server_exceptions=False) as test_client:
        yield test_client


def test_health_and_filters_describe_the_vector_index(client, records) -> None:
    health = client.get("/healthz").json()
    assert (health["figures"], health["index_kind"]) == (len(records), "ivf-vectors")
    facets = client.get("/filters").json()
    years = [r["year"] for r in records if r["year"] is not None]
    assert (facets["year_min"], facets["year_max"]) == (min(years), max(years))
    assert set(facets["journal"]) == {r["journal"] for r in records if r["journal"]}


def test_text_search_returns_keys_parents_and_exact_scores(client, embedder, records, vector_folder) -> None:
    k = min(len(records), 100)
    results = client.get("/search", params={"q": "chest x-ray", "k": k}).json()["results"]
    assert len(results) == k and len({hit["id"] for hit in results}) == k
    query = embedder.embed_texts(["chest x-ray"])[0]
    names = sorted(p.name.removesuffix(".done.json") for p in vector_folder.glob("*.done.json"))
    vectors = np.concatenate([np.load(vector_folder / f"{n}.npy").astype(np.float32) for n in names])
    expected = vectors @ query
    row_of = {r["key"]: i for i, r in enumerate(records)}
    for hit in results:
        record = records[hit["id"]]
        assert (hit["key"], hit["parent"], hit["caption"]) == (record["key"], record["parent"], record["caption"])
        assert hit["parent_id"] == (row_of[record["parent"]] if record["parent"] else None)
        assert hit["score"] == pytest.approx(expected[hit["id"]], abs=1e-5)
    assert any(hit["parent_id"] is not None for hit in results)  # panels shown with their figure
    scores = [hit["score"] for hit in results]
    assert scores == sorted(scores, reverse=True) and scores[-1] >= np.sort(expected)[-k] - 1e-5  # the k best


def test_filters_full_view_and_image_bytes(client, records) -> None:
    counts = {}
    for r in records:
        counts[r["journal"]] = counts.get(r["journal"], 0) + 1
    journal = min(counts, key=counts.get)  # the rarest: every one of its figures comes back
    found = client.get("/search", params={"q": "figure", "k": 100, "journal": journal}).json()["results"]
    assert len(found) == min(100, counts[journal])
    assert all(records[hit["id"]]["journal"] == journal for hit in found)
    panel = next(i for i, r in enumerate(records) if r["parent"])
    view = client.get(f"/figures/{panel}").json()
    assert view["key"] == records[panel]["key"] and view["parent_id"] is not None
    assert client.get(f"/figures/{view['parent_id']}").json()["key"] == records[panel]["parent"]
    image = client.get(f"/figures/{panel}/image")
    assert image.status_code == 200 and hashlib.sha256(image.content).hexdigest() == records[panel]["image_sha256"]
    assert client.get(f"/figures/{len(records)}").status_code == 404


def test_image_search_finds_the_figure_itself_first(client, records) -> None:
    figure = next(i for i, r in enumerate(records) if not r["parent"])
    data = client.get(f"/figures/{figure}/image").content
    hits = client.post("/search", files={"image": ("f.png", data, "application/octet-stream")}, data={"k": 3})
    assert hits.status_code == 200 and hits.json()["results"][0]["key"] == records[figure]["key"]
