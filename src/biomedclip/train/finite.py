"""Divergence guards: a step whose loss or gradient is NaN/inf is skipped, too many in a row stop the run, and
weights that are not finite are never written as a checkpoint or a final model."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

from biomedclip.errors import RunError

ADVICE = "lower optim.lr or set optim.grad_clip, then resume from the last checkpoint"


class NonFiniteGuard:
    """Decides, step by step, whether the optimiser may step; raises once ``allowed`` steps in a row were skipped.

    Every rank reaches the same decision (the flag is reduced with MIN), so all ranks skip or stop together.
    """

    def __init__(self, allowed: int, distributed: bool = False) -> None:
        self.allowed = allowed
        self.distributed = distributed
        self.in_a_row = 0
        self.skipped = 0  # steps skipped since the last call of take_skipped

    def step_is_finite(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> bool:
        """True when ``loss`` (and ``grad_norm`` when given) are finite; ``step`` is the 1-based step number.

        Raises:
            RunError: the step is the ``allowed + 1``-th non-finite one in a row.
        """
        finite = torch.isfinite(loss.detach().float())
        if grad_norm is not None:
            finite = finite & torch.isfinite(grad_norm.detach().float())
        flag = finite.to(torch.int32)
        if self.distributed:
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        if bool(flag.item()):
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        if self.in_a_row > self.allowed:
            raise RunError(
                f"training stopped at step {step}: the loss or a gradient was not finite (NaN or inf) in "
                f"{self.in_a_row} steps in a row, more than optim.skip_nonfinite_steps={self.allowed} allows; "
                f"nothing was written for these steps; {ADVICE}"
            )
        self.skipped += 1
        return False

    def take_skipped(self) -> int:
        """The number of steps skipped since the last call, then reset to 0."""
        skipped, self.skipped = self.skipped, 0
        return skipped


def gradient_norm(parameters: Iterable[nn.Parameter]) -> torch.Tensor:
    """The total L2 norm of the gradients (NaN or inf when any gradient is), computed on the device."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads)


def check_finite_weights(model: nn.Module, step: int, what: str) -> None:
    """Raise ``RunError`` naming ``step`` when a parameter or buffer of ``model`` holds NaN or inf.

    Args:
        model: the model about to be written.
        step: the step whose weights these are.
        what: what was about to be written ("checkpoint", "final model").
    """
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    if not tensors:
        return
    flags = torch.stack([torch.isfinite(t).all() for t in tensors])
    if bool(flags.all().item()):
        return
    names = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if not torch.isfinite(t).all()]
    raise RunError(
        f"training stopped at step {step}: the weights are not finite (NaN or inf in {len(names)} tensors, e.g. "
        f"{names[0]}), so no {what} was written; {ADVICE}"
    )
