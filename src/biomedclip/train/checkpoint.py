"""Resumable training checkpoints, written atomically.

Layout of ``OUTPUT/checkpoints/step-00001000/``: ``model.safetensors`` (weights), ``train_state.pt`` (optimizer,
scheduler, grad scaler, RNG states and the data position, tensors and plain values only: it is loaded with
``weights_only=True``, so it never unpickles arbitrary objects) and ``meta.json`` (the step, the run's config, and
the byte count and SHA-256 of the two other files, checked before loading: a flipped byte inside the tensor data,
which the file formats would load silently, is refused too). A checkpoint is written into
a temporary folder, its files and the folder are fsynced, it is renamed into place and the rename is fsynced; only
then is ``OUTPUT/checkpoints/latest`` replaced atomically (and fsynced), so a run killed or a machine losing power at
any moment leaves ``latest`` naming a complete checkpoint.

Loading never guesses: a damaged, empty or missing checkpoint file, or a ``latest`` pointer naming a folder that is
not there, is a :class:`~biomedclip.errors.RunError` naming the file (the run never silently restarts from step 0).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from biomedclip.durable import fsync_path
from biomedclip.errors import InputError, RunError
from biomedclip.model.checkpoint import check_finite

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
WEIGHTS = "model.safetensors"
STATE = "train_state.pt"
META = "meta.json"
STATE_KEYS = ("step", "optimizer", "scheduler", "scaler", "rng")


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
    """Write a checkpoint atomically, point ``latest`` at it and prune all but the ``keep`` newest.

    A checkpoint that cannot be written (a full disk, a read-only folder) is a ``RunError`` naming it; ``latest``
    still names the previous complete checkpoint.
    """
    final = step_dir(output_dir, state.step)
    try:
        return _save(final, model, state, keep, config)
    except (OSError, RuntimeError, SafetensorError) as err:  # torch.save and safetensors wrap the OSError
        shutil.rmtree(final.parent / f".{final.name}.tmp", ignore_errors=True)
        raise RunError(
            f"cannot write checkpoint {final} ({_one_line(err)}); the previous checkpoint is kept: make room or "
            "fix the folder's permissions, then resume"
        ) from err


def _save(final: Path, model: torch.nn.Module, state: TrainState, keep: int, config: dict | None) -> Path:
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{final.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model(model, str(tmp / WEIGHTS))
    torch.save(
        {
            "step": state.step,
            "optimizer": state.optimizer,
            "scheduler": state.scheduler,
            "scaler": state.scaler,
            "rng": state.rng,
        },
        tmp / STATE,
    )
    files = {name: _fingerprint(tmp / name) for name in (WEIGHTS, STATE)}
    (tmp / META).write_text(json.dumps({"step": state.step, "files": files, "config": config or {}}, indent=2))
    for path in tmp.iterdir():
        fsync_path(path)
    fsync_path(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_path(root)
    latest_tmp = root / f".{LATEST}.tmp"
    latest_tmp.write_text(final.name)
    fsync_path(latest_tmp)
    os.replace(latest_tmp, root / LATEST)
    fsync_path(root)
    _prune(root, keep)
    return final


def _fingerprint(path: Path) -> dict[str, Any]:
    """``{"bytes": size, "sha256": hex digest}`` of a file."""
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return {"bytes": path.stat().st_size, "sha256": digest}


def _verify(folder: Path) -> None:
    """Check the files of a checkpoint against the sizes and digests its ``meta.json`` recorded (checkpoints
    written before meta.json held them are not checked)."""
    meta_file = folder / META
    if not meta_file.is_file():
        return
    try:
        meta = json.loads(meta_file.read_text())
        if not isinstance(meta, dict):
            raise TypeError(f"a JSON {type(meta).__name__}, not an object")
        if "files" not in meta:
            return
        files = meta["files"]
        recorded = {name: (int(files[name]["bytes"]), str(files[name]["sha256"])) for name in (WEIGHTS, STATE)}
    except (ValueError, AttributeError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise RunError(f"checkpoint file {meta_file} is damaged and cannot be read ({_one_line(err)})") from err
    for name, (size, digest) in recorded.items():
        actual = _fingerprint(folder / name)
        if actual["bytes"] != size:
            raise RunError(
                f"checkpoint file {folder / name} is damaged: it has {actual['bytes']} bytes, {size} were written"
            )
        if actual["sha256"] != digest:
            raise RunError(f"checkpoint file {folder / name} is damaged: its SHA-256 differs from the one written")


def _prune(root: Path, keep: int) -> None:
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[: max(0, len(steps) - keep)]:
        shutil.rmtree(old)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint ``OUTPUT/checkpoints/latest`` names, or None when there is no pointer (a fresh run).

    A pointer naming a folder that is missing or incomplete is a ``RunError``: the pointer moves only after its
    checkpoint is complete on disk, so the folder was removed or lost afterwards, and resuming from an older
    checkpoint or from step 0 would silently throw training away. The message names the newest complete
    checkpoint, if any, for ``--run.resume PATH``.
    """
    root = Path(output_dir) / CHECKPOINT_DIR
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    path = root / name
    missing = [f for f in (WEIGHTS, STATE) if not (path / f).is_file()]
    if name and not missing:
        return path
    what = (
        "an empty name"
        if not name
        else f"{path}, which is missing"
        if not path.is_dir()
        else (f"{path}, which lacks {' and '.join(missing)}")
    )
    complete = [p for p in sorted(root.glob("step-*")) if all((p / f).is_file() for f in (WEIGHTS, STATE))]
    advice = (
        f"resume from the newest complete checkpoint with --run.resume {complete[-1]}"
        if complete
        else "no complete checkpoint is left"
    )
    raise RunError(f"checkpoint pointer {pointer} holds {what}; {advice}, or start over with --run.resume none")


