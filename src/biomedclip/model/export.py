"""Export a model: an open_clip folder (loads in ``open_clip.create_model_and_transforms("local-dir:...")``)
or ONNX image and text encoders (``image_encoder.onnx``, ``text_encoder.onnx``) for onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from biomedclip.model.checkpoint import save_pretrained
from biomedclip.model.clip import BiomedCLIP


def export_open_clip(model: BiomedCLIP, tokenizer, out_dir: str | Path) -> Path:
    """Write the open_clip layout. open_clip builds its text tower from ``hf_model_name`` (a hub id, read from
    the network or the hub cache, as for the released checkpoint) and cannot pass extra timm arguments, so
    models whose towers open_clip cannot build are refused with the reason."""
    config = model.config
    if config.vision.timm_model_kwargs:
        raise ValueError(
            f"open_clip cannot build this image tower: timm arguments {config.vision.timm_model_kwargs} are not "
            "expressible in an open_clip config (use a plain timm model name, or export to onnx)"
        )
    if "/" not in config.text.hf_model_name and not Path(config.text.hf_model_name).is_dir():
        raise ValueError(
            f"open_clip cannot build the text tower: hf_model_name {config.text.hf_model_name!r} is not a hub id"
        )
    return save_pretrained(model, tokenizer, out_dir)


class _ImageEncoder(nn.Module):
    def __init__(self, model: BiomedCLIP) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


class _TextEncoder(nn.Module):
    def __init__(self, model: BiomedCLIP) -> None:
        super().__init__()
        self.model = model

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(token_ids)


def export_onnx(model: BiomedCLIP, tokenizer, out_dir: str | Path, opset: int = 18) -> Path:
    """Write ``image_encoder.onnx`` (input ``pixels [N,3,S,S]``) and ``text_encoder.onnx`` (input
    ``token_ids [N,context_length]`` int64), both with a dynamic batch and unnormalised ``embeddings``
    output, plus ``onnx_config.json`` and the tokenizer files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval().float()
    size, context = model.image_size, model.context_length
    pixels = torch.zeros(2, 3, size, size)
    token_ids = torch.zeros(2, context, dtype=torch.long)
    token_ids[:, 0] = 2
    with torch.no_grad():
        torch.onnx.export(
            _ImageEncoder(model).eval(), (pixels,), str(out / "image_encoder.onnx"), input_names=["pixels"],
            output_names=["embeddings"], dynamic_axes={"pixels": {0: "batch"}, "embeddings": {0: "batch"}},
            opset_version=opset, dynamo=False,
        )  # fmt: skip
        torch.onnx.export(
            _TextEncoder(model).eval(), (token_ids,), str(out / "text_encoder.onnx"), input_names=["token_ids"],
            output_names=["embeddings"], dynamic_axes={"token_ids": {0: "batch"}, "embeddings": {0: "batch"}},
            opset_version=opset, dynamo=False,
        )  # fmt: skip
    meta = {
        "image_size": size,
        "context_length": context,
        "embed_dim": model.embed_dim,
        "logit_scale": model.logit_scale.exp().item(),
        "mean": list(model.config.preprocess.mean),
        "std": list(model.config.preprocess.std),
    }
    (out / "onnx_config.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save(out)
    return out
