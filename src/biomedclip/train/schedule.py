"""Learning-rate schedule: linear warmup to the peak, then cosine decay to zero."""

from __future__ import annotations

import math

import torch


class WarmupCosine:
    """Multiplier of the peak lr at a step (a picklable callable for ``LambdaLR``)."""

    def __init__(self, warmup_steps: int, total_steps: int) -> None:
        if total_steps < 1:
            raise ValueError("total_steps must be >= 1")
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepping once per optimiser step; its state (the step count) is checkpointed."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps))
