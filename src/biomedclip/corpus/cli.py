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
