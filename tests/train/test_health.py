"""Collapse and divergence warnings: hand-computed thresholds on ln(batch), the one-class zero-shot check, the
summary line."""

from __future__ import annotations

import math

from biomedclip.train.cli import format_record, summary_lines
from biomedclip.train.config import build_config
from biomedclip.train.health import COLLAPSE_STEPS, HealthMonitor
from biomedclip.train.loop import TrainResult

LN32 = math.log(32)  # 3.4657...


def _train(step: int, loss: float) -> dict:
    return {"kind": "train", "step": step, "loss": loss}


def test_a_loss_at_ln_batch_for_fifty_steps_is_a_collapse_warning_once() -> None:
    monitor = HealthMonitor(32)
    fired = [monitor.observe(_train(step, LN32 + 0.049)) for step in range(10, 50, 10)]
    assert fired == [[], [], [], []]  # steps 0-40: 40 steps at ln(32), under the 50 needed
    (warning,) = monitor.observe(_train(50, LN32 - 0.049))  # steps 0-50: exactly COLLAPSE_STEPS
    assert COLLAPSE_STEPS == 50 and warning.startswith("steps 0-50: the training loss sits at ln(32) = 3.466")
    assert monitor.observe(_train(60, LN32)) == [] and monitor.warnings == [warning]  # reported once


def test_a_loss_that_leaves_ln_batch_restarts_the_count() -> None:
    monitor = HealthMonitor(32)
    for step in range(10, 50, 10):
        monitor.observe(_train(step, LN32))
    assert monitor.observe(_train(50, LN32 - 0.051)) == []  # learning: 0.051 below ln(32)
    assert [monitor.observe(_train(s, LN32)) for s in (60, 70, 80, 90)] == [[]] * 4  # steps 50-90: 40
    assert monitor.observe(_train(100, LN32))[0].startswith("steps 50-100")


def test_a_nonfinite_or_worse_than_guessing_loss_is_divergence() -> None:
    monitor = HealthMonitor(8)
    assert monitor.observe(_train(5, float("nan"))) == ["step 5: the training loss is nan: training diverged"]
    high = HealthMonitor(8)
    assert high.observe(_train(25, math.log(8) + 0.51)) == []
    (warning,) = high.observe(_train(50, math.log(8) + 0.6))
    assert "steps 0-50: the training loss 2.6794 stays above ln(8) + 0.5" in warning


def test_zero_shot_with_one_predicted_class_is_a_collapse_warning() -> None:
    monitor = HealthMonitor(16)
    fine = {"kind": "eval", "step": 9, "zeroshot_xray_classes": 4, "zeroshot_xray_predicted_classes": 2}
    assert monitor.observe(fine) == []
    one = {"kind": "eval", "step": 10, "zeroshot_xray_classes": 4, "zeroshot_xray_predicted_classes": 1}
    assert monitor.observe(one | {"zeroshot_xray_n": 253}) == [
        "step 10: zero-shot on xray predicts one class for all 253 images: the model has collapsed"
    ]
    single = {"kind": "eval", "step": 10, "zeroshot_one_classes": 1, "zeroshot_one_predicted_classes": 1}
    assert HealthMonitor(16).observe(single) == []  # a one-class dataset cannot show it


def test_the_summary_repeats_the_warnings_or_says_none_were_seen(tmp_path) -> None:
    config = build_config()
    base = {"output_dir": tmp_path, "steps": 10, "start_step": 0}
    quiet = "\n".join(summary_lines(TrainResult(**base), config))
    assert "health: no collapse (loss at ln(batch), one predicted class) or divergence seen" in quiet
    loud = "\n".join(summary_lines(TrainResult(**base, warnings=["steps 0-50: the training loss sits"]), config))
    assert "warning: steps 0-50: the training loss sits" in loud and "health: no collapse" not in loud
    assert format_record({"kind": "warning", "step": 3, "message": "x"}) == "warning: x"


def test_a_real_run_logs_the_warning_in_metrics_and_repeats_it_in_the_summary(
    tiny_args, train_shards, tmp_path, monkeypatch
) -> None:
    """The loop's wiring, with the thresholds widened so that a 2-step run trips the collapse check."""
    import json

    from click.testing import CliRunner

    from biomedclip.cli import main
    from biomedclip.train import health

    monkeypatch.setattr(health, "COLLAPSE_STEPS", 1)
    monkeypatch.setattr(health, "COLLAPSE_TOLERANCE", 100.0)  # any loss counts as "at ln(batch)"
    out = tmp_path / "run"
    extra = {"optim.max_steps": 2, "data.workers": 0, "optim.warmup_steps": 1}
    result = CliRunner().invoke(main, ["train", *tiny_args(train_shards, out, **extra)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    expected = "warning: steps 0-1: the training loss sits at ln(8)"
    warned = [i for i, line in enumerate(lines) if line.startswith(expected)]
    assert len(warned) == 2 and lines[warned[0] - 1].startswith("step 1 ")  # at once, then in the summary
    assert lines[warned[1] - 1].startswith("last train step 2")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "warning"] == [1]
