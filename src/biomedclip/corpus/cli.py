"""``biomedclip corpus``: turn PMC articles into figure records (``figures``) and a clean corpus (``build``)."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import click

from biomedclip.corpus.cli_options import selection_options

if TYPE_CHECKING:
    from biomedclip.corpus.sources import Selection


@click.group()
def corpus() -> None:
    """Build the PMC figure-caption corpus."""


@corpus.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--out",
    "-o",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="JSON Lines file, one figure record per line (rejected ones too, with status and reason).",
)
@selection_options
def figures(
    inputs: tuple[str, ...],
    out_path: Path,
    selection: Selection,
    endpoint_url: str | None,
) -> None:
    """Figure records from XML/nxml files, folders, tarballs, zips or s3:// prefixes, without image work.

    Each line holds at least source (relative to the input folder, or the S3 key), pmcid, fig_id, label, caption
    and graphic. Ends with exit 1 when no
    article is selected or no figure has both a caption and a graphic.
    """
    from biomedclip.corpus.build_cli import check_nonempty
    from biomedclip.corpus.jats import figures_of
    from biomedclip.corpus.records import strip_root
    from biomedclip.corpus.sources import open_source, relative_to_root, source_root

    sources = [open_source(spec, selection, endpoint_url=endpoint_url) for spec in inputs]
    start = time.monotonic()
    articles, reasons = 0, Counter()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", encoding="utf-8") as out:
        for source in sources:
            root = source_root(source)
            for article in source.articles():
                articles += 1
                for record in figures_of(relative_to_root(article, root)):
                    record.source, record.detail = strip_root(record.source, root), strip_root(record.detail, root)
                    record.reason = strip_root(record.reason, root)
                    reasons[record.reason.split(":")[0] if record.reason else "accepted"] += 1
                    out.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
    elapsed = time.monotonic() - start
    accepted = reasons.pop("accepted", 0)
    lines = [f"{articles} articles, {accepted} figures accepted, {sum(reasons.values())} rejected in {elapsed:.1f}s"]
    lines += [f"  rejected {reason}: {count}" for reason, count in sorted(reasons.items())]
    click.echo("\n".join(lines), file=sys.stderr)
    check_nonempty(articles, accepted, dict(reasons), inputs, selection)


from biomedclip.corpus.build_cli import build  # noqa: E402 - the build command lives beside its pipeline

corpus.add_command(build)


@corpus.command()
@click.option(
    "--corpus",
    "corpus_path",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="A corpus OUT folder (its catalog), OUT/catalog or a catalog Parquet file.",
)
@click.option("--dataset", "-d", "spec", required=True, help="An evaluation dataset, as 'eval --dataset' takes it.")
@click.option(
    "--split",
    default="all",
    show_default=True,
    help="Evaluation split compared (train, val, test or all); 'all' finds every image of the benchmark.",
)
@click.option(
    "--out",
    "-o",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help='JSON Lines: one {"key", "eval", "kind": "exact"|"near", "distance"} per match.',
)
@click.option("--max-distance", type=click.IntRange(0, 16), default=10, show_default=True,
              help="Perceptual-hash bits within which a corpus figure is a candidate.")  # fmt: skip
def overlap(corpus_path: Path, spec: str, split: str, out_path: Path, max_distance: int) -> None:
    """Which images of an evaluation dataset are in the corpus: exact (same pixels) or near (resized,
    re-compressed, cropped, grey or padded copies, confirmed on pixels).

    Pass the rows to 'train --data.exclude OUT.jsonl' to train without the benchmark's images.
    """
    from biomedclip.corpus.overlap import OverlapConfig, catalog_batches, eval_prints, find_overlap
    from biomedclip.evaluate.datasets import load_dataset
    from biomedclip.evaluate.leakage import catalog_path

    catalog = catalog_path(corpus_path)
    data = load_dataset(spec, split)
    start = time.monotonic()
    prints = eval_prints(_eval_items(data))
    result = find_overlap(prints, catalog_batches(catalog), OverlapConfig(max_distance=max_distance))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", encoding="utf-8") as out:
        for row in result.rows:
            out.write(json.dumps(row) + "\n")
    click.echo(
        f"overlap: {result.found()} of {result.evaluated} evaluation images found in the corpus "
        f"(exact {result.found('exact')}, near {result.found('near')}); {len(result.rows)} matches with "
        f"{len({r['key'] for r in result.rows})} corpus figures of {result.corpus_figures} compared"
        + (f", {result.unchecked} without fingerprints (rebuild to check them)" if result.unchecked else "")
        + f"; {time.monotonic() - start:.1f} s -> {out_path}"
    )


def _eval_items(data):
    """``(id, image)`` of every image of a dataset (a VQA set's distinct images)."""
    if hasattr(data, "image_loader"):
        for key in dict.fromkeys(data.image_keys):
            yield key, data.image_loader(key)
        return
    for i, key in enumerate(data.keys):
        yield key, data[i]
