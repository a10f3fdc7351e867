"""Batched image/text embedding for any CLIP-like model, and the on-disk embedding cache.

A model is anything with ``encode_image(pixels)`` and ``encode_text(token_ids)`` returning torch tensors
(ours, open_clip's, the released BiomedCLIP). The caller puts it in ``eval()`` mode on its device; these helpers
move inputs to the model's device (or ``device``) and return float32 numpy arrays.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ImageLoader = Sequence[Image.Image]  # anything indexable with len() that yields PIL images


def select_device(device: str | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when available, else the CPU; any other string is passed to torch."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_device(model: Any, device: str | None = None) -> torch.device:
    """The device inputs must go to: ``device`` if given, else the device of the model's first parameter."""
    if device not in (None, "auto"):
        return torch.device(device)
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        for parameter in parameters():
            return parameter.device
    return select_device(device)


class _TransformedImages(torch.utils.data.Dataset):
    """Applies ``transform`` to the i-th PIL image of ``images``."""

    def __init__(self, images: ImageLoader, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.images[index])


def _finish(chunks: list[torch.Tensor], normalize: bool) -> np.ndarray:
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    features = torch.cat(chunks).float()
    if normalize:
        features = torch.nn.functional.normalize(features, dim=-1)
    return features.numpy()


@torch.no_grad()
def embed_images(
    model: Any,
    images: ImageLoader,
    transform: Callable[[Image.Image], torch.Tensor],
    *,
    batch_size: int = 64,
    device: str | None = None,
    normalize: bool = True,
    num_workers: int = 0,
) -> np.ndarray:
    """Embed every image of ``images`` (PIL images, transformed by ``transform``) in batches.

    Returns:
        (N, D) float32 array, rows L2-normalised when ``normalize``.
    """
    target = model_device(model, device)
    loader = torch.utils.data.DataLoader(
        _TransformedImages(images, transform), batch_size=batch_size, num_workers=num_workers, shuffle=False
    )
    chunks = [model.encode_image(batch.to(target)).detach().cpu() for batch in loader]
    return _finish(chunks, normalize)


@torch.no_grad()
def embed_texts(
    model: Any,
    tokenizer: Callable[[list[str]], torch.Tensor],
    texts: Sequence[str],
    *,
    batch_size: int = 256,
    device: str | None = None,
    normalize: bool = True,
) -> np.ndarray:
    """Tokenize and embed ``texts`` in batches; returns (N, D) float32, rows L2-normalised when ``normalize``."""
    target = model_device(model, device)
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(list(texts[start : start + batch_size]))
        chunks.append(model.encode_text(tokens.to(target)).detach().cpu())
    return _finish(chunks, normalize)


def model_fingerprint(model: Any) -> str:
    """SHA-256 over the model's state dict (names, dtypes, shapes, bytes): equal weights give equal keys."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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
