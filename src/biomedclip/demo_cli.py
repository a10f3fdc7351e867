"""``biomedclip demo``: the whole pipeline on the bundled sample (see :mod:`biomedclip.demo`)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from biomedclip.cli_options import workers_option


@click.command()
@click.option("--sample", type=click.Path(exists=True, file_okay=False, path_type=Path), default="data/sample",
              show_default=True, help="The bundled sample folder.")  # fmt: skip
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default="runs/demo", show_default=True,
              help="Run folder.")  # fmt: skip
@click.option("--steps", type=click.IntRange(min=1), default=300, show_default=True, help="Training steps.")
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True)
@workers_option(default=2, help="Corpus worker processes; 0 works in this process.")
def demo(sample: Path, out: Path, steps: int, batch_size: int, workers: int) -> None:
    """Corpus -> train -> evaluate -> report -> search index on the bundled real sample, on the CPU."""
    from biomedclip.demo import DemoConfig, run_demo

    start = time.perf_counter()

    def log(message: str) -> None:
        click.echo(f"[{time.perf_counter() - start:6.1f} s] {message}")

    config = DemoConfig(sample=sample, out=out, steps=steps, batch_size=batch_size, workers=workers)
    report = run_demo(config, log)
    log(f"report: {report}")
    click.echo(f"Start the search page with: make serve   (or: biomedclip serve --model "
               f"local-dir:{out / 'train' / 'final'} --index {out / 'index'})")  # fmt: skip
