"""Collapse and divergence, read from the metric records a run logs.

A CLIP model that ignores its inputs scores every caption alike: its contrastive loss is ln(global batch), what a
uniform guess among the batch's captions costs. A training loss that stays there (within ``COLLAPSE_TOLERANCE``)
for ``COLLAPSE_STEPS`` steps means the model has collapsed (or never started learning); one that is not finite,
or stays more than ``DIVERGENCE_MARGIN`` above it, means training diverged. An in-training zero-shot evaluation
that predicts one class for every image is the same collapse seen from the labels.
"""

from __future__ import annotations

import math
from typing import Any

COLLAPSE_TOLERANCE = 0.05  # nats from ln(batch)
COLLAPSE_STEPS = 50  # consecutive logged steps at ln(batch) before a warning
DIVERGENCE_MARGIN = 0.5  # nats above ln(batch): worse than guessing


class HealthMonitor:
    """Feed it every train and eval record (:meth:`observe`); it returns the warnings to show at once and keeps
    them for the run's summary (:attr:`warnings`)."""

    def __init__(self, global_batch: int) -> None:
        self.chance_loss = math.log(global_batch)
        self.global_batch = global_batch
        self.warnings: list[str] = []
        self._flat_since: int | None = None  # first step of the current run of records at ln(batch)
        self._high_since: int | None = None
        self._last_step = 0
        self._warned: set[str] = set()

    def observe(self, record: dict[str, Any]) -> list[str]:
        """Check one record; the warnings it raises for the first time (each kind is reported once)."""
        if record.get("kind") == "eval":
            return self._eval(record)
        if record.get("kind") != "train" or "loss" not in record:
            return []
        step, loss = int(record["step"]), float(record["loss"])
        window_start = self._last_step
        self._last_step = step
        if not math.isfinite(loss):
            return self._warn("nonfinite", f"step {step}: the training loss is {loss}: training diverged")
        near = abs(loss - self.chance_loss) <= COLLAPSE_TOLERANCE
        self._flat_since = (self._flat_since if self._flat_since is not None else window_start) if near else None
        high = loss > self.chance_loss + DIVERGENCE_MARGIN
        self._high_since = (self._high_since if self._high_since is not None else window_start) if high else None
        fired = []
        if self._flat_since is not None and step - self._flat_since >= COLLAPSE_STEPS:
            fired += self._warn(
                "collapse",
                f"steps {self._flat_since}-{step}: the training loss sits at ln({self.global_batch}) = "
                f"{self.chance_loss:.3f} (now {loss:.4f}): the model scores every caption alike (collapsed or not "
                "learning); try a lower optim.lr or a longer warmup",
            )
        if self._high_since is not None and step - self._high_since >= COLLAPSE_STEPS:
            fired += self._warn(
                "diverge",
                f"steps {self._high_since}-{step}: the training loss {loss:.4f} stays above ln({self.global_batch}) "
                f"+ {DIVERGENCE_MARGIN} (worse than guessing): training is diverging; lower optim.lr",
            )
        return fired

    def _eval(self, record: dict[str, Any]) -> list[str]:
        fired = []
        for key, value in record.items():
            if key.startswith("zeroshot_") and key.endswith("_predicted_classes") and value == 1:
                name = key.removeprefix("zeroshot_").removesuffix("_predicted_classes")
                classes = record.get(f"zeroshot_{name}_classes", 0)
                if classes > 1:
                    fired += self._warn(
                        f"one-class-{name}",
                        f"step {record['step']}: zero-shot on {name} predicts one class for all "
                        f"{record.get(f'zeroshot_{name}_n', '?')} images: the model has collapsed",
                    )
        return fired

    def _warn(self, kind: str, message: str) -> list[str]:
        if kind in self._warned:
            return []
        self._warned.add(kind)
        self.warnings.append(message)
        return [message]
