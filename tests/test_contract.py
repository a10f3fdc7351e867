"""The shard contract across stages: ``corpus build`` writes shards once, and every consumer reads the same ones.

Two corpora are built with the CLI from real fixtures: three PMC packages (figures with captions) and a labelled
image folder (blood smears and chest X-rays, classes in the records). Then, on exactly those shards: the tiny
model trains two steps on CPU, ``eval`` scores retrieval and zero-shot, ``index build`` embeds the figures,
and the service finds a figure and serves its image bytes straight from the shard.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from biomedclip.cli import main

PACKAGES = (
    "extracted/PMC10802347/PMC10802347",
    "oa_package_tarballs/PMC7112410.tar.gz",
    "oa_package_tarballs/PMC7135076.tar.gz",
)
LABELLED = {
    "blood_smear": [f"images/bccd/JPEGImages/BloodImage_0000{i}.jpg" for i in range(3)],
    "chest_xray": [
        f"images/chest_xray/tbx11k_test_data/imgs/{p}.png" for p in ("health/h0001", "tb/tb0005", "tb/tb0007")
    ],
}


def cli(*args: object) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, f"biomedclip {' '.join(map(str, args))} failed:\n{result.output}"
    return result.output


@pytest.fixture(scope="module")
def corpora(shared_fixtures: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """OUT folders of ``corpus build`` over the PMC packages and over the labelled image folder."""
    root = tmp_path_factory.mktemp("contract")
    (root / "pmc").mkdir()
    for package in PACKAGES:
        source = shared_fixtures / "pmc/packages" / package
        copy = shutil.copytree if source.is_dir() else shutil.copy
        copy(source, root / "pmc" / source.name)
    for label, files in LABELLED.items():
        (root / "labelled" / label).mkdir(parents=True)
        for file in files:
            shutil.copy(shared_fixtures / file, root / "labelled" / label)
    common = ("--workers", 0, "--image.max-short-side", 64)
    cli("corpus", "build", "--source", root / "pmc", "--out", root / "out-pmc", *common)
    cli("corpus", "build", "--source", f"imagefolder:{root / 'labelled'}", "--out", root / "out-labelled", *common)
    return {"pmc": root / "out-pmc", "labelled": root / "out-labelled", "root": root}


def _samples_in(shard: Path) -> int:
    """Distinct keys among a tar's member names (tarfile, independent of biomedclip.shards)."""
    with tarfile.open(shard) as tar:
        return len({name.rsplit("/", 1)[-1].split(".", 1)[0] for name in tar.getnames()})


@pytest.mark.parametrize("corpus", ["pmc", "labelled"])
def test_corpus_build_writes_sizes_json_matching_shards_and_catalog(corpora, corpus: str) -> None:
    shards = corpora[corpus] / "shards"
    sizes = json.loads((shards / "sizes.json").read_text())
    assert sizes == {p.name: _samples_in(p) for p in sorted(shards.glob("*.tar"))}
    catalog = pq.read_table(corpora[corpus] / "catalog.parquet").to_pylist()
    assert Counter(r["shard"] for r in catalog if r["status"] == "accepted") == Counter(sizes)
    assert sum(sizes.values()) == sum(r["status"] == "accepted" for r in catalog) >= 6
    assert {name.split("-")[0] for name in sizes} == {"train", "val", "test"}


def test_open_clip_reads_the_sizes_manifest(corpora) -> None:
    from open_clip_train.data import get_dataset_size

    shards = corpora["labelled"] / "shards"
    names = sorted(p.name for p in shards.glob("*.tar"))
    spec = "::".join(str(shards / name) for name in names)
    assert get_dataset_size(spec) == (sum(_samples_in(shards / name) for name in names), len(names))


