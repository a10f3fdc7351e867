"""Checkpoint I/O in open_clip's layout, safely: safetensors by default, ``.bin``/``.pt`` only through
``torch.load(weights_only=True)``, so a file carrying pickled code is refused instead of executed."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import torch
from torch import nn

CONFIG_NAME = "open_clip_config.json"
SAFETENSORS_NAME = "model.safetensors"
BIN_NAME = "open_clip_pytorch_model.bin"
# Weight file names looked for in a folder or hub repo, best first.
WEIGHT_NAMES = (
    SAFETENSORS_NAME,
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    BIN_NAME,
    "open_clip_pytorch_model.pth",
    "pytorch_model.bin",
)
STALE_KEYS = ("text.transformer.embeddings.position_ids",)


class UnsafeCheckpointError(ValueError):
    """The checkpoint needs arbitrary code to unpickle; it is refused."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a ``.safetensors`` file or a weights-only torch pickle (``.bin``/``.pt``).

    A training checkpoint (``{"state_dict": ..., "epoch": ...}``) and DDP ``module.`` prefixes are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise UnsafeCheckpointError(
                f"{path} holds pickled objects other than tensors and was refused (loading it could run "
                f"arbitrary code). Convert it to safetensors in a trusted environment. Detail: {err}"
            ) from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a checkpoint into ``model`` strictly, after dropping stale keys (``position_ids``) and fixing
    the shape of ``logit_scale``; mismatching keys raise a ``ValueError`` that names them."""
    state = read_state_dict(path)
    own = model.state_dict()
    for key in STALE_KEYS:
        if key in state and key not in own:
            del state[key]
    for key in ("logit_scale", "logit_bias"):
        if key in state and key in own and state[key].shape != own[key].shape:
            state[key] = state[key].reshape(own[key].shape)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the model config: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    bad_shapes = [k for k in own if own[k].shape != state[k].shape]
    if bad_shapes:
        raise ValueError(f"{path}: shape mismatch for {bad_shapes[:8]} (wrong model config?)")
    model.load_state_dict(state, strict=True)


def find_weights(folder: str | Path) -> Path | None:
    """The preferred weight file in ``folder`` (see ``WEIGHT_NAMES``), or ``None``."""
    for name in WEIGHT_NAMES:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def save_pretrained(model: nn.Module, tokenizer, out_dir: str | Path, bin_copy: bool = True) -> Path:
    """Write ``open_clip_config.json``, ``model.safetensors`` (+ ``open_clip_pytorch_model.bin`` when
    ``bin_copy``) and the tokenizer files into ``out_dir``: loadable by biomedclip (``local-dir:``) and open_clip.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = model.config
    config = dataclasses.replace(
        config,
        vision=dataclasses.replace(config.vision, timm_model_pretrained=False),
        text=dataclasses.replace(config.text, hf_model_pretrained=False, hf_model_config=_text_config_dict(model)),
    )
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / SAFETENSORS_NAME), metadata={"format": "pt"})
    if bin_copy:
        torch.save(state, out / BIN_NAME)
    if tokenizer is not None:
        tokenizer.save(out)
    (out / CONFIG_NAME).write_text(json.dumps(config.to_json_dict(), indent=2) + "\n", encoding="utf-8")
    return out


def _text_config_dict(model: nn.Module) -> dict:
    """The text encoder's transformers config as a plain dict, so the folder rebuilds offline."""
    hf_config = model.text.transformer.config
    keep = (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
        "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
        "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id",
    )  # fmt: skip
    values = {k: getattr(hf_config, k) for k in keep if hasattr(hf_config, k)}
    return {"model_type": hf_config.model_type, **values}
