"""``biomedclip model ...``: list the registry, train a vocabulary, export a model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click


@click.group()
def model() -> None:
    """The BiomedCLIP model: registry, tokenizer training, export."""


@model.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list with each model's main sizes.")
def list_command(as_json: bool) -> None:
    """List the built-in model configs."""
    from biomedclip.model.config import get_model_config, list_models

    rows = []
    for name in list_models():
        cfg = get_model_config(name)
        rows.append(
            {
                "name": name,
                "image": f"{cfg.vision.timm_model_name} @ {cfg.vision.image_size}px",
                "text": cfg.text.hf_model_name,
                "embed_dim": cfg.embed_dim,
                "context_length": cfg.text.context_length,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(
            f"{row['name']:<16} image={row['image']:<34} embed_dim={row['embed_dim']:<4} "
            f"context={row['context_length']:<4} text={row['text']}"
        )


@model.command("train-tokenizer")
@click.option("--shards", multiple=True, required=True, help="Shard files, folders, globs or {a..b} ranges.")
@click.option("--vocab-size", default=30522, show_default=True, help="Target vocabulary size.")
@click.option("--min-frequency", default=2, show_default=True, help="Minimum count of a merged token.")
@click.option("--context-length", default=256, show_default=True, help="Context length stored with the tokenizer.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
def train_tokenizer_command(
    shards: tuple[str, ...], vocab_size: int, min_frequency: int, context_length: int, out: Path
) -> None:
    """Train an uncased WordPiece vocabulary on the captions (.txt members) of WebDataset shards."""
    from biomedclip.model.shards import iter_captions
    from biomedclip.model.tokenizer import train_wordpiece
    from biomedclip.shards import expand_shards

    start = time.perf_counter()
    try:
        paths = expand_shards(shards)
    except FileNotFoundError as err:
        raise click.ClickException(str(err)) from err
    counter = {"captions": 0}

    def counted():
        for text in iter_captions(paths):
            counter["captions"] += 1
            yield text

    try:
        tokenizer = train_wordpiece(counted(), vocab_size, min_frequency, context_length)
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    if counter["captions"] == 0:
        raise click.ClickException(f"no captions (.txt members) found in {len(paths)} shard(s)")
    tokenizer.save(out)
    summary = {
        "shards": len(paths),
        "captions": counter["captions"],
        "vocab_size": tokenizer.vocab_size,
        "context_length": context_length,
        "seconds": round(time.perf_counter() - start, 2),
    }
    (out / "train_tokenizer.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    click.echo(
        f"trained vocabulary of {summary['vocab_size']} tokens on {summary['captions']} captions from "
        f"{summary['shards']} shard(s) in {summary['seconds']} s -> {out}"
    )


@model.command("export")
@click.argument("model_name")
@click.option("--format", "fmt", type=click.Choice(["open_clip", "onnx"]), required=True, help="Export format.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
def export_command(model_name: str, fmt: str, out: Path) -> None:
    """Export MODEL_NAME (built-in name, hf-hub:, local-dir:, folder or weight file) to FORMAT in OUT."""
    from biomedclip.model.export import export_onnx, export_open_clip
    from biomedclip.model.factory import create_model, get_tokenizer

    start = time.perf_counter()
    try:
        net = create_model(model_name)
        tokenizer = get_tokenizer(model_name)
        (export_open_clip if fmt == "open_clip" else export_onnx)(net, tokenizer, out)
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from err
    files = sorted(p.name for p in out.iterdir())
    click.echo(f"exported {model_name} as {fmt} in {time.perf_counter() - start:.1f} s -> {out}: {', '.join(files)}")
