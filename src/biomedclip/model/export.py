"""Export a model: an open_clip folder (loads in ``open_clip.create_model_and_transforms("local-dir:...")``)
or ONNX image and text encoders (``image_encoder.onnx``, ``text_encoder.onnx``) for onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from biomedclip.model.checkpoint import save_pretrained
from biomedclip.model.clip import BiomedCLIP
from biomedclip.model.config import PreprocessConfig


def export_open_clip(model: BiomedCLIP, tokenizer, out_dir: str | Path) -> Path:
    """Write the self-contained open_clip bundle of :func:`save_pretrained` (every registry model, ``tiny`` and
    ``small`` included: their timm arguments travel as timm's ``vision/config.json``)."""
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


def preprocess_steps(image_size: int, preprocess: PreprocessConfig) -> list[dict]:
    """The eval transform as data, in order, for runtimes without torchvision (what ``image_transform`` does)."""
    if preprocess.resize_mode != "shortest":
        raise ValueError(f"resize_mode {preprocess.resize_mode!r} cannot be exported (only 'shortest')")
    return [
        {"op": "convert", "mode": "RGB"},
        # long edge = floor(image_size * long / short), resampled as PIL's Image.resize does
        {
            "op": "resize",
            "shortest_edge": image_size,
            "long_edge_rounding": "floor",
            "interpolation": preprocess.interpolation,
        },
        # offset = round_half_even((edge - size) / 2) on each axis
        {"op": "center_crop", "size": [image_size, image_size], "offset_rounding": "half_even"},
        {"op": "to_float", "scale": 1 / 255, "layout": "CHW"},
        {"op": "normalize", "mean": list(preprocess.mean), "std": list(preprocess.std)},
    ]


def export_onnx(model: BiomedCLIP, tokenizer, out_dir: str | Path, opset: int = 18) -> Path:
    """Write ``image_encoder.onnx`` (input ``pixels [N,3,S,S]``) and ``text_encoder.onnx`` (input
    ``token_ids [N,context_length]`` int64), both with a dynamic batch and unnormalised ``embeddings``
    output, plus ``onnx_config.json`` (sizes, temperature and the whole image preprocessing as ``preprocess``
    steps) and the tokenizer files."""
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
    preprocess = model.config.preprocess
    meta = {
        "image_size": size,
        "context_length": context,
        "embed_dim": model.embed_dim,
        "logit_scale": model.logit_scale.exp().item(),
        "mean": list(preprocess.mean),
        "std": list(preprocess.std),
        "preprocess": preprocess_steps(size, preprocess),
    }
    (out / "onnx_config.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save(out)
    return out
