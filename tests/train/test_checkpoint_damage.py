"""Damaged checkpoints: one clear ``Error:`` line naming the file, never a traceback, "Aborted!" or a silent restart
from step 0; and checkpoint files are fsynced before the ``latest`` pointer moves."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from biomedclip.cli import main

STEP = "step-00000002"


def _train(tiny_args, train_shards: Path, output: Path) -> object:
    """``biomedclip train`` in process for 2 steps (checkpoint at step 2), resuming from ``output`` if it has one."""
    extra = {"optim.max_steps": 2, "run.checkpoint_every": 2, "data.workers": 0, "optim.warmup_steps": 1}
    return CliRunner().invoke(main, ["train", *tiny_args(train_shards, output, **extra)])


@pytest.fixture(scope="module")
def finished_run(tiny_args, train_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run of the tiny model whose last checkpoint is at step 2 (``latest`` points at it)."""
    output = tmp_path_factory.mktemp("run") / "run"
    result = _train(tiny_args, train_shards, output)
    assert result.exit_code == 0, result.output
    assert (output / "checkpoints" / "latest").read_text() == STEP
    return output


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`finished_run` to damage."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def _single_error_line(result) -> str:
    """The one ``Error:`` line the CLI printed; fails on a traceback, "Aborted!" or a clean exit."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "Aborted!" not in result.output, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    return line


def test_intact_checkpoint_resumes_at_its_step(tiny_args, train_shards: Path, run_copy: Path) -> None:
    result = _train(tiny_args, train_shards, run_copy)
    assert result.exit_code == 0, result.output
    assert "done: steps 2 -> 2" in result.output


@pytest.mark.parametrize("name", ["model.safetensors", "train_state.pt"])
def test_zero_byte_file_is_a_one_line_error_naming_it(tiny_args, train_shards: Path, run_copy: Path, name) -> None:
    damaged = run_copy / "checkpoints" / STEP / name
    damaged.write_bytes(b"")
    line = _single_error_line(_train(tiny_args, train_shards, run_copy))
    assert str(damaged) in line and "empty" in line


@pytest.mark.parametrize("name", ["model.safetensors", "train_state.pt"])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_file_is_a_one_line_error_naming_it(
    tiny_args, train_shards: Path, run_copy: Path, name, damage
) -> None:
    damaged = run_copy / "checkpoints" / STEP / name
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) // 2] if damage == "truncated" else bytes(range(256)) * 64)
    line = _single_error_line(_train(tiny_args, train_shards, run_copy))
    assert str(damaged) in line and "damaged" in line
    assert not (run_copy / "checkpoints" / "step-00000004").exists()  # nothing trained over the damaged run


def test_dangling_latest_pointer_is_an_error_not_a_restart(tiny_args, train_shards: Path, run_copy: Path) -> None:
    root = run_copy / "checkpoints"
    shutil.rmtree(root / STEP)
    metrics_before = (run_copy / "metrics.jsonl").read_bytes()
    line = _single_error_line(_train(tiny_args, train_shards, run_copy))
    assert str(root / "latest") in line and str(root / STEP) in line and "missing" in line
    assert (run_copy / "metrics.jsonl").read_bytes() == metrics_before  # no step-0 restart wrote anything
    assert sorted(p.name for p in root.iterdir()) == ["latest"]  # no new checkpoint either


def test_dangling_pointer_names_the_newest_complete_checkpoint(finished_run: Path, tmp_path: Path) -> None:
    from biomedclip.errors import RunError
    from biomedclip.train.checkpoint import latest_checkpoint

    root = tmp_path / "checkpoints"
    for step in (3, 5):  # two complete checkpoints, copied from the real run
        shutil.copytree(finished_run / "checkpoints" / STEP, root / f"step-{step:08d}")
    (root / "step-00000007").mkdir()  # the folder latest names, left without its files
    (root / "latest").write_text("step-00000007")
    with pytest.raises(RunError) as caught:
        latest_checkpoint(tmp_path)
    message = str(caught.value)
    assert "lacks model.safetensors and train_state.pt" in message
    assert f"--run.resume {root / 'step-00000005'}" in message
    (root / "latest").write_text("step-00000005")
    assert latest_checkpoint(tmp_path) == root / "step-00000005"
    assert latest_checkpoint(tmp_path / "fresh") is None  # no pointer: a fresh run, not an error


def test_files_and_folders_are_fsynced_before_latest_moves(monkeypatch, tmp_path: Path) -> None:
    import torch

    from biomedclip.train import checkpoint

    events: list[tuple[str, str]] = []
    real_open, real_replace = os.open, os.replace
    opened: dict[int, str] = {}

    def spy_open(path, flags, *args):
        fd = real_open(path, flags, *args)
        opened[fd] = str(path)
        return fd

    def spy_fsync(fd: int) -> None:
        events.append(("fsync", opened[fd]))

    def spy_replace(src, dst) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "open", spy_open)
    monkeypatch.setattr(checkpoint.os, "fsync", spy_fsync)
    monkeypatch.setattr(checkpoint.os, "replace", spy_replace)
    state = checkpoint.TrainState(step=3, optimizer={}, scheduler={}, scaler={}, rng=checkpoint.rng_state())
    final = checkpoint.save_checkpoint(tmp_path, torch.nn.Linear(2, 2), state)

    root = final.parent
    tmp = root / f".{final.name}.tmp"
    at = {event: index for index, event in enumerate(events)}  # the last index of each event
    for name in ("model.safetensors", "train_state.pt", "meta.json"):
        assert at[("fsync", str(tmp / name))] < at[("fsync", str(tmp))]
    assert at[("fsync", str(tmp))] < at[("replace", str(final))] < at[("fsync", str(root))]
    pointer_moved = at[("replace", str(root / "latest"))]
    assert at[("fsync", str(root / ".latest.tmp"))] < pointer_moved  # the pointer's own bytes are on disk
    assert events.index(("fsync", str(root))) < pointer_moved < len(events) - 1  # rename durable, then pointer
    assert events[-1] == ("fsync", str(root))  # and the pointer's rename made durable too
    assert (root / "latest").read_text() == final.name


@pytest.mark.parametrize("name", ["model.safetensors", "open_clip_pytorch_model.bin"])
@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_final_weights_are_a_one_line_error(finished_run: Path, tmp_path: Path, name: str, damage: str) -> None:
    """The run's ``final/`` bundle, loaded as evaluation and serving load it, with one weight file damaged."""
    bundle = Path(shutil.copytree(finished_run / "final", tmp_path / "final"))
    for other in {"model.safetensors", "open_clip_pytorch_model.bin"} - {name}:
        (bundle / other).unlink(missing_ok=True)  # so that the damaged file is the one the loader picks
    damaged = bundle / name
    data = damaged.read_bytes()
    damaged.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    export = ["model", "export", "-m", f"local-dir:{bundle}", "--format", "open_clip", "-o", str(tmp_path / "out")]
    result = CliRunner().invoke(main, export)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "Aborted!" not in result.output, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert str(damaged) in line and ("empty" if damage == "empty" else "damaged") in line


