"""``biomedclip embed --shards``: vector shards of the bundled corpus (figures and panels), equal to the Python API's
embeddings, resumable after ``kill -9``, the same folder under torchrun and on Ray, damaged inputs accounted for."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

import biomedclip
from biomedclip.cli import main
from biomedclip.serve.embed_run import Rank, embed_on_ray
from biomedclip.serve.index import RECORD_COLUMNS
from biomedclip.serve.vector_shards import vector_stem

from .conftest import write_shard

REPO = Path(__file__).resolve().parents[2]
STEMS = ["panels-test-000000", "panels-train-000000", "panels-val-000000", "test-000000", "train-000000",
         "val-000000"]  # fmt: skip


def invoke(*args: object, code: int = 0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``corpus build --unit both`` over the bundled sample: figure shards and panel shards."""
    from biomedclip.corpus.build import BuildConfig, build
    from biomedclip.corpus.sources import open_source

    out = tmp_path_factory.mktemp("corpus") / "out"
    build([open_source(str(REPO / "data/sample/pmc"))], out, BuildConfig(unit="both"), workers=0)
    return out


@pytest.fixture(scope="module")
def spec(corpus: Path) -> str:
    return f"{corpus}/shards::{corpus}/panels/shards"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, model_name: str, spec: str) -> Path:
    """One uninterrupted run in this process; the other runs write sibling folders, so shard names agree.

    With one CPU thread, as torchrun and Ray give each process: oneDNN's kernels may sum in another order with
    more threads (seen here: 6 of 16,384 float16 values one unit in the last place apart with 2 threads).
    """
    out = tmp_path_factory.mktemp("vectors") / "one"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        invoke("embed", "-m", model_name, "--device", "cpu", "-s", spec, "-o", out, "--batch-size", 5)
    finally:
        torch.set_num_threads(threads)
    return out


def tar_samples(shard: Path) -> dict[str, dict]:
    """key -> {image bytes, offset, size, caption, record} read with tarfile (independent of biomedclip)."""
    samples: dict[str, dict] = {}
    with tarfile.open(shard) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            data = tar.extractfile(member).read()
            sample = samples.setdefault(key, {})
            if ext == "jpg":
                sample.update(image=data, offset=member.offset_data, size=member.size)
            elif ext == "txt":
                sample["caption"] = data.decode()
            elif ext == "json":
                sample["record"] = json.loads(data)
    return samples


def test_vectors_equal_the_api_and_records_describe_the_shard(reference: Path, corpus: Path, model_name: str):
    header = json.loads((reference / "vectors.json").read_text())
    clip = biomedclip.load(model_name, device="cpu")
    assert header == {"format": "biomedclip-vectors/1", "model": model_name, "dim": clip.dim, "dtype": "float16"}
    assert sorted(p.name.removesuffix(".done.json") for p in reference.glob("*.done.json")) == STEMS
    sizes = {**json.loads((corpus / "shards/sizes.json").read_text())}
    sizes.update({f"panels-{k}": v for k, v in json.loads((corpus / "panels/shards/sizes.json").read_text()).items()})
    panels = 0
    for stem in STEMS:
        done = json.loads((reference / f"{stem}.done.json").read_text())
        panel = stem.startswith("panels-")
        shard = corpus / ("panels/shards" if panel else "shards") / f"{stem.removeprefix('panels-')}.tar"
        assert done["rows"] == sizes[f"{stem}.tar"] and done["skipped"] == []
        assert done["source"] == {"location": os.path.relpath(shard, reference), "size": shard.stat().st_size,
                                  "sha256": hashlib.sha256(shard.read_bytes()).hexdigest()}  # fmt: skip
        vectors = np.load(reference / f"{stem}.npy", mmap_mode="r")
        assert vectors.dtype == np.float16 and vectors.shape == (done["rows"], clip.dim)
        assert done["npy_sha256"] == hashlib.sha256((reference / f"{stem}.npy").read_bytes()).hexdigest()
        table = pq.read_table(reference / f"{stem}.parquet")
        assert table.column_names == list(RECORD_COLUMNS)
        records = table.to_pylist()
        samples = tar_samples(shard)
        assert [r["key"] for r in records] == list(samples)  # tar order, every sample
        for record in records:
            sample = samples[record["key"]]
            assert (record["offset"], record["size"]) == (sample["offset"], sample["size"])
            assert record["image_sha256"] == hashlib.sha256(sample["image"]).hexdigest()
            assert record["caption"] == sample["caption"] and record["shard"] == done["source"]["location"]
            assert record["pmcid"] == sample["record"]["pmcid"] and record["split"] == sample["record"]["split"]
            assert record["parent"] == sample["record"].get("parent", "")
            panels += bool(record["parent"])
        expected = clip.embed_images([samples[r["key"]]["image"] for r in records])
        np.testing.assert_allclose(np.asarray(vectors, np.float32), expected, atol=1e-3, rtol=0)
        np.testing.assert_allclose(np.linalg.norm(np.asarray(vectors, np.float32), axis=1), 1, atol=2e-3)
    assert panels == sum(v for k, v in sizes.items() if k.startswith("panels-"))