def load_checkpoint(path: str | Path, model: torch.nn.Module, map_location: str | torch.device = "cpu") -> TrainState:
    """Load weights into ``model`` (strict) and return the rest of the training state.

    A folder without the two files is an ``InputError``; an empty, truncated, altered (against ``meta.json``) or
    otherwise unreadable file, or weights of another architecture, is a ``RunError`` naming the file.
    """
    path = Path(path)
    weights, state_file = path / WEIGHTS, path / STATE
    if not weights.is_file() or not state_file.is_file():
        raise InputError(f"{path} is not a training checkpoint (needs {WEIGHTS} and {STATE})")
    for file in (weights, state_file):
        if file.stat().st_size == 0:
            raise RunError(f"checkpoint file {file} is empty (0 bytes): the checkpoint is damaged")
    _verify(path)
    try:
        load_model(model, str(weights), strict=True, device=str(map_location))
    except SafetensorError as err:
        raise RunError(f"checkpoint file {weights} is damaged and cannot be read ({_one_line(err)})") from err
    except RuntimeError as err:  # strict loading: other keys or shapes than this model's
        raise RunError(f"checkpoint file {weights} does not fit the configured model ({_one_line(err)})") from err
    try:
        check_finite(model.state_dict(), weights)
    except InputError as err:
        raise RunError(str(err)) from err
    try:
        raw = torch.load(state_file, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError, pickle.UnpicklingError) as err:
        raise RunError(f"checkpoint file {state_file} is damaged and cannot be read ({_one_line(err)})") from err
    if not isinstance(raw, dict) or any(key not in raw for key in STATE_KEYS):
        raise RunError(f"checkpoint file {state_file} is damaged: it does not hold {', '.join(STATE_KEYS)}")
    return TrainState(
        step=int(raw["step"]),
        optimizer=raw["optimizer"],
        scheduler=raw["scheduler"],
        scaler=raw["scaler"],
        rng=raw["rng"],
    )


def _one_line(err: BaseException) -> str:
    """An error's text on one line, cut at 200 characters (torch adds paragraphs of advice), or its type."""
    text = " ".join(str(err).split())
    return text[:200] if text else type(err).__name__
