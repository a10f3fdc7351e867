"""An index records the corpus it was built from: a rebuilt or damaged corpus is re-embedded by ``index build``,
refused by ``serve`` at start, and never served as wrong bytes with 200."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from biomedclip.cli import main
from biomedclip.serve.app import create_app
from biomedclip.serve.build import build_index
from biomedclip.serve.identity import changed_shards
from biomedclip.serve.index import FigureIndex
from biomedclip.serve.shards import read_image_bytes, shard_location

from .conftest import write_shard


def _corpus(tmp_path: Path, figures: list[dict]) -> tuple[Path, list[str]]:
    """A corpus folder with two shards of real figures (6 and 4)."""
    folder = tmp_path / "shards"
    folder.mkdir()
    write_shard(folder / "train-000000.tar", figures[:6])
    write_shard(folder / "train-000001.tar", figures[6:])
    return folder, [str(folder / "train-000000.tar"), str(folder / "train-000001.tar")]


def _served_bytes_are_the_records(index_dir: Path, figures: list[dict]) -> None:
    """Every record's offset holds that figure's image (an independent reference: the fixture's own bytes)."""
    index = FigureIndex.load(index_dir)
    image_of = {figure["key"]: figure["image"] for figure in figures}
    for row in index.records.to_pylist():
        data = read_image_bytes(shard_location(index.folder, row["shard"]), row["offset"], row["size"])
        assert data == image_of[row["key"]], row["key"]
        assert row["image_sha256"] == hashlib.sha256(data).hexdigest()


def test_build_after_a_corpus_rebuild_reembeds_the_changed_index(tmp_path, embedder, figures) -> None:
    folder, shards = _corpus(tmp_path, figures)
    out = tmp_path / "index"
    assert build_index(embedder, shards, out).total == 10
    write_shard(folder / "train-000000.tar", figures[4:] + figures[:2])  # the corpus rebuilt: other figures, order
    report = build_index(embedder, shards, out)
    assert set(report.changed) == {"../shards/train-000000.tar"}
    assert report.shards_skipped == [] and len(report.shards_added) == 2
    index = FigureIndex.load(out)
    assert index.records.column("key").to_pylist() == [f["key"] for f in figures[4:] + figures[:2] + figures[6:]]
    _served_bytes_are_the_records(out, figures)
    assert changed_shards(index) == {}


def test_a_shard_that_grew_in_place_is_indexed_in_full(tmp_path, embedder, figures) -> None:
    """The append-only case: the last shard gains figures under the same name."""
    folder, shards = _corpus(tmp_path, figures[:8])
    out = tmp_path / "index"
    assert build_index(embedder, shards, out).total == 8
    write_shard(folder / "train-000001.tar", figures[6:])  # 2 -> 4 figures
    report = build_index(embedder, shards, out)
    assert report.total == 10 and "train-000001.tar" in next(iter(report.changed))
    _served_bytes_are_the_records(out, figures)


def test_a_held_shard_not_named_again_stays_indexed_and_a_missing_one_goes(tmp_path, embedder, figures) -> None:
    folder, shards = _corpus(tmp_path, figures)
    out = tmp_path / "index"
    build_index(embedder, shards, out)
    write_shard(folder / "train-000000.tar", figures[:5])
    report = build_index(embedder, [], out)  # nothing named: the index keeps covering what it held
    assert report.total == 9
    os.unlink(folder / "train-000001.tar")
    report = build_index(embedder, [], out)
    assert report.changed == {"../shards/train-000001.tar": "missing"} and report.total == 5
    assert FigureIndex.load(out).shards == ["../shards/train-000000.tar"]


def test_a_copied_corpus_with_new_times_is_not_a_change(tmp_path, embedder, figures) -> None:
    _, shards = _corpus(tmp_path, figures)
    build_index(embedder, shards, tmp_path / "index")
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "index", moved / "index")
    shutil.copytree(tmp_path / "shards", moved / "shards")  # copies get new modification times
    os.utime(moved / "shards" / "train-000000.tar", ns=(1, 1))  # certainly another time: the SHA-256 decides
    assert changed_shards(FigureIndex.load(moved / "index")) == {}
    report = build_index(embedder, [], moved / "index")  # records the new times: the next start check is a stat
    assert report.changed == {} and report.total == 10
    meta = json.loads((moved / "index" / "meta.json").read_text())
    assert meta["shard_identities"]["../shards/train-000000.tar"]["mtime_ns"] == 1


