"""``biomedclip model ...``: list trained checkpoints and architectures, train a vocabulary, export a model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from biomedclip.cli_options import MODEL_HELP, loading_model, model_option, user_errors
from biomedclip.errors import RunError


@click.group()
def model() -> None:
    """The BiomedCLIP model: trained checkpoints and architectures, tokenizer training, export."""


@model.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list with each model's main sizes.")
def list_command(as_json: bool) -> None:
    """List trained checkpoints (for inference) and the built-in architectures (random weights, for training)."""
    from biomedclip.model.config import RELEASED_CHECKPOINT, get_model_config, list_models

    def row(name: str, architecture: str, trained: bool) -> dict:
        cfg = get_model_config(architecture)
        return {
            "name": name,
            "trained": trained,
            "image": f"{cfg.vision.timm_model_name} @ {cfg.vision.image_size}px",
            "text": cfg.text.hf_model_name,
            "embed_dim": cfg.embed_dim,
            "context_length": cfg.text.context_length,
        }

    # The released checkpoint is the biomedclip-base architecture with the paper's trained weights.
    rows = [row(RELEASED_CHECKPOINT, "biomedclip-base", True), *(row(n, n, False) for n in list_models())]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for trained, title in ((True, "Trained checkpoints (inference):"), (False, "Untrained architectures (training):")):
        click.echo(title)
        for entry in (r for r in rows if r["trained"] is trained):
            click.echo(
                f"  {entry['name']:<16} image={entry['image']:<34} embed_dim={entry['embed_dim']:<4} "
                f"context={entry['context_length']:<4} text={entry['text']}"
            )


@model.command("train-tokenizer")
@click.option("--shards", "-s", multiple=True, required=True, help="Shard spec: files, folders, globs, {a..b} ranges.")
@click.option("--vocab-size", default=30522, show_default=True, help="Target vocabulary size.")
@click.option("--min-frequency", default=2, show_default=True, help="Minimum count of a merged token.")
@click.option("--context-length", default=256, show_default=True, help="Context length stored with the tokenizer.")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
def train_tokenizer_command(
    shards: tuple[str, ...], vocab_size: int, min_frequency: int, context_length: int, out: Path
) -> None:
    """Train an uncased WordPiece vocabulary on the captions (.txt members) of WebDataset shards."""
    from biomedclip.model.shards import iter_captions
    from biomedclip.model.tokenizer import train_wordpiece
    from biomedclip.shards import expand_shards

    start = time.perf_counter()
    paths = expand_shards(shards)
    counter = {"captions": 0}

    def counted():
        for text in iter_captions(paths):
            counter["captions"] += 1
            yield text

    with user_errors():  # a ValueError of the trainer: exit 1
        tokenizer = train_wordpiece(counted(), vocab_size, min_frequency, context_length)
    if counter["captions"] == 0:
        raise RunError(f"no captions (.txt members) found in {len(paths)} shard(s)")
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
        f"{summary['shards']} shard(s) in {summary['seconds']} s -> {out}\n"
        f"next: set text_cfg.hf_tokenizer_name to {out} in a model config, or pass it to get_tokenizer()"
    )


@model.command("extend-context")
@model_option(required=True, show_default=False, help=MODEL_HELP)
@click.option(
    "--context-length", type=click.IntRange(min=2), required=True, help="Tokens the text tower reads, e.g. 512."
)
@click.option(
    "--method",
    type=click.Choice(["copy", "interpolate"]),
    default="copy",
    show_default=True,
    help="How new position embeddings are made past the tower's table: copies of its rows (short texts keep "
    "their embeddings) or a linear resampling of the whole table.",
)
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
def extend_context_command(model: str, context_length: int, method: str, out: Path) -> None:
    """Write a copy of a model that reads longer captions, as an open_clip-compatible folder.

    Fine-tune it on long captions (configs/paper-long.yaml with model.name local-dir:OUT) before relying on it.
    """
    from biomedclip.model.checkpoint import save_pretrained
    from biomedclip.model.context import extend_context
    from biomedclip.model.factory import create_model, get_tokenizer

    with loading_model(model):
        net = create_model(model)
        tokenizer = get_tokenizer(model, context_length=context_length)
    before = net.context_length
    table = net.text.transformer.config.max_position_embeddings
    save_pretrained(extend_context(net, context_length, method), tokenizer, out)
    grown = (
        f"position table grown from {table} to {context_length} rows ({method})"
        if context_length > table
        else (f"position table of {table} rows kept")
    )
    click.echo(f"extended {model} from {before} to {context_length} tokens, {grown} -> {out}")
    code = "import open_clip; open_clip.create_model_and_transforms('local-dir:.')"
    click.echo(f'open_clip (offline): cd {out} && python -c "{code}"')


@model.command("export")
@model_option(required=True, show_default=False, help=MODEL_HELP)
@click.option(
    "--format", "fmt", type=click.Choice(["open_clip", "onnx", "transformers"]), required=True, help="Export format."
)
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
def export_command(model: str, fmt: str, out: Path) -> None:
    """Export a model as a self-contained open_clip folder, as ONNX image and text encoders, or as transformers
    models (``vision/``: ViTModel + image processor, ``text/``: ELECTRA classes holding the BERT tower + tokenizer).

    The open_clip folder carries the text tower's config and tokenizer (and timm's config for small image
    trunks): open_clip 3.x loads it offline from any working directory, as ``local-dir:OUT``. Exporting a
    moved bundle onto itself (``-m local-dir:DIR -o DIR``) makes open_clip follow it again.
    """
    from biomedclip.model.export import export_onnx, export_open_clip
    from biomedclip.model.export_transformers import export_transformers
    from biomedclip.model.factory import create_model, get_tokenizer

    start = time.perf_counter()
    with loading_model(model):
        net = create_model(model)
        tokenizer = get_tokenizer(model)
    {"open_clip": export_open_clip, "onnx": export_onnx, "transformers": export_transformers}[fmt](net, tokenizer, out)
    files = sorted(p.name for p in out.iterdir())
    click.echo(f"exported {model} as {fmt} in {time.perf_counter() - start:.1f} s -> {out}: {', '.join(files)}")
    if fmt == "open_clip":
        code = f"import open_clip; open_clip.create_model_and_transforms('local-dir:{out.resolve()}')"
        click.echo(f'open_clip (offline, from any folder): python -c "{code}"')
    elif fmt == "transformers":
        click.echo(
            f"transformers (offline): AutoModel.from_pretrained('{out / 'vision'}') -> pooler_output = image "
            f"embedding; AutoModelForSequenceClassification.from_pretrained('{out / 'text'}') -> logits = text "
            "embedding"
        )