def test_kill_9_then_rerun_gives_the_same_bytes_and_redoes_only_unfinished_shards(
    reference: Path, model_name: str, spec: str
):
    out = reference.parent / "killed"
    command = [sys.executable, "-m", "biomedclip", "embed", "-m", model_name, "--device", "cpu", "-s", spec, "-o",
               str(out), "--batch-size", "5"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as the reference run
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("*.done.json")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.done.json")}
    assert 1 <= len(first) < len(STEMS), "the run was not interrupted mid-way"
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert rerun.returncode == 0, rerun.stderr
    kept = {line.split(":")[0].strip() for line in rerun.stdout.splitlines() if "kept (done)" in line}
    assert kept == {name.removesuffix(".done.json") for name in first}
    assert f"{len(STEMS) - len(first)} shards embedded" in rerun.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.done.json") if p.name in first} == first
    assert folder_bytes(out) == folder_bytes(reference)  # no .tmp left either


def test_two_torchrun_processes_write_the_same_folder(reference: Path, model_name: str, spec: str):
    out = reference.parent / "torchrun"
    ran = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "biomedclip",
         "embed", "-m", model_name, "--device", "cpu", "-s", spec, "-o", str(out), "--batch-size", "5"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "rank 0/2: vectors" in ran.stdout and "rank 1/2: vectors" in ran.stdout
    embedded_by = {
        rank: sorted(line.split(": ")[1] for line in ran.stdout.splitlines() if f"rank {rank}/2: " in line and
                     line.endswith(", embedded"))
        for rank in (0, 1)
    }  # fmt: skip
    assert embedded_by == {0: ["panels-train-000000", "test-000000", "val-000000"],
                           1: ["panels-test-000000", "panels-val-000000", "train-000000"]}  # fmt: skip
    assert folder_bytes(out) == folder_bytes(reference)


def test_ranks_take_disjoint_shares_that_cover_every_shard():
    shards = [f"s{i}" for i in range(11)]
    shares = [Rank(rank, 3).share(shards) for rank in range(3)]
    assert shares == [["s0", "s3", "s6", "s9"], ["s1", "s4", "s7", "s10"], ["s2", "s5", "s8"]]


@pytest.mark.slow
def test_ray_engine_writes_the_same_folder(reference: Path, model_name: str, spec: str):
    import ray

    from biomedclip.shards import expand_shards

    out = reference.parent / "ray"
    try:
        outcomes = embed_on_ray(model_name, "cpu", expand_shards(spec), out, workers=2, batch_size=5)
    finally:
        ray.shutdown()
    assert [o.embedded and not o.error for o in outcomes] == [True] * len(STEMS)
    assert folder_bytes(out) == folder_bytes(reference)


def test_undecodable_image_is_listed_and_tampered_vectors_are_redone(tmp_path: Path, shards, model_name: str):
    out = tmp_path / "vectors"
    args = ("embed", "-m", model_name, "--device", "cpu", "-s", shards[0].parent, "-o", out)
    invoke(*args)
    done = json.loads((out / "train-000001.done.json").read_text())
    assert done["rows"] == 4 and [item["key"] for item in done["skipped"]] == ["PMC1_broken"]
    assert (
        done["skipped"][0]["reason"].startswith("undecodable image: ") and " at 0x" not in done["skipped"][0]["reason"]
    )
    assert "PMC1_broken" not in pq.read_table(out / "train-000001.parquet").column("key").to_pylist()
    original = folder_bytes(out)

    npy = out / "train-000001.npy"
    tampered = bytearray(npy.read_bytes())
    tampered[-1] ^= 0x40  # one bit of the last vector, same size
    npy.write_bytes(bytes(tampered))
    (out / "train-000000.npy.tmp").write_bytes(b"left by a killed run")
    again = invoke(*args).output
    assert (
        "train-000001: 4 vectors, 1 skipped, embedded" in again and "train-000000: 6 vectors, 0 skipped, kept" in again
    )
    (out / "train-000000.npy.tmp").unlink()
    assert folder_bytes(out) == original

    (out / "train-000000.parquet").write_bytes(b"")  # a damaged record file is redone too
    assert "train-000000: 6 vectors, 0 skipped, embedded" in invoke(*args).output
    assert folder_bytes(out) == original


def test_a_changed_source_shard_is_embedded_again(tmp_path: Path, figures, model_name: str):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_shard(corpus / "train-000000.tar", figures[:3])
    args = ("embed", "-m", model_name, "--device", "cpu", "-s", corpus, "-o", tmp_path / "vectors")
    invoke(*args)
    write_shard(corpus / "train-000000.tar", figures[1:4])  # rebuilt corpus: same name, other figures
    assert "train-000000: 3 vectors, 0 skipped, embedded" in invoke(*args).output
    keys = pq.read_table(tmp_path / "vectors/train-000000.parquet").column("key").to_pylist()
    assert keys == [f["key"] for f in figures[1:4]]


def test_refusals(tmp_path: Path, shards, model_name: str):
    other = tmp_path / "other"
    other.mkdir()
    (other / "train-000000.tar").write_bytes(shards[0].read_bytes())
    clash = invoke("embed", "-m", model_name, "-s", f"{shards[0]}::{other}", "-o", tmp_path / "v", code=2).output
    assert "would both be written as train-000000" in clash
    invoke("embed", "-m", model_name, "--device", "cpu", "-s", shards[0], "-o", tmp_path / "v")
    elsewhere = invoke("embed", "-m", model_name, "--device", "cpu", "-s", other, "-o", tmp_path / "v", code=1).output
    assert "holds the vectors of" in elsewhere  # another corpus's shard under the same name is not overwritten
    header = json.loads((tmp_path / "v/vectors.json").read_text())
    (tmp_path / "v/vectors.json").write_text(json.dumps({**header, "model": "another"}))
    assert "holds vectors of 'another'" in invoke("embed", "-m", model_name, "--device", "cpu", "-s", shards[0],
                                                 "-o", tmp_path / "v", code=1).output  # fmt: skip
    assert "either IMAGES or --shards" in invoke("embed", "-m", model_name, "-o", tmp_path / "x", code=2).output


@pytest.mark.parametrize(
    ("shard", "stem"),
    [("out/shards/train-000001.tar", "train-000001"), ("out/panels/shards/val-000000.tar", "panels-val-000000"),
     ("s3://bucket/corpus/panels/shards/test-000002.tar", "panels-test-000002"), ("a/panels/x.tar", "x")],
)  # fmt: skip
def test_vector_stems(shard: str, stem: str):
    assert vector_stem(shard) == stem


def test_decode_threads_do_not_change_the_bytes(tmp_path: Path, shards, model_name: str):
    for threads in (0, 3):
        invoke("embed", "-m", model_name, "--device", "cpu", "-s", shards[0].parent, "-o", tmp_path / f"t{threads}",
               "--decode-threads", threads, "--batch-size", 4)  # fmt: skip
    assert folder_bytes(tmp_path / "t0") == folder_bytes(tmp_path / "t3")


def test_an_unreadable_shard_fails_alone_and_a_rerun_finishes(tmp_path: Path, figures, model_name: str):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_shard(corpus / "train-000000.tar", figures[:2])
    (corpus / "train-000001.tar").write_bytes(b"not a tar at all" * 64)
    args = ("embed", "-m", model_name, "--device", "cpu", "-s", corpus, "-o", tmp_path / "vectors")
    failed = invoke(*args, code=1).output
    assert "1 shard(s) could not be embedded, e.g. train-000001" in failed and "rerun to retry" in failed
    assert sorted(p.name for p in (tmp_path / "vectors").glob("*.done.json")) == ["train-000000.done.json"]
    write_shard(corpus / "train-000001.tar", figures[2:3])
    again = invoke(*args).output
    assert (
        "train-000000: 2 vectors, 0 skipped, kept" in again and "train-000001: 1 vectors, 0 skipped, embedded" in again
    )
