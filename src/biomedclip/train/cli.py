"""``biomedclip train --config FILE.yaml [--key value ...]``: the console face of the trainer."""

from __future__ import annotations

import os
from typing import Any

import click


def format_record(record: dict[str, Any]) -> str:
    """One console line for a metrics record."""
    if record.get("kind") == "eval":
        values = " ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float))
        return f"eval step {record['step']}: {values}"
    eta = int(record["eta_s"])
    return (
        f"step {record['step']} epoch {record['epoch']:.2f} | loss {record['loss']:.4f} | lr {record['lr']:.3e} | "
        f"logit scale {record['logit_scale']:.2f} | {record['samples_per_s']:.1f} samples/s | "
        f"data wait {record['data_wait_pct']:.1f}% | ETA {eta // 3600}:{eta % 3600 // 60:02d}:{eta % 60:02d}"
    )


@click.command(
    "train",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": ["-h", "--help"]},
)
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="YAML config file.")
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@click.pass_context
def train(ctx: click.Context, config_path: str | None, print_config: bool) -> None:
    """Train BiomedCLIP contrastively on WebDataset shards.

    Any config key can be overridden as --section.key VALUE (e.g. --optim.lr 1e-5 --data.train 'shards/train-*.tar').
    Run under torchrun for several GPUs or nodes: torchrun --nproc-per-node G -m biomedclip.train --config FILE.
    """
    from biomedclip.train.config import ConfigError, load_config, parse_overrides

    try:
        config = load_config(config_path, parse_overrides(list(ctx.args)))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    if print_config:
        import yaml

        from biomedclip.train.config import config_to_dict

        click.echo(yaml.safe_dump(config_to_dict(config), sort_keys=False), nl=False)
        return
    if not config.data.train:
        raise click.UsageError("set data.train (in the YAML or as --data.train PATTERN)")
    from biomedclip.train.data import DataError
    from biomedclip.train.loop import train as run_training

    is_main = int(os.environ.get("RANK", "0")) == 0
    try:
        result = run_training(config, on_log=lambda record: click.echo(format_record(record)))
    except (DataError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if is_main:
        click.echo(
            f"done: steps {result.start_step} -> {result.steps}; run folder {result.output_dir} "
            f"(config.yaml, metrics.jsonl, checkpoints/, final/)"
        )
