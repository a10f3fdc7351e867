"""Metric sinks of a run: one JSON object per line in ``metrics.jsonl`` and TensorBoard scalars."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsWriter:
    """Appends metric records to ``OUTPUT/metrics.jsonl`` and, optionally, ``OUTPUT/tensorboard``."""

    def __init__(self, output_dir: str | Path, *, tensorboard: bool = True) -> None:
        self.path = Path(output_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        """Write one record; numeric fields other than ``step`` also go to TensorBoard under ``kind/name``."""
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            kind = record.get("kind", "train")
            for key, value in record.items():
                if key not in ("step", "kind") and isinstance(value, int | float) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{kind}/{key}", value, record["step"])

    def close(self) -> None:
        """Flush and close both sinks."""
        self._file.close()
        if self._tb is not None:
            self._tb.close()
