"""The on-disk embedding cache of the evaluation suite. Embedding itself lives in :mod:`biomedclip.model.inference`
(re-exported here for the evaluation modules)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from biomedclip.model.inference import embed_images, embed_texts, model_device, model_fingerprint, select_device

__all__ = [
    "EmbeddingCache",
    "embed_images",
    "embed_texts",
    "model_device",
    "model_fingerprint",
    "select_device",
    "transform_fingerprint",
]


def transform_fingerprint(transform: Any) -> str:
    """The transform's ``repr`` (torchvision's ``Compose`` lists every step with its parameters)."""
    return repr(transform)


class EmbeddingCache:
    """Embeddings stored as ``<root>/<key>.npy`` + ``<key>.json``, keyed by (model, dataset, transform, kind)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @staticmethod
    def key(*, model: str, dataset: str, transform: str, kind: str = "image") -> str:
        """A stable hex key for one (model fingerprint, dataset identity, transform, kind) combination."""
        payload = json.dumps({"model": model, "dataset": dataset, "transform": transform, "kind": kind})
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def load(self, key: str) -> np.ndarray | None:
        """The cached array, or ``None`` when absent or unreadable."""
        path = self.root / f"{key}.npy"
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None

    def save(self, key: str, array: np.ndarray, meta: dict) -> Path:
        """Write the array atomically (temp file + rename) with a JSON sidecar describing it."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{key}.npy"
        tmp = self.root / f".{key}.tmp.npy"
        np.save(tmp, np.asarray(array), allow_pickle=False)
        tmp.replace(path)
        (self.root / f"{key}.json").write_text(json.dumps(meta | {"shape": list(array.shape)}, indent=2))
        return path

    def get_or_compute(self, key: str, compute: Callable[[], np.ndarray], meta: dict) -> tuple[np.ndarray, bool]:
        """The cached array (``hit=True``) or ``compute()``'s result, saved first (``hit=False``)."""
        cached = self.load(key)
        if cached is not None:
            return cached, True
        array = compute()
        self.save(key, array, meta)
        return array, False
