"""One run per folder: a run folder that holds an earlier run is resumed only with the same config.

A run writes ``config.yaml``, ``checkpoints/`` and ``final/`` into ``run.output_dir``. Starting again in that
folder continues the earlier run when the config is the same (apart from the keys below, which change nothing
about the trained weights up to the steps already done); anything else would mix two runs and replace the earlier
``final/``, so it is refused with the keys that differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from biomedclip.errors import InputError
from biomedclip.train.config import TrainConfig, config_to_dict

# Keys a resumed run may change: how long it runs, how often it logs, evaluates and checkpoints, where it runs,
# and where its folder is (a run folder may be moved or copied and resumed there).
RESUMABLE_CHANGES = (
    "optim.max_steps",
    "run.output_dir",
    "data.workers",
    "run.log_every",
    "run.checkpoint_every",
    "run.keep_checkpoints",
    "run.tensorboard",
    "run.resume",
    "run.device",
    "eval.",
)


def _flat(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every key that differs, except those a resumed run may change."""
    old, new = _flat(before), _flat(after)
    changes = []
    for key in sorted(set(old) | set(new)):
        if key.startswith(RESUMABLE_CHANGES) or old.get(key) == new.get(key):
            continue
        changes.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return changes


def check_run_folder(output_dir: Path, config: TrainConfig) -> None:
    """Raise InputError when ``output_dir`` holds an earlier run that this config must not continue or replace."""
    saved = output_dir / "config.yaml"
    earlier = [name for name in ("checkpoints", "final") if (output_dir / name).exists()]
    if not saved.is_file() or not earlier:
        return
    where = f"{output_dir} already holds a run ({', '.join(earlier)})"
    if config.run.resume == "none":
        raise InputError(f"{where}; run.resume none would replace it: choose another --out, or delete the folder")
    try:
        before = yaml.safe_load(saved.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise InputError(f"{where} whose config.yaml cannot be read ({error}): choose another --out") from error
    changes = config_changes(before, config_to_dict(config))
    if changes:
        shown = "; ".join(changes[:5]) + (f"; and {len(changes) - 5} more" if len(changes) > 5 else "")
        raise InputError(
            f"{where} trained with another config ({shown}): choose another --out to start a new run, or "
            "rerun with the same config to resume it"
        )