@pytest.fixture(scope="module")
def trained(corpora) -> Path:
    """Two CPU steps of the tiny model on the PMC corpus's train shard plus the labelled corpus (a folder, so all
    its splits: the test is about reading shards, not about a clean split); returns the run folder."""
    run = corpora["root"] / "run"
    overrides = {
        "model.name": "tiny",
        "model.patch_dropout": 0.0,
        "model.grad_checkpointing": False,
        "data.train": f"{corpora['pmc'] / 'shards'}/train-{{000000..000000}}.tar::{corpora['labelled'] / 'shards'}",
        "data.workers": 0,
        "data.shuffle_buffer": 4,
        "optim.batch_size": 2,
        "optim.max_steps": 2,
        "optim.warmup_steps": 1,
        "run.output_dir": run,
        "run.precision": "fp32",
        "run.device": "cpu",
        "run.log_every": 1,
        "run.tensorboard": False,
    }
    cli("train", *(item for key, value in overrides.items() for item in (f"--{key}", value)))
    return run


def test_train_reads_the_shards(trained: Path) -> None:
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    assert all(r["skipped_samples"] == 0 and r["skipped_shards"] == 0 for r in train)
    assert (trained / "final" / "open_clip_config.json").is_file()


def test_eval_retrieval_and_zeroshot_on_the_shards(corpora, trained: Path, tmp_path: Path) -> None:
    model = f"local-dir:{trained / 'final'}"
    pmc_test = json.loads((corpora["pmc"] / "shards" / "sizes.json").read_text())
    cli("eval", "retrieval", "--model", model, "--dataset", f"shards:{corpora['pmc'] / 'shards'}", "--out", tmp_path)
    # the full spec grammar, and imagefolder-built shards as a labelled dataset over all their splits
    labelled = f"shards:{corpora['labelled'] / 'shards'}/*.tar"
    cli("eval", "zeroshot", "--model", model, "--dataset", labelled, "--split", "all", "--out", tmp_path)
    results = {r["task"]: r for r in map(json.loads, map(Path.read_text, tmp_path.glob("*.json")))}
    n_test = sum(v for k, v in pmc_test.items() if k.startswith("test-"))
    assert results["retrieval"]["metrics"]["n_images"] == n_test >= 1
    assert 0.0 <= results["retrieval"]["metrics"]["mean_recall"] <= 1.0
    assert results["zeroshot"]["settings"]["classnames"] == sorted(LABELLED)

    from biomedclip.evaluate.datasets import load_dataset

    data = load_dataset(labelled, "all")  # every split: each sample's split is read from its record
    folder_of = {Path(f).stem: label for label, files in LABELLED.items() for f in files}
    truth = [next(label for stem, label in folder_of.items() if key.endswith(f"_{stem}")) for key in data.keys]
    assert [data.classnames[label] for label in data.labels] == truth and len(truth) == len(folder_of)


def test_index_and_service_serve_figures_from_the_shards(corpora, trained: Path) -> None:
    from fastapi.testclient import TestClient

    import biomedclip
    from biomedclip.serve.app import create_app
    from biomedclip.serve.index import FigureIndex
    from biomedclip.shards import iter_samples

    shards = corpora["pmc"] / "shards"
    index_dir = corpora["root"] / "index"
    cli("index", "build", "--model", f"local-dir:{trained / 'final'}", "--shards", shards, "--out", index_dir)
    index = FigureIndex.load(index_dir)
    sizes = json.loads((shards / "sizes.json").read_text())
    assert len(index) == sum(sizes.values())
    assert sorted(index.shards) == sorted(f"../out-pmc/shards/{name}" for name in sizes)

    images = {s.key: s.data["jpg"] for p in sorted(shards.glob("*.tar")) for s in iter_samples(str(p))}
    client = TestClient(create_app(biomedclip.load(f"local-dir:{trained / 'final'}", device="cpu"), index))
    response = client.get("/search", params={"q": "microscopy of cells", "k": 3})
    assert response.status_code == 200, response.text
    hits = response.json()["results"]
    assert len(hits) == 3
    first = index.record(hits[0]["id"])
    image = client.get(hits[0]["image_url"])
    assert image.status_code == 200 and image.content == images[first["key"]]
