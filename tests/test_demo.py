"""The main job end to end on the bundled sample, with few training steps."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # the whole pipeline: corpus build, 20 training steps, evaluation, index (about a minute)
def test_demo_writes_every_artefact(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = run_cli("demo", "--out", out, "--steps", "20", "--workers", "1", cwd=REPO)
    assert "[5/5] report" in proc.stdout and "make serve" in proc.stdout

    catalog = pq.read_table(out / "corpus" / "catalog.parquet").to_pylist()
    accepted = [row for row in catalog if row["status"] == "accepted"]
    assert {row["split"] for row in accepted} == {"train", "val", "test"}
    assert any(row["pmcid"].startswith("PMC") for row in accepted)  # real PMC figures, not only labelled images
    assert all(row["reason"] for row in catalog if row["status"] == "rejected")
    samples = list(wds.WebDataset(sorted(map(str, (out / "corpus" / "shards").glob("*.tar"))), shardshuffle=False))
    assert len(samples) == len(accepted)
    assert {"jpg", "txt", "json"} <= set(samples[0])
    assert json.loads((out / "corpus" / "stats.json").read_text())["caption_tokens"]["share_within_256"] > 0.9

    assert json.loads((out / "train" / "final" / "open_clip_config.json").read_text())["model_cfg"]
    steps = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert max(record["step"] for record in steps) == 20

    results = [json.loads(p.read_text()) for p in sorted((out / "eval").glob("*.json"))]
    assert sorted(r["task"] for r in results) == ["linear_probe", "linear_probe", "retrieval", "zeroshot", "zeroshot"]
    for result in results:
        assert result["metrics"] and result["settings"]
    plots = [*(out / "eval" / "report").glob("*.png"), out / "training_loss.png", *(out / "corpus").rglob("*.png")]
    for plot in plots:
        with Image.open(plot) as image:
            image.verify()
    assert len(plots) >= 8

    meta = json.loads((out / "index" / "meta.json").read_text())
    assert meta
    report = (out / "report.md").read_text()
    for section in ("## Corpus", "## Training", "## Evaluation", "## Search"):
        assert section in report
