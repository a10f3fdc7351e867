"""The article-selection flags shared by ``corpus figures`` and ``corpus build``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def selection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--license``, ``--include-retracted``, ``--pmcids``, ``--limit`` and ``--endpoint-url`` to a command.

    The command receives them as ``selection`` (a :class:`~biomedclip.corpus.sources.Selection`) and
    ``endpoint_url``.
    """

    @functools.wraps(command)
    def run(*args: Any, license_class: str, include_retracted: bool, pmcids: Path | None, limit: int | None,
            **kwargs: Any) -> Any:  # fmt: skip
        from biomedclip.corpus.sources import Selection

        wanted = None
        if pmcids is not None:
            wanted = frozenset(line.strip().upper() for line in pmcids.read_text().splitlines() if line.strip())
        selection = Selection(license=license_class, include_retracted=include_retracted, pmcids=wanted, limit=limit)
        return command(*args, selection=selection, **kwargs)

    options = [
        click.option(
            "--license",
            "license_class",
            type=click.Choice(["all", "commercial", "noncommercial"]),
            default="all",
            show_default=True,
            help="License class of the articles kept (commercial = CC BY / CC0).",
        ),
        click.option("--include-retracted", is_flag=True, help="Keep retracted articles (dropped by default)."),
        click.option(
            "--pmcids",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help="File of PMCIDs (one per line) to keep.",
        ),
        click.option("--limit", type=click.IntRange(min=1), help="At most this many articles per source."),
        click.option(
            "--endpoint-url",
            envvar="BIOMEDCLIP_S3_ENDPOINT",
            help="S3-compatible endpoint for s3:// sources (default: AWS).",
        ),
    ]
    for option in reversed(options):
        run = option(run)
    return run
