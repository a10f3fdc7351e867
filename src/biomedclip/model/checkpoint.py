"""Checkpoint I/O in open_clip's layout, safely: safetensors by default, ``.bin``/``.pt`` only through
``torch.load(weights_only=True)``, so a file carrying pickled code is refused instead of executed."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import torch
from torch import nn

from biomedclip.errors import InputError

CONFIG_NAME = "open_clip_config.json"
TEXT_CONFIG_DIR = "text"  # the text tower's transformers config.json inside a bundle
VISION_CONFIG_DIR = "vision"  # timm's local-dir config.json, for image trunks with extra timm arguments
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
    if path.stat().st_size == 0:
        raise InputError(f"weight file {path} is empty (0 bytes): it is damaged")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except SafetensorError as err:
            raise InputError(f"weight file {path} is damaged and cannot be read ({err})") from err
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise UnsafeCheckpointError(
                f"{path} holds pickled objects other than tensors and was refused (loading it could run "
                f"arbitrary code). Convert it to safetensors in a trusted environment. Detail: {err}"
            ) from err
        except (EOFError, RuntimeError) as err:  # a truncated or garbled zip archive
            raise InputError(f"weight file {path} is damaged and cannot be read ({str(err).splitlines()[0]})") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    check_finite(state, path)
    return state


def check_finite(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Raise ``InputError`` when a floating-point tensor of ``state`` holds NaN or inf (a diverged model).

    Every model load (index, classify, serve, eval, export, training from a checkpoint) passes through here.
    """
    bad = [key for key, tensor in state.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise InputError(
            f"weight file {path} holds non-finite values (NaN or inf) in {len(bad)} of {len(state)} tensors "
            f"(e.g. {bad[0]}): the model diverged and cannot be used"
        )


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
    """Write a self-contained bundle into ``out_dir``: ``open_clip_config.json``, ``model.safetensors``
    (+ ``open_clip_pytorch_model.bin`` when ``bin_copy``), the tokenizer files, the text tower's transformers
    config (``text/config.json``) and, for image trunks with extra timm arguments, timm's ``vision/config.json``.

    biomedclip loads it from anywhere (``local-dir:PATH``), also after the folder moved. open_clip 3.x loads it
    offline with no hub cache as ``local-dir:PATH`` from any working directory: it resolves the tower names of
    ``model_cfg`` against the working directory, so those name the bundle's own ``text/`` and ``vision/`` by
    absolute path (the only machine paths written; see :func:`moved_bundle_paths` for a bundle that moved).
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = model.config
    config = dataclasses.replace(
        config,
        vision=dataclasses.replace(config.vision, timm_model_pretrained=False),
        text=dataclasses.replace(config.text, hf_model_pretrained=False, hf_model_config=text_config_dict(model)),
    )
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / SAFETENSORS_NAME), metadata={"format": "pt"})
    if bin_copy:
        torch.save(state, out / BIN_NAME)
    if tokenizer is not None:
        tokenizer.save(out)
    raw = _with_bundled_towers(config.to_json_dict(), model, out)
    (out / CONFIG_NAME).write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    return out


def _is_local_path(name: str) -> bool:
    return Path(name).expanduser().is_absolute() or Path(name).expanduser().exists()


def _with_bundled_towers(raw: dict, model: nn.Module, out: Path) -> dict:
    """Point open_clip's ``model_cfg`` at tower configs written inside ``out``, by absolute path (open_clip and
    timm resolve relative names against the working directory); the names biomedclip builds from go to the
    ``biomedclip`` section (open_clip ignores it) and name no machine path: local folder names (e.g. a PubMedBERT
    folder the run started from) are not kept, so biomedclip loads the bundle wherever it is copied."""
    extras = raw.setdefault("biomedclip", {})
    root = out.resolve()
    vision, text = raw["model_cfg"]["vision_cfg"], raw["model_cfg"]["text_cfg"]
    model.text.transformer.config.save_pretrained(out / TEXT_CONFIG_DIR)
    bundled_text = f"./{TEXT_CONFIG_DIR}"
    extras["hf_model_name"] = bundled_text if _is_local_path(text["hf_model_name"]) else text["hf_model_name"]
    text["hf_model_name"] = str(root / TEXT_CONFIG_DIR)
    if _is_local_path(text["hf_tokenizer_name"]):
        text["hf_tokenizer_name"] = "./"
    if extras.get("timm_model_kwargs"):
        (out / VISION_CONFIG_DIR).mkdir(exist_ok=True)
        timm_config = {
            "architecture": vision["timm_model_name"],
            "model_args": extras["timm_model_kwargs"],
            "pretrained_cfg": {},
        }
        (out / VISION_CONFIG_DIR / "config.json").write_text(json.dumps(timm_config, indent=2) + "\n", encoding="utf-8")
        extras["timm_model_name"] = vision["timm_model_name"]
        vision["timm_model_name"] = f"local-dir:{root / VISION_CONFIG_DIR}"
    return raw


def moved_bundle_paths(folder: str | Path) -> list[str]:
    """The tower config paths in ``folder``'s ``model_cfg`` that open_clip cannot follow because the bundle was
    moved or copied after it was written (they name another folder's ``text/`` or ``vision/``); empty when
    open_clip loads it as is. biomedclip itself does not read these names."""
    root = Path(folder).resolve()
    try:
        model_cfg = json.loads((root / CONFIG_NAME).read_text(encoding="utf-8"))["model_cfg"]
        names = [model_cfg["text_cfg"].get("hf_model_name", ""), model_cfg["vision_cfg"].get("timm_model_name", "")]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
    stale = []
    for name in names:
        path = Path(str(name).removeprefix("local-dir:"))
        if path.is_absolute() and path.name in (TEXT_CONFIG_DIR, VISION_CONFIG_DIR) and path.parent != root:
            stale.append(str(path))
    return stale


def text_config_dict(model: nn.Module) -> dict:
    """The text encoder's transformers config as a plain dict, so the folder rebuilds offline."""
    hf_config = model.text.transformer.config
    keep = (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
        "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
        "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id",
    )  # fmt: skip
    values = {k: getattr(hf_config, k) for k in keep if hasattr(hf_config, k)}
    return {"model_type": hf_config.model_type, **values}
