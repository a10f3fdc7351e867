"""A run that diverges (NaN/inf loss or gradient) stops with one line naming the step, exits 1, and never writes a
non-finite checkpoint or ``final/``; a model with non-finite weights is refused wherever it is loaded."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from biomedclip.cli import main
from biomedclip.errors import RunError
from biomedclip.train.finite import NonFiniteGuard, check_finite_weights


def _train(tiny_args, shards: Path, output: Path, **extra: object):
    values = {"optim.max_steps": 8, "run.checkpoint_every": 1, "data.workers": 0, "optim.warmup_steps": 0, **extra}
    return CliRunner().invoke(main, ["train", *tiny_args(shards, output, **values)])


def _error_line(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "Aborted!" not in result.output, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    return line


def _all_finite(weights: Path) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(str(weights)).values() if t.is_floating_point())


@pytest.fixture(scope="module")
def diverged(tiny_args, train_shards: Path, tmp_path_factory: pytest.TempPathFactory):
    """A run with an absurd learning rate: its first update makes the weights inf, every later loss NaN."""
    output = tmp_path_factory.mktemp("diverged") / "run"
    result = _train(tiny_args, train_shards, output, **{"optim.lr": 1e30, "optim.skip_nonfinite_steps": 2})
    return result, output


def test_a_diverging_run_stops_in_one_line_naming_the_step(diverged) -> None:
    result, output = diverged
    line = _error_line(result, 1)
    assert "training stopped at step" in line and "not finite" in line, line
    assert not (output / "final").exists()


def test_no_checkpoint_of_a_diverging_run_holds_nan(diverged) -> None:
    _, output = diverged
    folders = sorted((output / "checkpoints").glob("step-*"))
    for folder in folders:
        assert _all_finite(folder / "model.safetensors"), folder
    latest = output / "checkpoints" / "latest"
    assert not latest.exists() or _all_finite(output / "checkpoints" / latest.read_text() / "model.safetensors")


def test_skipped_steps_are_counted_in_the_metrics(diverged) -> None:
    _, output = diverged
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert sum(r["nonfinite_steps"] for r in train) == 2  # the two allowed skips; the third stops the run
    assert all(r["nonfinite_steps"] == 0 for r in train if math.isfinite(r["loss"]))


def test_guard_allows_exactly_the_configured_steps_in_a_row() -> None:
    guard = NonFiniteGuard(allowed=2)
    nan, one = torch.tensor(math.nan), torch.tensor(1.0)
    assert guard.step_is_finite(1, one, one)
    assert not guard.step_is_finite(2, nan, one)
    assert not guard.step_is_finite(3, one, torch.tensor(math.inf))  # a gradient alone counts too
    assert guard.step_is_finite(4, one, None)  # a finite step resets the count
    assert not guard.step_is_finite(5, nan, None)
    assert not guard.step_is_finite(6, nan, None)
    with pytest.raises(RunError, match="training stopped at step 7"):
        guard.step_is_finite(7, nan, None)
    assert guard.take_skipped() == 4 and guard.take_skipped() == 0


def test_zero_allowed_stops_at_the_first_nonfinite_step() -> None:
    with pytest.raises(RunError, match="at step 1:"):
        NonFiniteGuard(allowed=0).step_is_finite(1, torch.tensor(math.inf), None)


def test_weights_with_nan_are_never_written() -> None:
    model = torch.nn.Linear(3, 2)
    check_finite_weights(model, 5, "checkpoint")
    with torch.no_grad():
        model.bias[1] = math.nan
    with pytest.raises(RunError, match=r"step 5: the weights are not finite .*e\.g\. bias\), so no checkpoint"):
        check_finite_weights(model, 5, "checkpoint")


@pytest.fixture(scope="module")
def nan_bundle(tiny_args, train_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ``final/`` bundle of the tiny model with one NaN written into its weights (the old trainer's output)."""
    output = tmp_path_factory.mktemp("good") / "run"
    assert _train(tiny_args, train_shards, output, **{"optim.max_steps": 2}).exit_code == 0
    bundle = Path(shutil.copytree(output / "final", output.parent / "nan-final"))
    (bundle / "open_clip_pytorch_model.bin").unlink()
    state = load_file(str(bundle / "model.safetensors"))
    state["logit_scale"] = torch.full_like(state["logit_scale"], math.nan)
    save_file(state, str(bundle / "model.safetensors"), metadata={"format": "pt"})
    return bundle


def test_a_nan_model_is_refused_by_index_build(nan_bundle: Path, train_shards: Path, tmp_path: Path) -> None:
    shards = str(train_shards / "val-{000000..000001}.tar")
    out = str(tmp_path / "index")
    args = ["index", "build", "-m", f"local-dir:{nan_bundle}", "-s", shards, "-o", out, "--device", "cpu"]
    line = _error_line(CliRunner().invoke(main, args), 2)
    assert "non-finite" in line and str(nan_bundle / "model.safetensors") in line
    assert not (tmp_path / "index").exists()


def test_a_nan_model_is_refused_by_classify(nan_bundle: Path, shared_fixtures: Path) -> None:
    image = next((shared_fixtures / "image_text" / "medicat_sample" / "figures").iterdir())
    args = ["classify", "-m", f"local-dir:{nan_bundle}", str(image), "--labels", "x-ray,ct", "--device", "cpu"]
    assert "non-finite" in _error_line(CliRunner().invoke(main, args), 2)


def test_a_nan_checkpoint_is_refused_on_resume(nan_bundle: Path, tiny_args, train_shards: Path, tmp_path: Path) -> None:
    from biomedclip.model import create_model_and_transforms
    from biomedclip.train.checkpoint import load_checkpoint

    output = tmp_path / "run"
    assert _train(tiny_args, train_shards, output, **{"optim.max_steps": 1}).exit_code == 0
    folder = output / "checkpoints" / "step-00000001"
    shutil.copy(nan_bundle / "model.safetensors", folder / "model.safetensors")
    meta = json.loads((folder / "meta.json").read_text())
    del meta["files"]  # so that the digest check does not catch the change first
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(RunError, match="non-finite"):
        load_checkpoint(folder, create_model_and_transforms("tiny")[0])


def test_a_nan_model_is_refused_by_the_layer_serve_and_eval_load_through(nan_bundle: Path) -> None:
    from biomedclip.errors import InputError
    from biomedclip.evaluate.models import load_model

    with pytest.raises(InputError, match=r"non-finite values .* in 1 of"):
        load_model(f"local-dir:{nan_bundle}", device="cpu")
