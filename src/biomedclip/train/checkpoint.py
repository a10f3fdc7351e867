"""Resumable training checkpoints, written atomically.

Layout of ``OUTPUT/checkpoints/step-00001000/``: ``model.safetensors`` (weights), ``train_state.pt`` (optimizer,
scheduler, grad scaler, RNG states and the data position, tensors and plain values only: it is loaded with
``weights_only=True``, so it never unpickles arbitrary objects) and ``meta.json``. A checkpoint is written into
a temporary folder and renamed into place, then ``OUTPUT/checkpoints/latest`` is replaced atomically, so a run
killed at any moment leaves only complete checkpoints behind.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"


@dataclass
class TrainState:
    """What besides the weights a run needs to continue exactly where it stopped."""

    step: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    rng: dict[str, Any]


def rng_state() -> dict[str, Any]:
    """The torch RNG states of this process (CPU and every visible GPU)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_dir(output_dir: str | Path, step: int) -> Path:
    """The folder of the checkpoint taken after ``step`` optimiser steps."""
    return Path(output_dir) / CHECKPOINT_DIR / f"step-{step:08d}"


def save_checkpoint(
    output_dir: str | Path, model: torch.nn.Module, state: TrainState, *, keep: int = 2, config: dict | None = None
) -> Path:
    """Write a checkpoint atomically, point ``latest`` at it and prune all but the ``keep`` newest."""
    final = step_dir(output_dir, state.step)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{final.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(
        {
            "step": state.step,
            "optimizer": state.optimizer,
            "scheduler": state.scheduler,
            "scaler": state.scaler,
            "rng": state.rng,
        },
        tmp / "train_state.pt",
    )
    (tmp / "meta.json").write_text(json.dumps({"step": state.step, "config": config or {}}, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    latest_tmp = root / f".{LATEST}.tmp"
    latest_tmp.write_text(final.name)
    os.replace(latest_tmp, root / LATEST)
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[: max(0, len(steps) - keep)]:
        shutil.rmtree(old)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    root = Path(output_dir) / CHECKPOINT_DIR
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / "train_state.pt").is_file() else None


def load_checkpoint(path: str | Path, model: torch.nn.Module, map_location: str | torch.device = "cpu") -> TrainState:
    """Load weights into ``model`` (strict) and return the rest of the training state."""
    path = Path(path)
    if not (path / "model.safetensors").is_file() or not (path / "train_state.pt").is_file():
        raise FileNotFoundError(f"{path} is not a training checkpoint (model.safetensors + train_state.pt)")
    load_model(model, str(path / "model.safetensors"), strict=True, device=str(map_location))
    raw = torch.load(path / "train_state.pt", map_location="cpu", weights_only=True)
    return TrainState(
        step=int(raw["step"]),
        optimizer=raw["optimizer"],
        scheduler=raw["scheduler"],
        scaler=raw["scaler"],
        rng=raw["rng"],
    )
