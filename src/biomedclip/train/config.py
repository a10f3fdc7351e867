"""Training configuration: dataclasses with the paper's recipe as defaults, YAML loading, ``--key value`` overrides.

The paper (BiomedCLIP, open_clip on 16 A100s): AdamW β=(0.9, 0.98), eps 1e-6, peak lr 5e-4, weight decay 0.2,
2,000 warmup steps then cosine decay, 32 epochs, global batch 4k (16 x 256), bf16, gradient checkpointing,
a sharded ("local") contrastive loss and patch dropout.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from biomedclip.shards import IMAGE_EXTENSIONS


@dataclass
class DataConfig:
    """Where the WebDataset shards are and how they are streamed."""

    train: str = ""  # shard spec: paths, brace patterns, globs, s3:// or http(s):// URLs; several joined by "::"
    val: str = ""  # the same for the validation split ("" = no validation)
    train_num_samples: int | None = None  # samples per epoch; counted from local shards when unset
    val_num_samples: int | None = None  # cap on validation samples (None = the whole split)
    resampled: bool = False  # draw shards with replacement per worker instead of splitting them
    shuffle_buffer: int = 5000  # samples held in each worker's shuffle buffer
    workers: int = 4  # DataLoader workers per rank
    image_key: str = ";".join(IMAGE_EXTENSIONS)  # tar member extensions tried in order for the image
    text_key: str = "txt"
    bad_shards: str = "fail"  # a shard that cannot be read: "fail" stops the run, "skip" warns and goes on
    exclude: str = ""  # JSON lines with a "key" per sample to leave out ('corpus overlap' rows): excluded_samples


@dataclass
class ModelConfig:
    """Which model is trained and how."""

    name: str = "biomedclip-base"  # any loadable model string (config name, local-dir:PATH, plain path)
    # Tower initialisation for a registry architecture ("" = random weights). The paper starts from PubMedBERT
    # and an ImageNet ViT-B/16; see biomedclip.train.init for the accepted forms.
    pretrained_text: str = ""  # a local HF BERT folder, or a hub name such as ORG/NAME
    pretrained_image: str = ""  # a timm weight file (.safetensors/.pth/.bin), a timm model name, or hf-hub:ORG/NAME
    lock_image: bool = False  # freeze the image tower (fine-tuning)
    lock_text: bool = False  # freeze the text tower (fine-tuning)
    grad_checkpointing: bool = True
    patch_dropout: float = 0.5  # fraction of image patches dropped during training (FLIP-style)
    compile: bool = False  # torch.compile the model


@dataclass
class OptimConfig:
    """Optimiser and schedule."""

    lr: float = 5e-4
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    weight_decay: float = 0.2  # not applied to gains, biases and the temperature
    warmup_steps: int = 2000
    epochs: int = 32
    batch_size: int = 256  # per rank; the paper's global batch 4096 is 16 ranks x 256
    grad_clip: float | None = None  # max gradient norm (None = no clipping)
    max_steps: int | None = None  # stop early after this many steps (the schedule still spans all epochs)


@dataclass
class LossConfig:
    """The CLIP contrastive loss."""

    local_loss: bool = True  # each rank scores its own rows against all columns (the paper's sharded loss)
    gather_with_grad: bool = True  # all-gather features with gradient (needed for the exact global gradient)
    max_logit_scale: float = 100.0
    # true: items of a batch whose captions are identical (same token ids) are not negatives of each other: each
    # keeps its own pair as the positive and the duplicates leave the softmax (see biomedclip.train.loss); identical
    # to open_clip's loss when every caption differs. Off by default: on a templated PneumoniaMNIST corpus (2
    # captions) the standard loss lifted zero-shot accuracy in 150 steps and the masked one did not.
    mask_duplicate_captions: bool = False


@dataclass
class EvalConfig:
    """In-training evaluation (needs ``biomedclip.evaluate``)."""

    every: int = 0  # evaluate every this many steps (0 = only at the end when anything is configured)
    retrieval: bool = True  # image-text retrieval R@1/5/10 on the val split
    zeroshot: list[str] = field(default_factory=list)  # labelled dataset specs, as `biomedclip eval` takes them
    zeroshot_split: str = "test"  # the split of each zero-shot dataset that is scored
    class_names: str = ""  # YAML mapping class folder -> class text, used in the zero-shot prompts
    prompts: str = ""  # "" = the dataset's prompts (paper or generic), "train" = the training captions' template,
    # or a prompts YAML ({classnames: [...], templates: [...]})
    batch_size: int = 64


@dataclass
class RunConfig:
    """Output, precision, checkpointing and logging."""

    output_dir: str = "runs/biomedclip"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "bf16"  # bf16 | fp16 | fp32 (autocast applies on GPU; the CPU always trains in fp32)
    checkpoint_every: int = 1000  # steps
    keep_checkpoints: int = 2  # most recent step checkpoints kept on disk
    log_every: int = 50  # steps
    tensorboard: bool = True
    resume: str = "auto"  # auto (latest checkpoint of output_dir if any) | none | PATH of a checkpoint


@dataclass
class TrainConfig:
    """Everything a training run needs; ``preset`` names a set of overrides applied before the YAML values."""

    preset: str = "paper"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # Fine-tuning the released model on a small corpus without collapse: low lr, short warmup, light decay,
    # no patch dropout, and a temperature that starts where the released model left it.
    "finetune": {
        "optim.lr": 1e-5,
        "optim.warmup_steps": 100,
        "optim.weight_decay": 0.1,
        "optim.epochs": 10,
        "model.patch_dropout": 0.0,
        "model.grad_checkpointing": False,
    },
}


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert ``value`` to the field's annotated type, or raise ConfigError."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_type,) = typing.get_args(annotation)
        return [_coerce(v, item_type, key) for v in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int | str | float):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            number = float(value)
        except ValueError as exc:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from exc
        if number != int(number):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(number)
    if annotation is float:
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{key}: expected a number, got {value!r}") from exc
    if annotation is str:
        if isinstance(value, dict | list):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return "" if value is None else str(value)
    raise ConfigError(f"{key}: unsupported field type {annotation!r}")


def _set(config: TrainConfig, key: str, value: Any) -> None:
    """Set dotted ``key`` (e.g. ``optim.lr``) on ``config``, coercing ``value`` to the field's type."""
    parts = key.split(".")
    target: Any = config
    for part in parts[:-1]:
        if not dataclasses.is_dataclass(target) or part not in _field_types(type(target)):
            raise ConfigError(f"unknown config section {key!r}")
        target = getattr(target, part)
    name = parts[-1]
    hints = _field_types(type(target)) if dataclasses.is_dataclass(target) else {}
    if name not in hints or dataclasses.is_dataclass(hints[name]):
        raise ConfigError(f"unknown config key {key!r}")
    setattr(target, name, _coerce(value, hints[name], key))


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def build_config(values: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Build a config: defaults, then the preset, then nested ``values`` (YAML), then dotted ``overrides``."""
    flat = _flatten(values or {})
    flat.update(overrides or {})
    preset = str(flat.pop("preset", "paper"))
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    config = TrainConfig(preset=preset)
    for key, value in {**PRESETS[preset], **flat}.items():
        _set(config, key, value)
    validate(config)
    return config


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config as nested values; ``base: OTHER.yaml`` (relative to the file) is read first and overridden."""
    if path.resolve() in chain:
        raise ConfigError(f"{path}: base configs form a loop")
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    values = loaded or {}
    base = values.pop("base", None)
    if base is None:
        return values
    merged = _flatten(_read_yaml(path.parent / str(base), (*chain, path.resolve())))
    merged.update(_flatten(values))
    return merged


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Load a YAML config file (optional; it may name a ``base:`` file it extends) and apply dotted overrides."""
    values = _read_yaml(Path(path)) if path is not None else {}
    return build_config(values, overrides)


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Parse ``--key value`` / ``--key=value`` pairs; values are read as YAML scalars (``1e-4``, ``true``)."""
    overrides: dict[str, Any] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"expected --key value, got {arg!r}")
        if "=" in arg:
            key, raw = arg[2:].split("=", 1)
            index += 1
        else:
            if index + 1 >= len(args):
                raise ConfigError(f"{arg} needs a value")
            key, raw = arg[2:], args[index + 1]
            index += 2
        try:
            overrides[key.replace("-", "_")] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            overrides[key.replace("-", "_")] = raw
    return overrides


def validate(config: TrainConfig) -> None:
    """Reject values that cannot work, with a message that names the key."""
    checks = [
        (config.optim.batch_size >= 1, "optim.batch_size must be >= 1"),
        (config.optim.epochs >= 1, "optim.epochs must be >= 1"),
        (config.optim.lr > 0, "optim.lr must be > 0"),
        (config.optim.warmup_steps >= 0, "optim.warmup_steps must be >= 0"),
        (0.0 <= config.model.patch_dropout < 1.0, "model.patch_dropout must be in [0, 1)"),
        (config.run.precision in ("bf16", "fp16", "fp32"), "run.precision must be bf16, fp16 or fp32"),
        (config.run.checkpoint_every >= 1, "run.checkpoint_every must be >= 1"),
        (config.run.log_every >= 1, "run.log_every must be >= 1"),
        (config.data.workers >= 0, "data.workers must be >= 0"),
        (config.data.shuffle_buffer >= 1, "data.shuffle_buffer must be >= 1"),
        (config.data.bad_shards in ("fail", "skip"), "data.bad_shards must be fail or skip"),
        (config.loss.max_logit_scale > 0, "loss.max_logit_scale must be > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """The resolved config as plain data (written beside every run)."""
    return dataclasses.asdict(config)


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
