"""Build models, transforms and tokenizers from a name or a pretrained string (see :mod:`pretrained`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from biomedclip.model.checkpoint import CONFIG_NAME
from biomedclip.model.clip import BiomedCLIP
from biomedclip.model.config import ModelConfig, TextConfig
from biomedclip.model.pretrained import LOCAL_DIR_PREFIX, resolve, tokenizer_dir_for
from biomedclip.model.text_configs import with_text_architecture
from biomedclip.model.tokenizer import WordPieceTokenizer, has_tokenizer_files, load_tokenizer
from biomedclip.model.tower_init import load_image_trunk, with_text_from_folder
from biomedclip.model.transforms import image_transform

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _apply_overrides(config: ModelConfig, overrides: dict[str, Any]) -> ModelConfig:
    """``embed_dim=...``, ``init_logit_scale=...``, ``vision={...}``, ``text={...}``, ``preprocess={...}``."""
    nested = {k: overrides.pop(k) for k in ("vision", "text", "preprocess") if k in overrides}
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)}
    if unknown:
        raise TypeError(f"unknown model overrides: {', '.join(sorted(unknown))}")
    config = dataclasses.replace(config, **overrides)
    for key, values in nested.items():
        config = dataclasses.replace(config, **{key: dataclasses.replace(getattr(config, key), **values)})
    return config


def create_model(
    name_or_pretrained: str,
    device: str | torch.device = "cpu",
    *,
    pretrained: str | None = None,
    precision: str = "fp32",
    output_dict: bool = False,
    cache_dir: str | None = None,
    pretrained_image: str | None = None,
    pretrained_text: str | None = None,
    **overrides: Any,
) -> BiomedCLIP:
    """Build a model in eval mode.

    Args:
        name_or_pretrained: built-in name, ``hf-hub:ORG/NAME``, ``local-dir:PATH``, folder or weight file.
        device: where to put the model.
        pretrained: a weight file to load into a built-in config (open_clip's ``pretrained=``).
        precision: ``fp32``, ``bf16`` or ``fp16``.
        output_dict: make ``forward`` return a dict instead of a tuple.
        cache_dir: Hugging Face cache folder for ``hf-hub:`` strings.
        pretrained_image: a timm checkpoint file to start the image trunk from (e.g. ImageNet ViT-B/16).
        pretrained_text: a local HF BERT folder to start the text encoder and vocabulary from (e.g. PubMedBERT).
        **overrides: config fields to change (``embed_dim``, ``vision={...}``, ``text={...}``, ...).
    """
    resolved = resolve(name_or_pretrained, cache_dir)
    weights = pretrained or resolved.weights
    config = with_text_architecture(_apply_overrides(resolved.config, dict(overrides)), weights)
    if pretrained_text is not None:
        config = with_text_from_folder(config, pretrained_text)
    model = BiomedCLIP(config, output_dict=output_dict)
    if pretrained_image is not None:
        load_image_trunk(model.visual.trunk, pretrained_image)
    if weights is not None:
        from biomedclip.model.checkpoint import load_weights

        load_weights(model, weights)
    if precision not in _DTYPES:
        raise ValueError(f"precision must be one of {', '.join(_DTYPES)}")
    return model.to(device=device, dtype=_DTYPES[precision]).eval()


def create_model_and_transforms(
    name_or_pretrained: str, device: str | torch.device = "cpu", **overrides: Any
) -> tuple[BiomedCLIP, Callable, Callable]:
    """``(model, train_transform, eval_transform)`` like open_clip; arguments as :func:`create_model`."""
    model = create_model(name_or_pretrained, device, **overrides)
    size, preprocess = model.config.vision.image_size, model.config.preprocess
    return model, image_transform(size, train=True, cfg=preprocess), image_transform(size, train=False, cfg=preprocess)


def get_tokenizer(
    name_or_pretrained: str, context_length: int | None = None, cache_dir: str | None = None
) -> WordPieceTokenizer:
    """The tokenizer of a model string: the folder's own files, else ``text_cfg.hf_tokenizer_name``
    (``builtin:`` vocabularies ship in the package; hub names need the network or a filled hub cache).
    A plain HF tokenizer folder (e.g. a BERT folder, or ``train-tokenizer`` output) also works."""
    folder = Path(name_or_pretrained.removeprefix(LOCAL_DIR_PREFIX)).expanduser()
    if folder.is_dir() and not (folder / CONFIG_NAME).is_file() and has_tokenizer_files(folder):
        return load_tokenizer(folder, context_length or TextConfig().context_length)
    resolved = resolve(name_or_pretrained, cache_dir)
    folder = resolved.tokenizer_dir or tokenizer_dir_for(resolved.config, cache_dir)
    return load_tokenizer(folder, context_length or resolved.config.text.context_length)
