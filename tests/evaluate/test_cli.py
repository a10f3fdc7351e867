"""``biomedclip eval ...`` end to end with the tiny model (random weights) on real fixture data, and the report."""

from __future__ import annotations

import csv
import json
import tarfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from biomedclip.cli import main
from biomedclip.evaluate.datasets import load_dataset
from biomedclip.evaluate.report import confusion_title


@pytest.fixture(scope="module")
def invoke():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    runner = CliRunner()

    def run(*args: str, ok: bool = True, code: int | None = None):
        result = runner.invoke(main, ["eval", *(str(a) for a in args)], catch_exceptions=False)
        assert (result.exit_code == 0) == ok, result.output
        assert code is None or result.exit_code == code, result.output
        return result

    yield run
    torch.set_num_threads(threads)


def _one(folder, task: str) -> dict:
    (path,) = folder.glob(f"{task}__*.result.json")
    return json.loads(path.read_text())


def test_retrieval_and_zeroshot_take_split_all_and_say_what_they_scored(invoke, tmp_path, shards_root, pcam_root):
    """The issue: `eval retrieval --split all` exited 2 ("unknown split")."""
    out = tmp_path / "results"
    common = ["--model", "tiny", "--out", out, "--device", "cpu"]
    result = invoke("retrieval", *common, "--dataset", shards_root, "--split", "all")
    counts = _one(out, "retrieval")["counts"]
    assert counts["n"] == counts["found"] == 12 and counts["rule"] == "all splits, read from the records (12 test)"
    assert "[all]" in result.output
    invoke("zeroshot", *common, "--dataset", f"pcam:{pcam_root}", "--split", "all")
    counts = _one(out, "zeroshot")["counts"]
    assert counts["n"] == counts["found"] == 30 and counts["rule"] == "all official splits"


