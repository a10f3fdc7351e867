"""Training configuration: dataclasses with the paper's recipe as defaults, YAML loading, ``--key value`` overrides.

The paper (BiomedCLIP, open_clip on 16 A100s): AdamW β=(0.9, 0.98), eps 1e-6, peak lr 5e-4, weight decay 0.2,
2,000 warmup steps then cosine decay, 32 epochs, global batch 4k (16 x 256), bf16, gradient checkpointing,
a sharded ("local") contrastive loss; no patch dropout (the paper's hyper-parameter table lists none). Each value's
source is named in ``configs/paper.yaml``.
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
    patch_dropout: float = 0.0  # fraction of image patches dropped during training (FLIP-style); the paper: none
    compile: bool = False  # torch.compile the model
    # Tokens the text tower reads (0 = the model's own: 256 for BiomedCLIP). An untrained architecture grows its
    # position table to fit; a trained model needs one long enough (`biomedclip model extend-context`).
    context_length: int = 0


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
    # Steps in a row whose loss or gradient is NaN/inf that are skipped (no update); the next one stops the run.
    skip_nonfinite_steps: int = 3


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


PRECEDENCE = "defaults < a preset named in the YAML < the YAML < --preset < --key VALUE (last wins)"

# key -> the (source, value) pairs applied to it, in order; the last one is the value in force.
History = dict[str, list[tuple[str, Any]]]


def resolve_config(
    file_values: dict[str, tuple[Any, str]] | None = None, overrides: dict[str, Any] | None = None
) -> tuple[TrainConfig, History]:
    """Build a config and record where each value came from, in the order of :data:`PRECEDENCE`.

    A preset sits where it is named: one in the YAML (``preset: finetune``) is overridden by that YAML's own keys,
    one on the command line (``--preset finetune``) overrides the YAML and is overridden by ``--key VALUE``.

    Args:
        file_values: dotted key -> (value, the file that set it), as :func:`read_yaml_values` returns.
        overrides: dotted key -> value from the command line (``preset`` included).
    """
    file_values = dict(file_values or {})
    overrides = dict(overrides or {})
    file_preset = file_values.pop("preset", None)
    cli_preset = overrides.pop("preset", None)
    layers: list[tuple[dict[str, Any], dict[str, str]]] = []
    if file_preset is not None:
        name = _preset(file_preset[0])
        layers.append((PRESETS[name], dict.fromkeys(PRESETS[name], f"preset {name} (in {file_preset[1]})")))
    layers.append(({k: v for k, (v, _) in file_values.items()}, {k: src for k, (_, src) in file_values.items()}))
    if cli_preset is not None:
        name = _preset(cli_preset)
        layers.append((PRESETS[name], dict.fromkeys(PRESETS[name], f"preset {name} (--preset)")))
    layers.append((overrides, dict.fromkeys(overrides, "command line")))
    preset = _preset(cli_preset if cli_preset is not None else file_preset[0] if file_preset else "paper")
    config = TrainConfig(preset=preset)
    history: History = {}
    if file_preset is not None:
        history["preset"] = [(file_preset[1], _preset(file_preset[0]))]
    if cli_preset is not None:
        history.setdefault("preset", []).append(("command line", preset))
    for values, sources in layers:
        for key, value in values.items():
            _set(config, key, value)
            history.setdefault(key, []).append((sources[key], _get(config, key)))
    validate(config)
    return config, history


def _preset(name: Any) -> str:
    if str(name) not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return str(name)


def _get(config: TrainConfig, key: str) -> Any:
    target: Any = config
    for part in key.split("."):
        target = getattr(target, part)
    return target


def build_config(values: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Build a config from nested ``values`` (as a YAML file holds them) and dotted ``overrides``."""
    flat = {key: (value, "settings") for key, value in _flatten(values or {}).items()}
    return resolve_config(flat, overrides)[0]


def read_yaml_values(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, tuple[Any, str]]:
    """A YAML config as dotted key -> (value, file); ``base: OTHER.yaml`` (relative to the file) is read first
    and overridden."""
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
    merged = {} if base is None else read_yaml_values(path.parent / str(base), (*chain, path.resolve()))
    merged.update({key: (value, str(path)) for key, value in _flatten(values).items()})
    return merged


def load_config_with_history(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> tuple[TrainConfig, History]:
    """:func:`load_config`, plus where each value came from."""
    return resolve_config(read_yaml_values(Path(path)) if path is not None else {}, overrides)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Load a YAML config file (optional; it may name a ``base:`` file it extends) and apply dotted overrides."""
    return load_config_with_history(path, overrides)[0]


def annotated_yaml(config: TrainConfig, history: History) -> str:
    """The resolved config as YAML, each value commented with its source and the values it replaced."""
    lines = [f"# precedence: {PRECEDENCE}"]

    def walk(mapping: dict[str, Any], prefix: str, indent: str) -> None:
        for key, value in mapping.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                lines.append(f"{indent}{key}:")
                walk(value, dotted + ".", indent + "  ")
                continue
            steps = history.get(dotted, [])
            note = steps[-1][0] if steps else "default"
            replaced = [f"{_scalar(v)} from {src}" for src, v in reversed(steps[:-1])]
            if replaced:
                note += ", over " + ", over ".join(replaced)
            lines.append(f"{indent}{key}: {_scalar(value)}  # {note}")

    walk(config_to_dict(config), "", "")
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def preset_conflicts(history: History) -> list[str]:
    """One line per key where a ``--preset`` replaced a value the YAML set (what a user may not expect)."""
    lines = []
    for key, steps in history.items():
        source, value = steps[-1]
        if source.endswith("(--preset)"):
            for earlier, old in steps[:-1]:
                if not earlier.startswith("preset") and old != value:
                    lines.append(f"{source} sets {key} = {_scalar(value)} over {_scalar(old)} from {earlier}")
    return lines


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
        (config.optim.skip_nonfinite_steps >= 0, "optim.skip_nonfinite_steps must be >= 0"),
        (0.0 <= config.model.patch_dropout < 1.0, "model.patch_dropout must be in [0, 1)"),
        (
            config.model.context_length == 0 or config.model.context_length >= 2,
            "model.context_length must be 0 or >= 2",
        ),
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
