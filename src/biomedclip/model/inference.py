"""The one inference layer: device choice, batched embedding, zero-shot classifiers, and the loaded model.

    >>> clip = load()                                           # the released checkpoint; or "local-dir:DIR", ...
    >>> clip.embed_images(["chest.png"]).shape                   # (1, 512), unit rows
    >>> clip.classify(["chest.png"], ["normal lung", "pneumonia"])

The free functions take any CLIP-like model (``encode_image``/``encode_text`` returning tensors: ours, open_clip's,
the released BiomedCLIP) and return float32 numpy arrays. ``api``, ``serve``, ``train`` and ``evaluate`` all use
this module; the evaluation package adds datasets, paper prompts, metrics and its embedding cache on top.
"""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from biomedclip.errors import InputError

ImageInput = str | Path | bytes | Image.Image
ImageLoader = Sequence[Image.Image]  # anything indexable with len() that yields PIL images

# Generic prompt templates (the paper's three), for labels the paper's prompt sets do not cover.
DEFAULT_TEMPLATES: tuple[str, ...] = ("this is an image of {}", "{} presented in image", "a photo of {}")
MAX_LOGIT_SCALE = 100.0  # training clamps the learned temperature here


def select_device(device: str | torch.device | None = None, local_rank: int | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA if available, else MPS, else the CPU. An explicit device that is absent
    (``cuda`` without a GPU, ``cuda:3`` on a 2-GPU machine, ``mps`` off Apple silicon) is an ``InputError``.
    ``local_rank`` (torchrun) picks the GPU when the device names none."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            device = "cuda"
        elif torch.backends.mps.is_available():
            return torch.device("mps")
        else:
            return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from error
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"device {device!r} asked for, but no CUDA GPU is visible (use --device auto or cpu)")
        if chosen.index is None and local_rank is not None:
            chosen = torch.device("cuda", local_rank)
        if chosen.index is not None and chosen.index >= count:
            raise InputError(f"device {str(chosen)!r} asked for, but only {count} CUDA GPU(s) are visible")
    elif chosen.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r} asked for, but MPS is not available here (use --device auto or cpu)")
    elif chosen.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    return chosen


def model_device(model: Any, device: str | torch.device | None = None) -> torch.device:
    """The device inputs must go to: ``device`` if given, else the device of the model's first parameter."""
    if device not in (None, "auto"):
        return torch.device(device)
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        for parameter in parameters():
            return parameter.device
    return select_device(device)


class ImageDecodeError(InputError):
    """An image that cannot be opened or decoded (missing file, not an image, truncated, too large)."""


def open_image(item: ImageInput) -> Image.Image:
    """An RGB PIL image from a path, encoded bytes or a PIL image; an :class:`ImageDecodeError` names the input."""
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
    """(N, D) float32 embeddings of PIL images (each through ``transform``), in batches; unit rows if ``normalize``."""
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
    """Tokenize and embed ``texts`` in batches; (N, D) float32, unit rows if ``normalize``."""
    target = model_device(model, device)
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(list(texts[start : start + batch_size]))
        chunks.append(model.encode_text(tokens.to(target)).detach().cpu())
    return _finish(chunks, normalize)


def check_templates(templates: Sequence[str]) -> None:
    """Raise ``InputError`` unless there is at least one template and each has exactly one ``{}``."""
    if not templates:
        raise InputError("give at least one prompt template")
    for template in templates:
        if template.count("{}") != 1:
            raise InputError(f"template {template!r} must contain exactly one '{{}}' for the class name")


def build_zeroshot_classifier(
    model: Any,
    tokenizer: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str],
    *,
    batch_size: int = 256,
    device: str | None = None,
) -> np.ndarray:
    """Prompt ensembling: per class, the renormalised mean of the unit embeddings of every filled template.

    Returns:
        (C, D) float32, row ``c`` for ``classnames[c]``.
    """
    if not classnames:
        raise InputError("give at least one class name")
    check_templates(templates)
    prompts = [template.format(name) for name in classnames for template in templates]
    embeddings = embed_texts(model, tokenizer, prompts, batch_size=batch_size, device=device)
    per_class = embeddings.reshape(len(classnames), len(templates), -1).mean(axis=1)
    return (per_class / np.linalg.norm(per_class, axis=1, keepdims=True)).astype(np.float32)


def zeroshot_logits(image_embeddings: np.ndarray, classifier: np.ndarray, logit_scale: float = 100.0) -> np.ndarray:
    """(N, C) scaled cosine similarities between normalised images and class vectors."""
    return logit_scale * np.asarray(image_embeddings, dtype=np.float32) @ np.asarray(classifier, dtype=np.float32).T


