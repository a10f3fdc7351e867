"""Exact resume: SIGKILL a real training run mid-epoch, resume it, and get the uninterrupted run's losses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _losses(output: Path) -> dict[int, float]:
    """Loss per step from metrics.jsonl; a resumed run's records replace the killed run's."""
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


def _train_cmd(tiny_args, train_shards: Path, output: Path) -> list[str]:
    extra = {"optim.max_steps": 10, "run.checkpoint_every": 4}
    return [sys.executable, "-m", "biomedclip", "train", *tiny_args(train_shards, output, **extra)]


@pytest.mark.slow  # three real training runs of the tiny model (~40 s each on a loaded 2-core machine)
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tiny_args, train_shards: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    subprocess.run(_train_cmd(tiny_args, train_shards, reference), check=True, capture_output=True, timeout=300)
    expected = _losses(reference)
    assert sorted(expected) == list(range(1, 11))

    killed = tmp_path / "killed"
    cmd = _train_cmd(tiny_args, train_shards, killed)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not ((killed / "metrics.jsonl").is_file() and 5 in _losses(killed)):
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert (killed / "checkpoints" / "latest").read_text() == "step-00000004"  # mid-epoch: 16 steps per epoch

    resumed = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    assert "done: steps 4 -> 10" in resumed.stdout
    losses = _losses(killed)
    assert sorted(losses) == list(range(1, 11))
    for step in range(5, 11):
        assert abs(losses[step] - expected[step]) <= 1e-6, (step, losses[step], expected[step])
    assert len({round(v, 6) for v in expected.values()}) > 5  # the losses really change from step to step
