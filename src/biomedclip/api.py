"""The Python API: ``biomedclip.load(name_or_path)`` and what it returns.

    >>> import biomedclip
    >>> clip = biomedclip.load("local-dir:checkpoints/biomedclip")   # or "tiny", "hf-hub:...", a folder
    >>> clip.embed_images(["chest.png"]).shape                         # (1, 512), unit rows
    >>> clip.classify(["chest.png"], ["normal lung", "pneumonia"])     # (1, 2) probabilities
    >>> clip.similarity(["chest.png"], ["a chest X-ray"])              # (1, 1) cosine similarities

Batching, device choice (CUDA when available) and image decoding happen inside. A :class:`Embedder` may be shared
between threads: inference is serialised by a lock, which is how the HTTP service stays safe under concurrency.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from biomedclip.evaluate.embeddings import embed_images, embed_texts, select_device
from biomedclip.evaluate.prompts import DEFAULT_TEMPLATES
from biomedclip.evaluate.zeroshot import build_zeroshot_classifier, zeroshot_probabilities

ImageInput = str | Path | bytes | Image.Image


class ImageDecodeError(ValueError):
    """An image that cannot be opened or decoded (missing file, not an image, truncated, too large)."""


def open_image(item: ImageInput) -> Image.Image:
    """An RGB PIL image from a path, encoded bytes or a PIL image.

    Raises:
        ImageDecodeError: naming the input, when it cannot be read as an image.
    """
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    name = "uploaded bytes" if isinstance(item, bytes) else str(item)
    try:
        with Image.open(io.BytesIO(item) if isinstance(item, bytes) else item) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as error:
        raise ImageDecodeError(f"cannot read image {name}: {error}") from error


class _DecodedImages(Sequence[Image.Image]):
    """Decodes the i-th input only when the batch loader asks for it, so big lists stay light."""

    def __init__(self, items: Sequence[ImageInput]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Image.Image:  # type: ignore[override]
        return open_image(self.items[index])


class Embedder:
    """A loaded BiomedCLIP model with its eval transform and tokenizer, ready for inference."""

    def __init__(
        self,
        model: torch.nn.Module,
        transform: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        *,
        name: str = "",
        device: str | None = None,
        batch_size: int = 32,
        text_batch_size: int = 256,
    ) -> None:
        self.device = select_device(device)
        self.model = model.to(self.device).eval()
        self.transform = transform
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.text_batch_size = text_batch_size
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.model.embed_dim)

    @property
    def logit_scale(self) -> float:
        """The model's learned temperature (``exp`` of the stored log scale), clamped at 100 like training."""
        return float(min(self.model.logit_scale.detach().exp().item(), 100.0))

    def embed_images(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        """(N, D) float32 unit-length embeddings of image paths, encoded bytes or PIL images."""
        items = [images] if isinstance(images, ImageInput) else list(images)
        if not items:
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            return embed_images(self.model, _DecodedImages(items), self.transform, batch_size=self.batch_size)

    def embed_texts(self, texts: str | Sequence[str]) -> np.ndarray:
        """(N, D) float32 unit-length embeddings of texts (tokenised and truncated to the context length)."""
        items = [texts] if isinstance(texts, str) else [str(text) for text in texts]
        if not items:
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            return embed_texts(self.model, self.tokenizer, items, batch_size=self.text_batch_size)

    def classifier(self, labels: Sequence[str], templates: Sequence[str] | None = None) -> np.ndarray:
        """(C, D) zero-shot class vectors: each label's templates embedded and averaged (prompt ensembling)."""
        labels = [str(label).strip() for label in labels]
        if not labels or any(not label for label in labels):
            raise ValueError("give at least one non-empty label")
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be distinct, got {labels}")
        with self._lock:
            return build_zeroshot_classifier(
                self.model,
                self.tokenizer,
                labels,
                list(templates or DEFAULT_TEMPLATES),
                batch_size=self.text_batch_size,
            )

    def classify(
        self,
        images: ImageInput | Sequence[ImageInput],
        labels: Sequence[str],
        templates: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Zero-shot class probabilities, (N, C) rows in ``labels`` order (softmax at the model's temperature).

        ``templates`` are format strings with one ``{}`` (default: the paper's three templates).
        """
        classifier = self.classifier(labels, templates)
        return zeroshot_probabilities(self.embed_images(images), classifier, self.logit_scale)

    def similarity(self, images: ImageInput | Sequence[ImageInput], texts: str | Sequence[str]) -> np.ndarray:
        """(N_images, N_texts) cosine similarities."""
        return self.embed_images(images) @ self.embed_texts(texts).T


def load(name_or_path: str | Path, device: str | None = None, **options: Any) -> Embedder:
    """Load a model for inference: a registry name (``tiny``, ``biomedclip-base``), ``local-dir:PATH``,
    ``hf-hub:ORG/NAME`` or a checkpoint folder. ``device`` defaults to CUDA when available, else the CPU;
    ``options`` go to :class:`Embedder` (``batch_size``, ``text_batch_size``)."""
    from biomedclip.model import create_model_and_transforms, get_tokenizer

    name = str(name_or_path)
    model, _, eval_transform = create_model_and_transforms(name)
    return Embedder(model, eval_transform, get_tokenizer(name), name=name, device=device, **options)
