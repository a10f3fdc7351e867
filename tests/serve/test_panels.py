"""An index of figure and panel shards (``corpus build --unit both``): panel records keep their lineage, and the
service links each panel to its parent figure."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from biomedclip.corpus.build import BuildConfig, build
from biomedclip.corpus.sources import open_source
from biomedclip.serve.app import create_app
from biomedclip.serve.build import build_index
from biomedclip.serve.index import FigureIndex
from biomedclip.shards import expand_shards

SAMPLE = Path(__file__).resolve().parents[2] / "data/sample/pmc"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "out"
    build([open_source(str(SAMPLE))], out, BuildConfig(unit="both"), workers=0)
    return out


@pytest.fixture(scope="module")
def panel_index(corpus: Path, embedder, tmp_path_factory: pytest.TempPathFactory) -> FigureIndex:
    shards = expand_shards(f"{corpus}/shards::{corpus}/panels/shards")
    folder = tmp_path_factory.mktemp("index") / "index"
    report = build_index(embedder, shards, folder)
    assert report.figures_skipped == 0
    return FigureIndex.load(folder)


def test_panel_records_keep_parent_box_and_label(corpus: Path, panel_index: FigureIndex) -> None:
    records = {r["key"]: r for r in panel_index.records.to_pylist()}
    panels = [r for r in pq.read_table(corpus / "panels/catalog.parquet").to_pylist() if r["status"] == "accepted"]
    accepted = [r for r in pq.read_table(corpus / "catalog.parquet").to_pylist() if r["status"] == "accepted"]
    assert panels and len(records) == len(panels) + len(accepted)
    for panel in panels:
        record = records[panel["key"]]
        assert (record["parent"], record["box"], record["panel_label"], record["subcaption"]) == (
            panel["parent"], panel["box"], panel["panel_label"] or "", panel["subcaption"] or "",
        )  # fmt: skip
    figures = [r for r in records.values() if not r["parent"]]
    assert figures and all(r["box"] is None for r in figures)
    rows = panel_index.parent_rows()
    assert set(rows) == {p["parent"] for p in panels if p["parent"] in records}
    assert all(panel_index.record(row)["key"] == key for key, row in rows.items())


def test_the_service_links_a_panel_to_its_parent(embedder, panel_index: FigureIndex) -> None:
    keys = panel_index.records["key"].to_pylist()
    parents = panel_index.records["parent"].to_pylist()
    panel_row = next(i for i, parent in enumerate(parents) if parent)
    with TestClient(create_app(embedder, panel_index)) as client:
        panel = client.get(f"/figures/{panel_row}").json()
        assert panel["parent_id"] == keys.index(parents[panel_row])
        parent = client.get(f"/figures/{panel['parent_id']}").json()
        assert parent["parent_id"] is None and parent["parent"] == "" and parent["box"] is None
        assert (parent["pmcid"], parent["fig_id"]) == (panel["pmcid"], panel["fig_id"])
        if panel["subcaption"]:
            assert panel["subcaption"] in panel["caption"]
        k = min(len(keys), 50)
        found = client.get("/search", params={"q": panel["caption"][:200], "k": k}).json()["results"]
        assert len(found) == k and any(hit["parent_id"] is not None for hit in found)
        for hit in found:
            expected = keys.index(parents[hit["id"]]) if parents[hit["id"]] else None
            assert hit["parent_id"] == expected
        assert client.get(f"/figures/{panel_row}/image").status_code == 200
