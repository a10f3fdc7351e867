"""The BiomedCLIP model: open_clip-compatible CLIP (timm ViT + HF BERT), tokenizer and checkpoint I/O.

>>> model, train_tf, eval_tf = create_model_and_transforms("tiny")
>>> tokenizer = get_tokenizer("tiny")
>>> text = model.encode_text(tokenizer(["a chest x-ray"]), normalize=True)
>>> clip = load()   # inference: the released checkpoint (list_pretrained()); list_models() are untrained architectures

Names are imported on first use, so ``import biomedclip.model`` (and ``biomedclip model list``) stays fast;
torch, timm and transformers load only when a model is built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "RELEASED_CHECKPOINT": "biomedclip.model.config",
    "BiomedCLIP": "biomedclip.model.clip",
    "Embedder": "biomedclip.model.inference",
    "ModelConfig": "biomedclip.model.config",
    "TextConfig": "biomedclip.model.config",
    "UnsafeCheckpointError": "biomedclip.model.checkpoint",
    "VisionConfig": "biomedclip.model.config",
    "WordPieceTokenizer": "biomedclip.model.tokenizer",
    "create_model": "biomedclip.model.factory",
    "create_model_and_transforms": "biomedclip.model.factory",
    "get_model_config": "biomedclip.model.config",
    "get_tokenizer": "biomedclip.model.factory",
    "image_transform": "biomedclip.model.transforms",
    "list_models": "biomedclip.model.config",
    "list_pretrained": "biomedclip.model.pretrained",
    "load": "biomedclip.model.inference",
    "read_state_dict": "biomedclip.model.checkpoint",
    "save_pretrained": "biomedclip.model.checkpoint",
    "select_device": "biomedclip.model.inference",
    "train_wordpiece": "biomedclip.model.tokenizer",
}

__all__ = [
    "RELEASED_CHECKPOINT",
    "BiomedCLIP",
    "Embedder",
    "ModelConfig",
    "TextConfig",
    "UnsafeCheckpointError",
    "VisionConfig",
    "WordPieceTokenizer",
    "create_model",
    "create_model_and_transforms",
    "get_model_config",
    "get_tokenizer",
    "image_transform",
    "list_models",
    "list_pretrained",
    "load",
    "read_state_dict",
    "save_pretrained",
    "select_device",
    "train_wordpiece",
]

if TYPE_CHECKING:
    from biomedclip.model.checkpoint import UnsafeCheckpointError, read_state_dict, save_pretrained
    from biomedclip.model.clip import BiomedCLIP
    from biomedclip.model.config import (
        RELEASED_CHECKPOINT,
        ModelConfig,
        TextConfig,
        VisionConfig,
        get_model_config,
        list_models,
    )
    from biomedclip.model.factory import create_model, create_model_and_transforms, get_tokenizer
    from biomedclip.model.inference import Embedder, load, select_device
    from biomedclip.model.pretrained import list_pretrained
    from biomedclip.model.tokenizer import WordPieceTokenizer, train_wordpiece
    from biomedclip.model.transforms import image_transform


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'biomedclip.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
