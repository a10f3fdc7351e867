"""``biomedclip eval ...`` end to end with the tiny model (random weights) on real fixture data, and the report."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from click.testing import CliRunner

from biomedclip.evaluate.cli import eval_group


@pytest.fixture(scope="module")
def invoke():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    runner = CliRunner()

    def run(*args: str, ok: bool = True):
        result = runner.invoke(eval_group, [str(a) for a in args], catch_exceptions=False)
        assert (result.exit_code == 0) == ok, result.output
        return result

    yield run
    torch.set_num_threads(threads)


def _one(folder, task: str) -> dict:
    (path,) = folder.glob(f"{task}__*.result.json")
    return json.loads(path.read_text())


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
    result = invoke("zeroshot", "--model", "tiny", "--dataset", tmp_path / "none", "--out", tmp_path, ok=False)
    assert "no known layout" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("templates: [x]\n")
    result = invoke(
        "zeroshot", "--model", "tiny", "--dataset", f"pcam:{pcam_root}", "--prompts", bad, "--out", tmp_path, ok=False
    )
    assert "classnames" in result.output
    result = invoke("report", tmp_path, "--out", tmp_path / "r", ok=False)
    assert "no *.result.json" in result.output


def test_registered_in_the_main_cli(run_cli) -> None:
    proc = run_cli("eval", "--help")
    for command in ("zeroshot", "retrieval", "linear-probe", "vqa", "report"):
        assert command in proc.stdout
