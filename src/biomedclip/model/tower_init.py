"""Start the towers from local pretrained files, as the paper starts from ImageNet ViT and PubMedBERT:
the image trunk from a timm checkpoint file, the text encoder (and its vocabulary) from a HF BERT folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from biomedclip.model.checkpoint import read_state_dict
from biomedclip.model.config import ModelConfig
from biomedclip.model.tokenizer import has_tokenizer_files


def with_text_from_folder(config: ModelConfig, folder: str | Path) -> ModelConfig:
    """The config whose text tower loads ``folder`` (config + weights, e.g. PubMedBERT) with
    ``from_pretrained``; the folder's vocabulary becomes the tokenizer when it has one."""
    folder = Path(folder).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a HF model folder (no config.json)")
    text = dataclasses.replace(
        config.text,
        hf_model_name=str(folder),
        hf_model_pretrained=True,
        hf_model_config=None,
        hf_tokenizer_name=str(folder) if has_tokenizer_files(folder) else config.text.hf_tokenizer_name,
    )
    return dataclasses.replace(config, text=text)


def load_image_trunk(trunk: nn.Module, path: str | Path) -> None:
    """Load a timm checkpoint (``.safetensors``/``.pth``/``.bin``, weights only) into the image trunk.

    The classifier head is dropped and, for ViTs, position embeddings are resized to the trunk's image size
    by timm's own checkpoint filter. Any other missing or unexpected key raises ``ValueError``.
    """
    import importlib

    state = read_state_dict(path)
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    module = importlib.import_module(type(trunk).__module__)
    checkpoint_filter = getattr(module, "checkpoint_filter_fn", None)
    if checkpoint_filter is not None:
        state = checkpoint_filter(state, trunk)
    result = trunk.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{path} does not fit the image trunk {type(trunk).__name__}: missing {result.missing_keys[:8]}, "
            f"unexpected {result.unexpected_keys[:8]}"
        )