def test_every_task_then_the_report(invoke, tmp_path, shared_fixtures, shards_root, vqa_rad_root, pcam_root) -> None:
    npz = shared_fixtures / "labeled" / "breastmnist_28_trainval.npz"
    out = tmp_path / "results"
    common = ["--model", "tiny", "--out", out, "--device", "cpu"]
    invoke("zeroshot", *common, "--dataset", npz, "--split", "val", "--cache-dir", tmp_path / "cache")
    zeroshot = _one(out, "zeroshot")
    assert zeroshot["settings"]["classnames"] == ["malignant", "normal or benign"]
    assert zeroshot["metrics"]["n"] == 78 and sum(map(sum, zeroshot["metrics"]["confusion_matrix"])) == 78
    assert list((tmp_path / "cache").glob("*.npy"))
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("classnames: [benign tissue, metastatic tissue]\ntemplates: ['histology of {}']\n")
    invoke("zeroshot", *common, "--dataset", f"pcam:{pcam_root}", "--prompts", prompts)
    invoke("retrieval", *common, "--dataset", shards_root, "--chunk", 5)
    assert _one(out, "retrieval")["metrics"]["n_texts"] == 12  # one-to-one: every caption is its own text
    probe_args = ["--fractions", "0.1,1", "--seeds", "0,1", "--probe-epochs", 3]
    invoke("linear-probe", *common, "--dataset", npz, "--split", "val", *probe_args)
    probe = _one(out, "linear_probe")
    assert probe["settings"]["validation"] == "class-balanced 20% of each training subset"
    assert len(probe["metrics"]["runs"]) == 4
    invoke("vqa", *common, "--dataset", vqa_rad_root, "--epochs", 1, "--hidden", 32, "--layers", 1, "--heads", 2)
    assert _one(out, "vqa")["metrics"]["n"] == 6

    report = tmp_path / "report"
    output = invoke("report", out, "--out", report).output
    assert "merged 5 results" in output
    text = (report / "report.md").read_text()
    assert "## zeroshot" in text and "## linear_probe" in text and "## vqa" in text and "## retrieval" in text
    rows = list(csv.DictReader((report / "results.csv").open()))
    row = next(r for r in rows if r["task"] == "zeroshot" and r["metric"] == "accuracy" and "breast" in r["dataset"])
    assert float(row["value"]) == pytest.approx(zeroshot["metrics"]["accuracy"])
    lp = next(r for r in rows if r["task"] == "linear_probe" and r["metric"] == "accuracy@1")
    assert float(lp["value"]) == pytest.approx(probe["metrics"]["summary"]["1.0"]["accuracy"]["mean"])
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert len([p for p in pngs if p.startswith("confusion__")]) == 2 and len(pngs) == 2 + 5
    assert all((report / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_bad_input_is_a_clean_error(invoke, tmp_path, pcam_root) -> None:
    result = invoke("zeroshot", "--model", "tiny", "--dataset", tmp_path / "none", "--out", tmp_path, ok=False, code=2)
    assert "no known layout" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("templates: [x]\n")
    result = invoke(
        "zeroshot",
        "--model",
        "tiny",
        "--dataset",
        f"pcam:{pcam_root}",
        "--prompts",
        bad,
        "--out",
        tmp_path,
        ok=False,
        code=2,
    )
    assert "classnames" in result.output
    result = invoke("report", tmp_path, "--out", tmp_path / "r", ok=False)
    assert "no *.result.json" in result.output


def test_registered_in_the_main_cli(run_cli) -> None:
    proc = run_cli("eval", "--help")
    for command in ("zeroshot", "retrieval", "linear-probe", "vqa", "report"):
        assert command in proc.stdout


def _tiny_folder(root, image_paths, layout: dict[str, int]) -> None:
    """``layout``: relative class folder -> images; each image a distinct real file shrunk to 40 px."""
    start = 0
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True)
        for path in image_paths[start : start + count]:
            with Image.open(path) as image:
                image.convert("RGB").resize((40, 40)).save(root / folder / f"{path.stem}.jpg", quality=90)
        start += count


def _train_sources(corpus) -> set[str]:
    """The source file of every sample in the training shards (read from the shard records themselves)."""
    sources = set()
    for shard in sorted((corpus / "shards").glob("train-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    sources.add(json.loads(tar.extractfile(member).read())["source"])
    return sources


@pytest.mark.parametrize(
    "layout",
    [
        {"Training/glioma": 8, "Training/notumor": 8, "Testing/glioma": 3, "Testing/notumor": 3},
        {"glioma": 15, "notumor": 15},
        {"Testing/glioma": 15, "Testing/notumor": 15},  # issue 21: Kaggle's brain MRI layout, no training folder
    ],
    ids=["split-folders", "no-split-folders", "testing-only"],
)
def test_fine_tune_workflow_has_no_leakage(invoke, run_cli, tmp_path, image_paths, layout) -> None:
    """Issues 13, 21: corpus build and eval split one folder the same way, also a Testing/-only one (which used to go
    all to test, leaving nothing to train on); --train-catalog proves it by SHA-256."""
    folder, corpus, out = tmp_path / "mri", tmp_path / "corpus", tmp_path / "results"
    _tiny_folder(folder, image_paths, layout)
    template = "a brain MRI showing {label}"
    run_cli(
        "corpus",
        "build",
        "--source",
        f"imagefolder:{folder}",
        "--out",
        corpus,
        "--workers",
        "0",
        "--caption-template",
        template,
    )
    trained = _train_sources(corpus)
    scored = load_dataset(f"imagefolder:{folder}", "test")
    assert trained and len(scored) and not trained & {Path(p).relative_to(folder).as_posix() for p in scored.paths}
    common = ["--model", "tiny", "--device", "cpu", "--dataset", f"imagefolder:{folder}", "--out", out]
    output = invoke("zeroshot", *common, "--train-catalog", corpus).output
    total = sum(layout.values())
    assert f"scored {len(scored)} of {total} images (split test " in output
    assert f"leakage: none of {len(scored)} checked images is among the training images" in output
    assert "LEAKAGE" not in output
    result = json.loads(next(out.glob("zeroshot__*.result.json")).read_text())
    assert result["leakage"]["overlap"] == 0 and result["leakage"]["checked"] == len(scored)
    assert result["counts"]["n"] == len(scored) and result["counts"]["found"] == total

    # the control: scoring the training split must be flagged, loudly, in the output, the JSON and the report
    output = invoke("zeroshot", *common, "--train-catalog", corpus / "catalog.parquet", "--split", "train").output
    train_result = json.loads(next(out.glob("zeroshot__*__train__*.result.json")).read_text())
    assert train_result["leakage"]["overlap"] == len(trained) == train_result["counts"]["n"]
    assert f"WARNING: LEAKAGE: {len(trained)} of {len(trained)} scored images are in the training corpus" in output
    invoke("report", out, "--out", tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Leakage warnings" in text and f"**LEAKAGE: {len(trained)} training images**" in text
    flagged = next(out.glob("zeroshot__*__train__*.result.json"))
    invoke("zeroshot", *common, "--split", "train")  # the issue: a rerun without the catalog replaced the flag
    assert json.loads(flagged.read_text())["leakage"]["overlap"] == len(trained)  # still there, untouched
    assert len(list(out.glob("zeroshot__*__train__*.result.json"))) == 2
    invoke("report", out, "--out", tmp_path / "report2")
    text = (tmp_path / "report2" / "report.md").read_text()
    assert f"**LEAKAGE: {len(trained)} training images**" in text and "leakage not checked" in text


def test_testing_only_folder_and_single_class_are_errors(invoke, tmp_path, image_paths) -> None:
    """Issue 13: one class used to score accuracy 1.000; issue 21: ``Testing/<class>/`` is split by hash, and a
    split that the hash left empty says how it was chosen."""
    _tiny_folder(tmp_path / "brain", image_paths, {"Testing/glioma": 2, "Testing/notumor": 2})
    common = ["--model", "tiny", "--device", "cpu", "--out", tmp_path / "out"]
    result = invoke("zeroshot", *common, "--dataset", f"imagefolder:{tmp_path / 'brain' / 'Testing'}", ok=False)
    assert result.exit_code == 2 and "no images for split 'test'" in result.output
    assert "(split test by hash 70/10/20 of Testing/ (named like a split, but it holds the class folders), of 4" in (
        result.output.replace("\n", " ")
    )
    _tiny_folder(tmp_path / "one", image_paths, {"Testing/glioma": 2})
    result = invoke("zeroshot", *common, "--dataset", f"imagefolder:{tmp_path / 'one'}", ok=False, code=2)
    assert "only glioma; a labelled folder needs at least 2 classes" in result.output
    _tiny_folder(tmp_path / "sets", image_paths, {"train_set/a": 2, "test_set/a": 2})
    result = invoke("zeroshot", *common, "--dataset", f"imagefolder:{tmp_path / 'sets'}", ok=False, code=2)
    assert "folder test_set/ looks like a split, not a class" in result.output


def test_report_keeps_every_variant(invoke, tmp_path, lc25000_root) -> None:
    """Issue 13: runs differing only in --prompts or --max-items shared a file and a row; lc25000 became c25000."""
    out, report = tmp_path / "results", tmp_path / "report"
    spec = f"lc25000_lung:{lc25000_root}"
    common = ["--model", "tiny", "--device", "cpu", "--dataset", spec, "--out", out]
    prompts = tmp_path / "p.yaml"
    prompts.write_text("classnames: [adenocarcinoma, benign, squamous]\ntemplates: ['an H&E image of {}']\n")
    printed = invoke("zeroshot", *common).output
    assert "scored 24 of 24 images (all images), majority class 0.333" in printed  # the paper's LC25000 protocol
    invoke("zeroshot", *common, "--prompts", prompts)
    invoke("zeroshot", *common, "--max-items", 10)
    invoke("zeroshot", *common, "--max-items", 10)  # a rerun replaces its own file
    invoke("zeroshot", *common, "--split", "test", "--split-ratios", "0.5,0,0.5")
    files = sorted(out.glob("*.result.json"))
    assert len(files) == 4 and all(
        f.name.startswith("zeroshot__tiny__lc25000_lung-lung_colon_image_set__") for f in files
    )
    results = [json.loads(f.read_text()) for f in files]
    assert len({r["identity"] for r in results}) == 4
    assert {r["counts"]["n"] for r in results} >= {24, 10}
    invoke("report", out, "--out", report)
    rows = list(csv.DictReader((report / "results.csv").open()))
    assert len({r["identity"] for r in rows}) == 4 and len([r for r in rows if r["metric"] == "accuracy"]) == 4
    table = [line for line in (report / "report.md").read_text().splitlines() if line.startswith("| tiny |")]
    assert (
        len(table) == 4 and any("prompts " in line for line in table) and any("max_items 10" in line for line in table)
    )
    confusions = sorted(report.glob("confusion__*.png"))
    assert len(confusions) == 4 and all("lc25000_lung" in p.name for p in confusions)
    assert confusion_title(results[0]).startswith(f"tiny · {spec} · ")
    assert confusion_title(results[0]).split(" · ")[2:4] == [results[0]["split"], "zeroshot"]
