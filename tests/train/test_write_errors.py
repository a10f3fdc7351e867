"""A checkpoint or final model that cannot be written (a full disk, a read-only folder) stops ``train`` with one
line naming it, and ``latest`` still names the previous complete checkpoint."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from click.testing import CliRunner

from biomedclip.cli import main
from biomedclip.train import checkpoint


def _train(tiny_args, shards: Path, output: Path, steps: int):
    extra = {"optim.max_steps": steps, "run.checkpoint_every": 1, "data.workers": 0, "optim.warmup_steps": 1}
    return CliRunner().invoke(main, ["train", *tiny_args(shards, output, **extra)])


def _error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    return line


def _fail_at_step(monkeypatch, name: str, step: int, error: Exception) -> None:
    """Make ``checkpoint.<name>`` raise ``error`` when it writes the checkpoint of ``step``."""
    real = getattr(checkpoint, name)

    def failing(obj, path, *args, **kwargs):
        if f"step-{step:08d}" in str(path):
            raise error
        return real(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, name, failing)


@pytest.mark.parametrize(
    ("name", "error", "shown"),
    [
        ("save_model", OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
        ("torch.save", RuntimeError("[enforce fail] PytorchStreamWriter failed writing file data/0: file write failed"),
         "file write failed"),
    ],
)  # fmt: skip
def test_a_checkpoint_that_cannot_be_written_is_one_line(tiny_args, train_shards, tmp_path, monkeypatch, name, error,
                                                         shown) -> None:  # fmt: skip
    if name == "torch.save":
        real = checkpoint.torch.save

        def failing(obj, path, *args, **kwargs):
            if "step-00000002" in str(path):
                raise error
            return real(obj, path, *args, **kwargs)

        monkeypatch.setattr(checkpoint.torch, "save", failing)
    else:
        _fail_at_step(monkeypatch, name, 2, error)
    output = tmp_path / "run"
    line = _error_line(_train(tiny_args, train_shards, output, steps=3))
    assert "cannot write checkpoint" in line and str(output / "checkpoints" / "step-00000002") in line and shown in line
    root = output / "checkpoints"
    assert (root / "latest").read_text() == "step-00000001"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000001"]  # no half-written folder left


def test_a_final_model_that_cannot_be_written_is_one_line(tiny_args, train_shards, tmp_path, monkeypatch) -> None:
    import biomedclip.model
    from biomedclip.model import checkpoint as model_checkpoint

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "final" / "model.safetensors"))

    # what the trainer exports final/ with; the package first (reading it there caches the real one)
    monkeypatch.setattr(biomedclip.model, "save_pretrained", full)
    monkeypatch.setattr(model_checkpoint, "save_pretrained", full)
    line = _error_line(_train(tiny_args, train_shards, tmp_path / "run", steps=1))
    assert "cannot write the final model" in line and "No space left on device" in line
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step-00000001"