def test_altered_tensor_bytes_are_caught_by_the_recorded_digest(tiny_args, train_shards: Path, run_copy: Path) -> None:
    """Zeroed bytes at the end of the tensor data keep a valid safetensors file (it would load silently)."""
    from safetensors.torch import load_file

    damaged = run_copy / "checkpoints" / STEP / "model.safetensors"
    data = damaged.read_bytes()
    damaged.write_bytes(data[:-64] + b"\0" * 64)
    load_file(str(damaged))  # the format itself does not notice
    line = _single_error_line(_train(tiny_args, train_shards, run_copy))
    assert str(damaged) in line and "SHA-256" in line


def test_damaged_meta_json_is_named(tiny_args, train_shards: Path, run_copy: Path) -> None:
    meta = run_copy / "checkpoints" / STEP / "meta.json"
    meta.write_text(meta.read_text()[:40])
    line = _single_error_line(_train(tiny_args, train_shards, run_copy))
    assert str(meta) in line and "damaged" in line


def test_checkpoint_without_recorded_digests_still_loads(finished_run: Path, tmp_path: Path) -> None:
    """Checkpoints written before meta.json recorded sizes and digests load unchecked."""
    import json

    from biomedclip.model import create_model_and_transforms
    from biomedclip.train.checkpoint import load_checkpoint

    folder = Path(shutil.copytree(finished_run / "checkpoints" / STEP, tmp_path / STEP))
    meta = json.loads((folder / "meta.json").read_text())
    assert set(meta["files"]) == {"model.safetensors", "train_state.pt"}
    del meta["files"]
    (folder / "meta.json").write_text(json.dumps(meta))
    model = create_model_and_transforms("tiny")[0]
    assert load_checkpoint(folder, model).step == 2
