"""Evaluation results: one JSON file per (model, dataset, task), holding metrics and the resolved settings."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from biomedclip import __version__

RESULT_SUFFIX = ".result.json"


def slug(text: str) -> str:
    """A file-name-safe version of a model or dataset string."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-80:] or "x"


def make_result(task: str, model: str, dataset: str, split: str, metrics: dict, settings: dict) -> dict:
    """The result record written for every evaluation run."""
    return {
        "task": task,
        "model": model,
        "dataset": dataset,
        "split": split,
        "metrics": metrics,
        "settings": settings,
        "biomedclip_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_result(result: dict, out_dir: str | Path) -> Path:
    """Write ``<task>__<model>__<dataset>__<split>.result.json`` under ``out_dir`` and return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "__".join(slug(result[k]) for k in ("task", "model", "dataset", "split")) + RESULT_SUFFIX
    path = out_dir / name
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def read_results(paths: list[str | Path]) -> list[dict]:
    """Every result JSON in the given files or folders (recursively), in a stable order."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(path.rglob(f"*{RESULT_SUFFIX}")))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no result file or folder at {path}")
    results = []
    for file in files:
        try:
            record = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read result {file}: {error}") from error
        if not isinstance(record, dict) or not {"task", "model", "dataset", "metrics"} <= set(record):
            raise ValueError(f"{file} is not an evaluation result (needs task, model, dataset, metrics)")
        results.append(record)
    return results
