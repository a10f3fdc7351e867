"""AdamW with open_clip's weight-decay rule, and the model tweaks a run asks for (locking, dropout, checkpointing)."""

from __future__ import annotations

import torch
from torch import nn


def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """Gains, biases, norms and the temperature are not decayed (as in open_clip)."""
    return param.ndim < 2 or "bias" in name or "logit_scale" in name or "norm" in name.lower()


def make_optimizer(
    model: nn.Module,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    fused: bool,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, in a decayed and an undecayed group."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if no_weight_decay(name, param) else decay).append(param)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters (are both towers locked?)")
    groups = [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)


def lock_tower(tower: nn.Module) -> None:
    """Freeze every parameter of a tower (fine-tuning with ``lock_image`` / ``lock_text``)."""
    for param in tower.parameters():
        param.requires_grad_(False)


def set_patch_dropout(model: nn.Module, rate: float) -> None:
    """Drop ``rate`` of the image patches in training (FLIP); uses the model's own hook when it has one.

    Falls back to timm's ``PatchDropout`` on the vision trunk (``model.visual.trunk.patch_drop``).
    """
    if hasattr(model, "set_patch_dropout"):
        model.set_patch_dropout(rate)
        return
    trunk = getattr(getattr(model, "visual", None), "trunk", None)
    if trunk is None or not hasattr(trunk, "patch_drop"):
        raise ValueError("this model does not support patch dropout (set model.patch_dropout: 0)")
    from timm.layers import PatchDropout

    prefix = getattr(trunk, "num_prefix_tokens", 1)
    trunk.patch_drop = PatchDropout(rate, num_prefix_tokens=prefix) if rate > 0 else nn.Identity()
