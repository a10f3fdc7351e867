"""The CLI commands embed, classify, index build|search and serve."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from biomedclip.cli import main
from biomedclip.serve.index import FigureIndex


def invoke(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def images(shared_fixtures):
    return sorted((shared_fixtures / "images" / "bccd" / "JPEGImages").glob("*.jpg"))[:3]


def test_embed_writes_parquet(tmp_path, images, embedder, model_name):
    out = tmp_path / "emb.parquet"
    result = invoke("embed", *images, "--model", model_name, "--device", "cpu", "--out", out, "--text", "blood smear")
    assert "embedded 3 images and 1 texts" in result.output
    table = pq.read_table(out)
    assert table.column("kind").to_pylist() == ["image"] * 3 + ["text"]
    assert table.column("input").to_pylist()[:3] == [str(p) for p in images]
    vectors = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_allclose(vectors[:3], embedder.embed_images(images), atol=1e-5)
    np.testing.assert_allclose(vectors[3], embedder.embed_texts("blood smear")[0], atol=1e-5)


def test_classify_prints_probabilities(images, embedder, model_name):
    result = invoke("classify", *images[:2], "--labels", "white blood cell, platelet", "--model", model_name, "--json")
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in images[:2]]
    expected = embedder.classify(images[:2], ["white blood cell", "platelet"])
    for line, row in zip(lines, expected, strict=True):
        assert line["probabilities"]["white blood cell"] == pytest.approx(float(row[0]), abs=1e-5)
        assert line["prediction"] == ["white blood cell", "platelet"][int(np.argmax(row))]
    table = invoke("classify", images[0], "--labels", "a,b", "--model", model_name).output
    assert f"{images[0]}: " in table and "%  a" in table


def test_bad_cli_input_fails_with_a_message(tmp_path, images, model_name):
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("text")
    result = invoke("classify", not_image, "--labels", "a,b", "--model", model_name, ok=False)
    assert result.exit_code == 2 and "cannot read image" in result.output  # an InputError, as in every group
    result = invoke("classify", images[0], "--labels", " , ", "--model", model_name, ok=False)
    assert result.exit_code == 2 and "at least one non-empty label" in result.output
    result = invoke(
        "index", "build", "--model", model_name, "--shards", tmp_path / "none-*.tar", "--out", tmp_path / "i", ok=False
    )
    assert result.exit_code == 2 and "no shards match" in result.output


def test_index_build_incremental_and_search(tmp_path, shards, figures, model_name):
    out = tmp_path / "index"
    first = invoke("index", "build", "--model", model_name, "--shards", shards[0], "--out", out, "--device", "cpu")
    assert "6 figures (flat)" in first.output
    second = invoke("index", "build", "--model", model_name, "--shards", shards[0].parent, "--out", out)
    assert "10 figures (flat); added 4 from 1 shards, 1 shards already indexed, 1 unreadable" in second.output
    assert len(FigureIndex.load(out)) == 10

    # text search, JSON lines
    hits = [
        json.loads(line)
        for line in invoke("index", "search", out, "an endoscopic image", "-k", "3", "--json").output.splitlines()
    ]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert {"pmcid", "caption", "license", "shard", "offset"} <= set(hits[0])

    # figure -> figure: the figure's own image comes back first
    image = tmp_path / "query.png"
    image.write_bytes(figures[7]["image"])
    result = invoke("index", "search", out, "--image", image, "-k", "2")
    assert result.output.startswith(f"  1. 1.000  {figures[7]['record']['pmcid']}")
    assert "https://pmc.ncbi.nlm.nih.gov/articles/" in result.output
    assert invoke("index", "search", out, ok=False).exit_code == 2  # neither text nor --image


@pytest.mark.slow
def test_serve_command_binds_loopback_and_answers(index_dir):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "biomedclip", "serve", "--index", str(index_dir), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.5)
        assert health["figures"] == 10
        assert httpx.get(f"http://127.0.0.1:{port}/").text.count("BiomedCLIP") >= 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("template", ["{} {x}", "{}{!r}", "no placeholder"])
def test_classify_refuses_a_malformed_template_before_loading_the_model(images, template):
    args = ("classify", images[0], "--labels", "a,b", "--template", template, "--model", "no-such-model")
    result = invoke(*args, ok=False)
    assert result.exit_code == 2 and "exactly one {}" in result.output
