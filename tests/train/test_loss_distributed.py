"""The CLIP loss on several CPU ranks (torchrun, gloo) against open_clip's ``ClipLoss`` in all four gather modes, and
the duplicate-caption rule across ranks against the single-process loss on the global batch."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from biomedclip.train.loss import ClipLoss

WORKER = Path(__file__).with_name("loss_worker.py")
pytestmark = pytest.mark.slow  # three torchrun ranks start in ~30 s on a loaded 2-core machine
MODES = [f"local={local},grad={grad}" for local in (False, True) for grad in (False, True)]


def _worker():
    spec = importlib.util.spec_from_file_location("loss_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, dict[str, torch.Tensor]]]:
    out = tmp_path_factory.mktemp("loss_ranks")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "3",
        str(WORKER),
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(3)]


@pytest.mark.parametrize("mode", MODES)
def test_every_gather_mode_equals_open_clip(ranks, mode: str) -> None:
    for results in ranks:
        ours, theirs = results[f"ours {mode}"], results[f"open_clip {mode}"]
        for key in ("loss", "image", "text", "scale"):
            assert torch.allclose(ours[key], theirs[key], rtol=1e-12, atol=1e-15), (mode, key)
    assert ranks[0][f"ours {mode}"]["image"].abs().max() > 1e-3


@pytest.mark.parametrize("mode", [m for m in MODES if m.endswith("grad=True")])
def test_duplicates_across_ranks_match_the_global_batch(ranks, mode: str) -> None:
    """With gradients through the gather, the ranks together compute the single-process loss on the global batch:
    rank losses average to it, and each rank's feature gradient is world_size x its rows of the global gradient."""
    worker = _worker()
    image, text, scale = worker.global_batch()
    expected = worker.run(ClipLoss(), image, text, scale, caption_ids=torch.tensor(worker.CAPTIONS))
    plain = worker.run(ClipLoss(), image, text, scale)
    assert expected["loss"] < plain["loss"] - 0.05  # the rule changes the loss on this batch
    masked = [results[f"masked {mode}"] for results in ranks]
    assert torch.stack([m["loss"] for m in masked]).mean().item() == pytest.approx(expected["loss"].item(), rel=1e-12)
    for key in ("image", "text"):
        gathered = torch.cat([m[key] for m in masked]) / len(ranks)
        assert torch.allclose(gathered, expected[key], rtol=1e-10, atol=1e-14), key
    scale_grad = torch.stack([m["scale"] for m in masked]).mean()
    assert torch.allclose(scale_grad, expected["scale"], rtol=1e-10)
