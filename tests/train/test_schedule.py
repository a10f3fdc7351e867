"""Warmup + cosine schedule and the optimiser's weight-decay groups."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from biomedclip.train.optim import make_optimizer
from biomedclip.train.schedule import WarmupCosine, warmup_cosine_scheduler


def test_linear_warmup_then_cosine_to_zero() -> None:
    schedule = WarmupCosine(warmup_steps=10, total_steps=110)
    assert schedule(0) == pytest.approx(0.1)
    assert schedule(9) == pytest.approx(1.0)
    assert schedule(10) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(0.5)
    assert schedule(110) == pytest.approx(0.0)
    assert schedule(500) == pytest.approx(0.0)
    values = [schedule(s) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_scheduler_drives_the_optimizer_and_round_trips_its_state() -> None:
    param = torch.nn.Parameter(torch.zeros(2, 2))
    optimizer = torch.optim.AdamW([param], lr=5e-4)
    scheduler = warmup_cosine_scheduler(optimizer, 4, 20)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    expected = 5e-4 * 0.5 * (1 + math.cos(math.pi * 3 / 16))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    fresh_opt = torch.optim.AdamW([param], lr=5e-4)
    fresh = warmup_cosine_scheduler(fresh_opt, 4, 20)
    fresh.load_state_dict(scheduler.state_dict())
    fresh.step()
    scheduler.step()
    assert fresh.get_last_lr() == scheduler.get_last_lr()


def test_weight_decay_skips_gains_biases_and_temperature() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    model.logit_scale = torch.nn.Parameter(torch.ones([]))
    optimizer = make_optimizer(model, lr=1e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2, fused=False)
    no_decay, decay = optimizer.param_groups
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])] and decay["weight_decay"] == 0.2
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0
    assert optimizer.defaults["betas"] == (0.9, 0.98) and optimizer.defaults["eps"] == 1e-6