def _flip_image_bytes(shard: Path, offset: int, size: int) -> None:
    """Overwrite one image's bytes in place with other bytes of the same length (the shard keeps its size)."""
    with open(shard, "r+b") as handle:
        handle.seek(offset)
        original = handle.read(min(size, 64))
        handle.seek(offset)
        handle.write(bytes(255 - b for b in original))


def test_serve_refuses_an_index_whose_shards_changed(tmp_path, embedder, model_name, figures) -> None:
    folder, shards = _corpus(tmp_path, figures)
    build_index(embedder, shards, tmp_path / "index")
    row = FigureIndex.load(tmp_path / "index").record(1)
    _flip_image_bytes(folder / "train-000000.tar", row["offset"], row["size"])
    result = CliRunner().invoke(main, ["serve", "--index", str(tmp_path / "index"), "-m", model_name])
    assert result.exit_code == 1, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "no longer matches its corpus" in line and "train-000000.tar (its bytes changed" in line
    assert "biomedclip index build" in line


def test_an_image_changed_while_serving_is_an_error_not_wrong_bytes(tmp_path, embedder, figures) -> None:
    folder, shards = _corpus(tmp_path, figures)
    build_index(embedder, shards, tmp_path / "index")
    index = FigureIndex.load(tmp_path / "index")
    with TestClient(create_app(embedder, index), raise_server_exceptions=False) as client:
        intact = client.get("/figures/1/image")
        assert intact.status_code == 200 and intact.content == figures[1]["image"]
        row = index.record(1)
        _flip_image_bytes(folder / "train-000000.tar", row["offset"], row["size"])
        changed = client.get("/figures/1/image")
        assert changed.status_code == 503, changed.status_code
        assert "changed since the index was built" in changed.json()["detail"]
        assert client.get("/figures/2/image").content == figures[2]["image"]  # the others are still served


def test_an_index_without_image_digests_serves_only_image_bytes(tmp_path, embedder, figures) -> None:
    """Records written before the digest existed: the bytes must at least start like an image."""
    folder, shards = _corpus(tmp_path, figures)
    build_index(embedder, shards, tmp_path / "index")
    index = FigureIndex.load(tmp_path / "index")
    index._parts = [part.drop_columns(["image_sha256"]) for part in index._parts]
    index._records = None
    with TestClient(create_app(embedder, index), raise_server_exceptions=False) as client:
        served = client.get("/figures/0/image")
        assert served.status_code == 200
        Image.open(io.BytesIO(served.content)).verify()
        row = index.record(0)
        with open(folder / "train-000000.tar", "r+b") as handle:
            handle.seek(row["offset"])
            handle.write(b"\0" * 16)
        assert client.get("/figures/0/image").status_code == 503


def test_index_meta_records_each_shard_size_and_digest(tmp_path, embedder, figures) -> None:
    _, shards = _corpus(tmp_path, figures)
    build_index(embedder, shards, tmp_path / "index")
    meta = json.loads((tmp_path / "index" / "meta.json").read_text())
    for shard in shards:
        recorded = meta["shard_identities"][f"../shards/{Path(shard).name}"]
        assert recorded["bytes"] == os.path.getsize(shard)
        assert recorded["sha256"] == hashlib.sha256(Path(shard).read_bytes()).hexdigest()


@pytest.mark.parametrize("command", ["serve", "search"])
def test_an_index_from_before_identities_is_refused_with_the_fix(tmp_path, embedder, model_name, figures, command):
    _, shards = _corpus(tmp_path, figures)
    build_index(embedder, shards, tmp_path / "index")
    meta_path = tmp_path / "index" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["shard_identities"]
    meta_path.write_text(json.dumps(meta))
    args = ["serve", "--index"] if command == "serve" else ["index", "search"]
    result = CliRunner().invoke(main, [*args, str(tmp_path / "index"), *(["x-ray"] if command == "search" else [])])
    assert result.exit_code == 1, result.output
    assert "an older index" in result.output and "index build" in result.output
