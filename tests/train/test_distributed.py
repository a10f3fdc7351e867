"""Two CPU ranks (torchrun, gloo): the DDP gradient equals the single-process gradient on the same global batch."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch

from biomedclip.model import create_model
from biomedclip.train.loss import ClipLoss

WORKER = Path(__file__).with_name("ddp_grad_worker.py")


def _worker_module():
    spec = importlib.util.spec_from_file_location("ddp_grad_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ddp_gradient_equals_single_process_gradient(tmp_path: Path) -> None:
    out = tmp_path / "ddp_grads.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(WORKER)]
    proc = subprocess.run([*cmd, str(out)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = torch.load(out, weights_only=True)

    worker = _worker_module()
    torch.manual_seed(0)
    model = create_model("tiny").eval()
    images, tokens = worker.global_batch()
    single = worker.model_gradients(model, ClipLoss(), images, tokens)
    assert "logit_scale" in single
    for mode, ddp in results.items():  # the sharded (local) loss and the full global loss
        assert ddp.keys() == single.keys()
        for name, grad in single.items():
            assert torch.allclose(ddp[name], grad, atol=1e-6, rtol=1e-4), (mode, name)
    assert max(g.abs().max().item() for g in single.values()) > 1e-4