def zeroshot_probabilities(
    image_embeddings: np.ndarray, classifier: np.ndarray, logit_scale: float = 100.0
) -> np.ndarray:
    """(N, C) softmax over classes of :func:`zeroshot_logits`."""
    logits = zeroshot_logits(image_embeddings, classifier, logit_scale)
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def model_fingerprint(model: Any) -> str:
    """SHA-256 over the model's state dict (names, dtypes, shapes, bytes): equal weights give equal keys."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class Embedder:
    """A loaded CLIP model with its eval transform, tokenizer and name: the one loaded-model type.

    Wrap an open_clip model the same way: ``Embedder(model, preprocess, open_clip.get_tokenizer(arch), name=...)``.
    ``device=None`` leaves the model where it is; otherwise it is moved (see :func:`select_device`). One instance
    may be shared between threads: its own methods serialise inference with a lock (the HTTP service relies on it).
    """

    def __init__(
        self,
        model: Any,
        transform: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        name: str = "model",
        *,
        device: str | torch.device | None = None,
        batch_size: int = 32,
        text_batch_size: int = 256,
    ) -> None:
        if device is not None:
            model = model.to(select_device(device))
        self.model = model.eval() if hasattr(model, "eval") else model
        self.transform = transform
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.text_batch_size = text_batch_size
        self._lock = threading.Lock()
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return f"Embedder(name={self.name!r}, device={self.device})"

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return model_device(self.model)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the weights (computed once): the model part of every embedding-cache key."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model)
        return self._fingerprint

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.model.embed_dim)

    @property
    def logit_scale(self) -> float:
        """The learned temperature (``exp`` of the stored log scale), clamped at 100 like training."""
        return float(min(self.model.logit_scale.detach().exp().item(), MAX_LOGIT_SCALE))

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
        """(C, D) zero-shot class vectors of ``labels`` (prompt ensembling over ``templates``)."""
        labels = [str(label).strip() for label in labels]
        if not labels or any(not label for label in labels):
            raise InputError("give at least one non-empty label")
        if len(set(labels)) != len(labels):
            raise InputError(f"labels must be distinct, got {labels}")
        with self._lock:
            return build_zeroshot_classifier(
                self.model,
                self.tokenizer,
                labels,
                list(templates or DEFAULT_TEMPLATES),
                batch_size=self.text_batch_size,
            )

    def classify(
        self, images: ImageInput | Sequence[ImageInput], labels: Sequence[str], templates: Sequence[str] | None = None
    ) -> np.ndarray:
        """Zero-shot class probabilities, (N, C) rows in ``labels`` order (softmax at the model's temperature).

        ``templates`` are format strings with one ``{}`` (default: the paper's three templates).
        """
        classifier = self.classifier(labels, templates)
        return zeroshot_probabilities(self.embed_images(images), classifier, self.logit_scale)

    def similarity(self, images: ImageInput | Sequence[ImageInput], texts: str | Sequence[str]) -> np.ndarray:
        """(N_images, N_texts) cosine similarities."""
        return self.embed_images(images) @ self.embed_texts(texts).T


def load(
    name_or_path: str | Path | None = None, device: str | torch.device | None = "auto", **options: Any
) -> Embedder:
    """Load a model for inference. ``name_or_path`` defaults to the released BiomedCLIP checkpoint; also
    ``local-dir:PATH``, ``hf-hub:ORG/NAME``, a checkpoint folder or weight file. A registry architecture
    (``tiny``, ``biomedclip-base``, ...) has random weights and loads with an :class:`UntrainedModelWarning`.
    ``device``: see :func:`select_device`; ``options`` go to :class:`Embedder` (``batch_size``, ...)."""
    from biomedclip.model.config import list_models
    from biomedclip.model.factory import create_model_and_transforms, get_tokenizer
    from biomedclip.model.pretrained import RELEASED_CHECKPOINT, UntrainedModelWarning

    name = str(name_or_path or RELEASED_CHECKPOINT)
    if name in list_models():
        warnings.warn(
            f"{name!r} is an untrained architecture (random weights): its embeddings and probabilities mean "
            f"nothing. For inference use the released checkpoint ({RELEASED_CHECKPOINT}) or a trained model folder.",
            UntrainedModelWarning,
            stacklevel=2,
        )
    target = select_device(device)
    model, _, eval_transform = create_model_and_transforms(name, device=target)
    return Embedder(model, eval_transform, get_tokenizer(name), name=name, **options)
