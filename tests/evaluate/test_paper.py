"""``biomedclip eval paper`` end to end on tiny copies of the paper's datasets (real images), with the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from biomedclip.cli import main
from biomedclip.errors import InputError
from biomedclip.evaluate import paper
from biomedclip.evaluate.linear_probe import LinearProbeConfig
from biomedclip.evaluate.models import load_model
from biomedclip.evaluate.paper import PaperSettings, load_paper_results, run_paper
from biomedclip.evaluate.tasks import RunSettings
from biomedclip.evaluate.vqa import VQAConfig


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, pcam_root, lc25000_root, tcga_til_root, vqa_rad_root, shards_root):
    """The documented layout with symlinks to the tiny copies; RSNA absent, SLAKE present but empty."""
    root = tmp_path_factory.mktemp("paper_data")
    for name, target in (
        ("pcam", pcam_root),
        ("lc25000", lc25000_root),
        ("tcga_til", tcga_til_root),
        ("vqa_rad", vqa_rad_root),
        ("pmc15m_test", shards_root),
    ):
        (root / name).symlink_to(target, target_is_directory=True)
    (root / "slake").mkdir()
    return root


QUICK = PaperSettings(
    run=RunSettings(device="cpu"),
    linear_probe=LinearProbeConfig(seeds=(0,), epochs=2),
    vqa=VQAConfig(hidden=32, layers=1, heads=2, epochs=1),
)


def test_paper_tables_ship_with_their_source() -> None:
    data = load_paper_results()
    assert data["source"]["doi"] == "10.1056/AIoa2400640" and data["source"]["arxiv"] == "2303.00915"
    tables = data["tables"]
    assert set(tables) == set(paper.TASKS)
    for spec in paper.PAPER_TASKS:  # every task the command runs has a row of the paper's table (maybe null)
        assert tables[spec.task][spec.dataset]
    # Supplementary Table 5, row 224px: AUROC (%) for TCGA-TIL, accuracy (%) for the others.
    assert "Supplementary Table 5" in tables["zeroshot"]["table"]
    assert {name: metrics for name, metrics in tables["zeroshot"].items() if name != "table"} == {
        "pcam": {"accuracy": 73.41},
        "lc25000_lung": {"accuracy": 65.23},
        "lc25000_colon": {"accuracy": 92.98},
        "tcga_til": {"auroc": 67.04},
        "rsna_pneumonia": {"accuracy": 78.95},
    }
    # A table without a named source holds no number.
    for table in tables.values():
        if table["table"] is None:
            assert all(v is None for d in table.values() if isinstance(d, dict) for v in d.values())


def test_runs_what_is_found_and_reports_the_rest(one_thread, data_root, tmp_path, monkeypatch) -> None:
    numbers = load_paper_results()
    numbers["tables"]["zeroshot"]["pcam"]["accuracy"] = 73.0  # a made-up paper number, to check the delta
    table = tmp_path / "paper.yaml"
    table.write_text(yaml.safe_dump(numbers))
    monkeypatch.setattr(paper, "PAPER_RESULTS", table)
    out = tmp_path / "out"
    report = run_paper(load_model("tiny", "cpu"), data_root, out, QUICK)
    status = {(r["task"], r["dataset"]): r for r in report["runs"]}
    for task in ("zeroshot", "linear_probe"):
        for name in ("pcam", "lc25000_lung", "lc25000_colon", "tcga_til"):
            assert status[(task, name)]["status"] == "ran", status[(task, name)]
        assert status[(task, "rsna_pneumonia")]["status"] == "skipped"
        assert "no rsna_pneumonia/" in status[(task, "rsna_pneumonia")]["reason"]
    assert status[("retrieval", "pmc15m_test")]["status"] == "ran"
    assert status[("vqa", "vqa_rad")]["status"] == "ran"
    assert status[("vqa", "slake")]["status"] == "failed" and "SLAKE" in status[("vqa", "slake")]["reason"]
    # Our column is the written result's number, in percent; the delta is ours minus the paper's.
    zeroshot = json.loads(Path(status[("zeroshot", "pcam")]["result_file"]).read_text())
    row = next(r for r in report["rows"] if (r["task"], r["dataset"]) == ("zeroshot", "pcam"))
    assert row["ours"] == pytest.approx(100 * zeroshot["metrics"]["accuracy"])
    assert row["paper"] == 73.0 and row["delta"] == pytest.approx(row["ours"] - 73.0)
    counts = zeroshot["counts"]  # n scored beside the paper's number, from the result itself
    assert (row["n"], row["found"], row["split_rule"]) == (counts["n"], counts["found"], counts["rule"])
    scored_cell = f"| {counts['n']:,} of {counts['found']:,} ({counts['rule']}) | 73.00 |"
    probe = json.loads(Path(status[("linear_probe", "tcga_til")]["result_file"]).read_text())
    row = next(r for r in report["rows"] if (r["dataset"], r["metric"]) == ("tcga_til", "accuracy@100%"))
    assert row["ours"] == pytest.approx(100 * probe["metrics"]["summary"]["1.0"]["accuracy"]["mean"])
    assert probe["settings"]["linear_probe"]["protocol"] == "elevater"
    assert probe["settings"]["linear_probe"]["search_max_per_class"] is None
    pcam_probe = json.loads(Path(status[("linear_probe", "pcam")]["result_file"]).read_text())
    assert pcam_probe["settings"]["linear_probe"]["search_max_per_class"] == 10_000  # the toolkit's PCam rule
    vqa_rows = [r for r in report["rows"] if r["dataset"] == "vqa_rad"]
    assert {r["metric"] for r in vqa_rows} == {"open_accuracy", "closed_accuracy", "overall_accuracy"}
    retrieval = status[("retrieval", "pmc15m_test")]
    assert json.loads(Path(retrieval["result_file"]).read_text())["settings"]["merge_captions"] is False
    markdown = (out / "paper_report.md").read_text()
    assert "| zeroshot | pcam | accuracy |" in markdown and scored_cell in markdown
    assert "not confirmed" in markdown and "| vqa | slake | failed |" in markdown
    assert "- zeroshot: Supplementary Appendix, Supplementary Table 5" in markdown
    assert "| zeroshot | tcga_til | auroc |" in markdown and "| 67.04 |" in markdown
    assert "| zeroshot | rsna_pneumonia | skipped | no rsna_pneumonia/" in markdown
    assert json.loads((out / "paper_report.json").read_text())["rows"] == report["rows"]


def test_bad_roots_and_tasks_are_input_errors(tmp_path) -> None:
    model = object()
    with pytest.raises(InputError, match="no paper dataset"):
        run_paper(model, tmp_path, tmp_path / "out")
    (tmp_path / "pcam").mkdir()
    with pytest.raises(InputError, match="unknown paper task"):
        run_paper(model, tmp_path, tmp_path / "out", PaperSettings(tasks=("zeroshot", "segmentation")))


def test_cli_runs_selected_tasks_and_prints_skips(one_thread, data_root, tmp_path) -> None:
    args = ["eval", "paper", "--model", "tiny", "--data-root", str(data_root), "--out", str(tmp_path), "--device"]
    result = CliRunner().invoke(main, [*args, "cpu", "--tasks", "retrieval"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "ran 1 of 13 paper tasks" in result.output
    assert "zeroshot pcam: skipped (task not selected)" in result.output
    assert (tmp_path / "paper_report.md").is_file()
    missing = CliRunner().invoke(main, ["eval", "paper", "-m", "tiny", "--data-root", str(tmp_path), "-o", "x"])
    assert missing.exit_code == 2 and "no paper dataset" in missing.output
