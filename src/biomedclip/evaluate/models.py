"""The model under evaluation: any CLIP-like model with its eval transform and tokenizer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from biomedclip.evaluate.embeddings import model_fingerprint, select_device


@dataclass
class EvalModel:
    """A model (``encode_image``/``encode_text``), its eval transform, its tokenizer and a display name.

    Wrap an open_clip model the same way: ``EvalModel(model, preprocess, open_clip.get_tokenizer(arch), name)``.
    """

    model: Any
    transform: Callable[[Image.Image], torch.Tensor]
    tokenizer: Callable[[list[str]], torch.Tensor]
    name: str = "model"
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the weights (computed once), the model part of every embedding-cache key."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model)
        return self._fingerprint


def load_model(spec: str, device: str | None = None) -> EvalModel:
    """Load a model string of :mod:`biomedclip.model` (built-in name, ``local-dir:``, ``hf-hub:``, folder, file)."""
    from biomedclip.model import create_model_and_transforms, get_tokenizer

    model, _, eval_transform = create_model_and_transforms(spec, device=select_device(device))
    return EvalModel(model.eval(), eval_transform, get_tokenizer(spec), name=spec)
