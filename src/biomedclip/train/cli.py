"""``biomedclip train [-c FILE.yaml] [-m MODEL] [-s SHARDS] [-o OUT] [--key value ...]``: the console face of the
trainer."""

from __future__ import annotations

import os
from typing import Any

import click

from biomedclip.errors import InputError


def format_record(record: dict[str, Any]) -> str:
    """One console line for a metrics record."""
    if record.get("kind") == "warning":
        return f"warning: {record['message']}"
    if record.get("kind") == "eval":
        values = " ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float | int) and k != "step")
        return f"eval step {record['step']}: {values}"
    eta = int(record["eta_s"])
    return (
        f"step {record['step']} epoch {record['epoch']:.2f} | loss {record['loss']:.4f} | lr {record['lr']:.3e} | "
        f"logit scale {record['logit_scale']:.2f} | {record['samples_per_s']:.1f} samples/s | "
        f"data wait {record['data_wait_pct']:.1f}% | ETA {_clock(eta)}"
    )


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def summary_lines(result: Any, config: Any) -> list[str]:
    """The end-of-run summary: steps, time, last metrics, where the model is, the command to run next."""
    final = result.output_dir / "final"
    lines = [f"done: steps {result.start_step} -> {result.steps} in {_clock(result.seconds)}"]
    lines += [f"note: {note}" for note in result.notes]
    if result.last_metrics:
        last = result.last_metrics
        lines.append(f"last train step {last['step']}: loss {last['loss']:.4f}, logit scale {last['logit_scale']:.2f}")
    if result.last_eval:
        lines.append(format_record(result.last_eval).replace("eval step", "last eval step", 1))
    warnings = getattr(result, "warnings", [])
    lines += [f"warning: {message}" for message in warnings]
    if not warnings:
        lines.append("health: no collapse (loss at ln(batch), one predicted class) or divergence seen")
    lines.append(f"run folder: {result.output_dir} (config.yaml, metrics.jsonl, checkpoints/)")
    lines.append(f"model: {final} (open_clip layout; load it as local-dir:{final})")
    dataset = config.eval.zeroshot[0] if config.eval.zeroshot else "imagefolder:LABELLED_FOLDER"
    extra = f" --class-names {config.eval.class_names}" if config.eval.class_names else ""
    corpus = getattr(result, "corpus", None)
    extra += f" --train-catalog {corpus}" if corpus else ""
    lines.append(
        f"next: biomedclip eval zeroshot --model local-dir:{final} --dataset {dataset} "
        f"--prompts-from-run {result.output_dir}{extra} --out {result.output_dir / 'eval'}"
    )
    return lines


@click.command(
    "train",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": ["-h", "--help"]},
)
@click.option("-c", "--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="YAML config file.")
@click.option("-m", "--model", help="Model to train or fine-tune (= --model.name): a registry name, local-dir:PATH.")
@click.option("-s", "--shards", multiple=True, help="Training shard spec (= --data.train; repeatable).")
@click.option("-o", "--out", help="Run folder (= --run.output_dir).")
@click.option("--device", help="auto, cpu, cuda, cuda:N (= --run.device).")
@click.option("-w", "--workers", type=int, help="Loader workers per rank (= --data.workers).")
@click.option(
    "--class-names", type=click.Path(dir_okay=False), help="YAML class folder -> text (= --eval.class_names)."
)
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@click.pass_context
def train(ctx: click.Context, config_path: str | None, print_config: bool, **options: Any) -> None:
    """Train BiomedCLIP contrastively on WebDataset shards.

    Any config key can be overridden as --section.key VALUE (e.g. --optim.lr 1e-5 --eval.zeroshot imagefolder:DIR).
    Precedence: defaults < a preset named in the YAML < the YAML < --preset < --key VALUE; --print-config shows
    where each value came from.
    Run under torchrun for several GPUs or nodes: torchrun --nproc-per-node G -m biomedclip.train --config FILE.
    """
    from biomedclip.train.config import ConfigError, load_config_with_history, parse_overrides

    aliases = {
        "model": "model.name",
        "out": "run.output_dir",
        "device": "run.device",
        "workers": "data.workers",
        "class_names": "eval.class_names",
    }
    try:
        overrides = parse_overrides(list(ctx.args))
        overrides.update({key: options[name] for name, key in aliases.items() if options[name] is not None})
        if options["shards"]:
            overrides["data.train"] = "::".join(options["shards"])
        config, history = load_config_with_history(config_path, overrides)
    except ConfigError as exc:
        raise InputError(str(exc)) from exc
    from biomedclip.train.config import PRECEDENCE, annotated_yaml, preset_conflicts

    if print_config:
        click.echo(annotated_yaml(config, history), nl=False)
        return
    for line in preset_conflicts(history):
        click.echo(f"config: {line} ({PRECEDENCE})")
    if not config.data.train:
        raise InputError("set the training shards: -s SPEC (or data.train in the YAML)")
    from biomedclip.train.loop import train as run_training

    is_main = int(os.environ.get("RANK", "0")) == 0
    # A bad shard spec or unusable data (InputError) or an unreadable shard (RunError) is one line, see docs/CLI.md.
    result = run_training(config, on_log=lambda record: click.echo(format_record(record)))
    if is_main:
        for line in summary_lines(result, config):
            click.echo(line)
