"""``biomedclip corpus build``: sources to WebDataset shards, catalog and report (registered in ``corpus.cli``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from biomedclip.corpus.cli_options import selection_options

if TYPE_CHECKING:
    from biomedclip.corpus.sources import Selection

ENGINES = ("local", "ray")  # as in biomedclip.corpus.distributed, not imported here to keep the CLI light


@click.command("build")
@click.option(
    "--source",
    "sources",
    multiple=True,
    required=True,
    help="s3://bucket[/prefix], a folder, a tarball, a folder of tarballs or imagefolder:PATH (repeatable).",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default="local",
    show_default=True,
    help="local worker processes, or Ray Data (RAY_ADDRESS selects a cluster).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=os.cpu_count() or 1,
    show_default=True,
    help="Worker processes (Ray: CPUs of a local Ray); 0 works in this process.",
)
@click.option(
    "--caption-template",
    default="{label}",
    show_default=True,
    help='Caption for imagefolder: sources, e.g. "a chest X-ray showing {label}".',
)
@selection_options
@click.option(
    "--max-short-side",
    type=click.IntRange(min=16),
    default=512,
    show_default=True,
    help="Resize images so the shorter side is at most this.",
)
@click.option("--shard-size", type=click.IntRange(min=1), default=10_000, show_default=True, help="Samples per shard.")
@click.option(
    "--tokenizer-file",
    type=click.Path(dir_okay=False, exists=True),
    help="tokenizer.json for the report's caption token counts (default: bundled BERT WordPiece).",
)
def build(
    sources: tuple[str, ...],
    out: Path,
    engine: str,
    workers: int,
    caption_template: str,
    selection: Selection,
    endpoint_url: str | None,
    max_short_side: int,
    shard_size: int,
    tokenizer_file: str | None,
) -> None:
    """Build the figure-caption corpus: shards, catalog.parquet, stats.json and report.md under OUT.

    Resumable: rerun the same command after an interruption (even kill -9) to finish it; rerun it after
    adding articles to process only the new ones.
    """
    from tqdm import tqdm

    from biomedclip.corpus.articles import WorkConfig
    from biomedclip.corpus.build import BuildConfig
    from biomedclip.corpus.build import build as run_build
    from biomedclip.corpus.images import ImageConfig
    from biomedclip.corpus.sources import open_source

    opened = []
    for spec in sources:
        try:
            opened.append(open_source(spec, selection, endpoint_url=endpoint_url, caption_template=caption_template))
        except (ValueError, OSError) as exc:
            raise click.BadParameter(str(exc), param_hint=f"--source {spec}") from exc
    config = BuildConfig(
        work=WorkConfig(image=ImageConfig(max_short_side=max_short_side), tokenizer_file=tokenizer_file),
        shard_size=shard_size,
    )
    with tqdm(desc="articles", unit="art", dynamic_ncols=True) as bar:

        def on_progress(progress) -> None:
            bar.update(progress.articles + progress.skipped - bar.n)
            bar.set_postfix(figures=progress.figures, accepted=progress.accepted, skipped=progress.skipped)

        summary = run_build(opened, out, config, engine=engine, workers=workers, on_progress=on_progress)
    click.echo(f"articles: {summary.articles} ({summary.articles_processed} processed, "
               f"{summary.articles_skipped} already done)")  # fmt: skip
    click.echo(f"figures: {summary.figures}, accepted: {summary.accepted}, splits: {summary.splits}")
    for reason, count in summary.rejected.items():
        click.echo(f"  rejected {reason}: {count}")
    click.echo(f"time: {summary.seconds:.1f} s, {summary.figures_per_s:.1f} figures/s processed; "
               f"{summary.shards} shards in {out / 'shards'}")  # fmt: skip
