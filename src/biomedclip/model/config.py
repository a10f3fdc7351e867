"""Model configuration: open_clip's JSON layout parsed into dataclasses, and the built-in registry.

A config file is the ``open_clip_config.json`` layout: ``model_cfg`` (read by open_clip too), ``preprocess_cfg``
and our own ``biomedclip`` section, which open_clip ignores. That section holds what open_clip cannot express:
extra timm arguments (tiny ViTs at 64 px) and the text tower's HF config inline, so that every registered
model builds offline. This module imports neither torch nor transformers.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The released BiomedCLIP (Zhang et al., 2023): the default of every inference command and of biomedclip.load().
RELEASED_CHECKPOINT = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# Keys written by older open_clip / the first BiomedCLIP release, mapped to today's names.
_OLD_TEXT_KEYS = {"proj": "hf_proj_type", "pooler_type": "hf_pooler_type"}


@dataclass
class VisionConfig:
    """Image tower: a timm model plus open_clip's pooling/projection head."""

    timm_model_name: str = "vit_base_patch16_224"
    timm_model_pretrained: bool = False
    timm_pool: str = ""
    timm_proj: str = "linear"
    timm_proj_bias: bool = False
    timm_drop: float = 0.0
    timm_drop_path: float | None = None
    image_size: int = 224
    timm_model_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TextConfig:
    """Text tower: a HF encoder (BERT), a pooler and a projection, as in open_clip's ``HFTextEncoder``."""

    hf_model_name: str = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
    hf_tokenizer_name: str = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
    hf_model_pretrained: bool = False
    hf_proj_type: str = "mlp"
    hf_pooler_type: str = "cls_last_hidden_state_pooler"
    context_length: int = 256
    hf_model_config: dict[str, Any] | None = None


@dataclass
class PreprocessConfig:
    """Image preprocessing: OpenAI CLIP statistics, bicubic resize of the shortest side."""

    mean: tuple[float, ...] = OPENAI_MEAN
    std: tuple[float, ...] = OPENAI_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"


@dataclass
class ModelConfig:
    """The whole CLIP: defaults are the released BiomedCLIP (ViT-B/16 + PubMedBERT, 512-d, context 256)."""

    embed_dim: int = 512
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    init_logit_scale: float = math.log(1 / 0.07)
    init_logit_bias: float | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """The ``open_clip_config.json`` layout; ``model_cfg`` holds only keys open_clip accepts."""
        vision = asdict(self.vision)
        text = asdict(self.text)
        extras: dict[str, Any] = {}
        if vision.pop("timm_model_kwargs"):
            extras["timm_model_kwargs"] = self.vision.timm_model_kwargs
        hf_config = text.pop("hf_model_config")
        if hf_config:
            extras["hf_model_config"] = hf_config
        if vision["timm_drop_path"] is None:
            del vision["timm_drop_path"]
        model_cfg: dict[str, Any] = {"embed_dim": self.embed_dim, "vision_cfg": vision, "text_cfg": text}
        if self.init_logit_bias is not None:
            model_cfg["init_logit_bias"] = self.init_logit_bias
        out = {"model_cfg": model_cfg, "preprocess_cfg": asdict(self.preprocess)}
        if extras:
            out["biomedclip"] = extras
        return out


def _known(cls: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    """Keep the keys ``cls`` knows; unknown ones (e.g. open_clip flags we do not use) are logged and dropped."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        log.info("ignoring %s keys not used by biomedclip: %s", where, ", ".join(unknown))
    return {k: v for k, v in values.items() if k in names}


def parse_config(raw: dict[str, Any]) -> ModelConfig:
    """Parse an ``open_clip_config.json`` dict (or a bare ``model_cfg`` dict) into a :class:`ModelConfig`.

    Tolerates the old text keys ``proj`` and ``pooler_type`` of the first BiomedCLIP release.
    """
    model_cfg = dict(raw.get("model_cfg", raw))
    extras = raw.get("biomedclip", {})
    if "vision_cfg" not in model_cfg or "text_cfg" not in model_cfg:
        raise ValueError("model config needs 'vision_cfg' and 'text_cfg' (open_clip layout)")
    vision = dict(model_cfg["vision_cfg"])
    text = dict(model_cfg["text_cfg"])
    # A bundle written by save_pretrained points open_clip at tower configs in the folder; we build from these.
    for section, key in ((vision, "timm_model_name"), (text, "hf_model_name")):
        if extras.get(key):
            section[key] = extras[key]
    if not vision.get("timm_model_name"):
        raise ValueError("only timm image towers are supported: vision_cfg.timm_model_name is missing")
    for old, new in _OLD_TEXT_KEYS.items():
        if old in text:
            text.setdefault(new, text.pop(old))
    if not text.get("hf_model_name"):
        raise ValueError("only HF text towers are supported: text_cfg.hf_model_name is missing")
    vision.setdefault("timm_model_kwargs", extras.get("timm_model_kwargs", {}))
    text.setdefault("hf_model_config", extras.get("hf_model_config"))
    if isinstance(vision.get("image_size"), list | tuple):
        vision["image_size"] = int(vision["image_size"][0])
    preprocess = dict(raw.get("preprocess_cfg", {}))
    for key in ("mean", "std"):
        if key in preprocess:
            preprocess[key] = tuple(preprocess[key])
    top = _known(ModelConfig, {k: v for k, v in model_cfg.items() if k not in ("vision_cfg", "text_cfg")}, "model_cfg")
    return ModelConfig(
        embed_dim=int(top.get("embed_dim", 512)),
        vision=VisionConfig(**_known(VisionConfig, vision, "vision_cfg")),
        text=TextConfig(**_known(TextConfig, text, "text_cfg")),
        preprocess=PreprocessConfig(**_known(PreprocessConfig, preprocess, "preprocess_cfg")),
        init_logit_scale=float(top.get("init_logit_scale", math.log(1 / 0.07))),
        init_logit_bias=top.get("init_logit_bias"),
    )


def load_config_file(path: str | Path) -> ModelConfig:
    """Read and parse a JSON config file."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    return parse_config(raw)


def _registry_dir() -> Path:
    return Path(str(resources.files("biomedclip.model") / "configs"))


def list_models() -> list[str]:
    """Names of the built-in architectures (``biomedclip-base``, ``biomedclip-384``, ``small``, ``tiny``): random
    weights, for training; ``list_pretrained()`` in :mod:`biomedclip.model.pretrained` lists trained models."""
    return sorted(p.stem for p in _registry_dir().glob("*.json"))


def get_model_config(name: str) -> ModelConfig:
    """The built-in config called ``name``; raises ``KeyError`` listing the known names."""
    path = _registry_dir() / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return load_config_file(path)
