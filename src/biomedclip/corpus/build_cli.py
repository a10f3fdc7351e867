"""``biomedclip corpus build``: sources to WebDataset shards, catalog and report (registered in ``corpus.cli``).

Every setting of ``BuildConfig`` and of the sources' ``SourceLimits`` is an option (``cli_options``), or a key
of the ``--config`` file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from biomedclip.cli_options import workers_option
from biomedclip.corpus.build import BuildConfig
from biomedclip.corpus.cli_options import build_settings, default_workers, selection_options, settings_options
from biomedclip.corpus.sources.limits import SourceLimits
from biomedclip.errors import RunError

if TYPE_CHECKING:
    from biomedclip.corpus.sources import Selection

ENGINES = ("local", "ray")  # as in biomedclip.corpus.distributed, not imported here to keep the CLI light
SOURCE_SETTINGS = "source"


@click.command("build")
@click.option(
    "--source",
    "sources",
    multiple=True,
    required=True,
    help="s3://bucket[/prefix], a folder, a tarball or zip, a folder of them, or imagefolder:PATH (repeatable).",
)
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default="local",
    show_default=True,
    help="local worker processes, or Ray Data (RAY_ADDRESS selects a cluster).",
)
@workers_option(
    default=None,
    show_default="the CPUs this process may use",
    help="Worker processes (Ray: CPUs of a local Ray); 0 works in this process.",
)
@click.option(
    "--caption-template",
    default="{label}",
    show_default=True,
    help='Caption for imagefolder: sources, e.g. "a chest X-ray showing {label}".',
)
@click.option(
    "--class-names",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML class folder -> class text for imagefolder: captions (notumor: no tumor), as train and eval take.",
)
@click.option(
    "--split-ratios",
    default="0.7,0.1,0.2",
    show_default=True,
    help="TRAIN,VAL,TEST shares of the hash split of imagefolder: sources without split folders (the same rule "
    "and default as 'eval'); articles are split by --split.train/--split.val/--split.test.",
)
@click.option(
    "--s3-listing",
    type=click.Choice(["auto", "inventory", "prefixes"]),
    default="auto",
    show_default=True,
    help="How s3:// sources are listed: the bucket's daily inventory, its prefixes, or the inventory when present.",
)
@selection_options
@settings_options({"": BuildConfig(), SOURCE_SETTINGS: SourceLimits()})
def build(
    sources: tuple[str, ...],
    out: Path,
    engine: str,
    workers: int | None,
    caption_template: str,
    class_names: str | None,
    split_ratios: str,
    s3_listing: str,
    selection: Selection,
    endpoint_url: str | None,
    settings: dict[str, Any],
) -> None:
    """Build the figure-caption corpus: shards, catalog.parquet, stats.json and report.md under OUT.

    Resumable: rerun the same command after an interruption (even kill -9) to finish it; rerun it after
    adding articles to process only the new ones. Ends with exit 1 when no article is selected or no figure
    is accepted.
    """
    from tqdm import tqdm

    from biomedclip.classnames import load_class_names
    from biomedclip.corpus.build import build as run_build
    from biomedclip.corpus.sources import ImageFolderSource, open_source
    from biomedclip.labelled_folders import HashSplit

    config = build_settings(BuildConfig, {k: v for k, v in settings.items() if k != SOURCE_SETTINGS})
    limits = build_settings(SourceLimits, settings.get(SOURCE_SETTINGS, {}))
    opened = [
        open_source(
            spec,
            selection,
            endpoint_url=endpoint_url,
            caption_template=caption_template,
            limits=limits,
            s3_listing=s3_listing,
            imagefolder_split=HashSplit.parse(split_ratios),
            class_names=load_class_names(class_names) if class_names else None,
            defer_packages=True,  # package files are read by the workers, not while listing
        )
        for spec in sources
    ]
    for source in opened:
        if isinstance(source, ImageFolderSource):  # the split, stated with counts before any work
            click.echo(source.describe())
    workers = default_workers() if workers is None else workers
    # disable=None: a progress bar on a terminal only; piped logs get the summary lines, not "\r" redraws
    with tqdm(desc="articles", unit="art", dynamic_ncols=True, disable=None) as bar:

        def on_progress(progress) -> None:
            bar.update(progress.articles + progress.skipped - bar.n)
            bar.set_postfix(figures=progress.figures, accepted=progress.accepted, skipped=progress.skipped)

        summary = run_build(opened, out, config, engine=engine, workers=workers, on_progress=on_progress)
    for warning in summary.warnings:
        click.echo(f"warning: {warning}")
    click.echo(f"articles: {summary.articles} ({summary.articles_processed} processed, "
               f"{summary.articles_skipped} already done)")  # fmt: skip
    click.echo(f"figures: {summary.figures}, accepted: {summary.accepted}, splits: {summary.splits}")
    for reason, count in summary.rejected.items():
        click.echo(f"  rejected {reason}: {count}")
    click.echo(f"time: {summary.seconds:.1f} s, {summary.figures_per_s:.1f} figures/s processed; "
               f"{summary.shards} shards in {out / 'shards'}")  # fmt: skip
    if summary.panels is not None:
        panels = summary.panels
        click.echo(f"panels: {panels['compound_figures']} compound figures, {panels['panels']} panels "
                   f"({panels['labelled_panels']} labelled, {panels['aligned_subcaptions']} with their subcaption), "
                   f"{panels['accepted']} accepted in {out / 'panels' / 'shards'}")  # fmt: skip
    check_nonempty(summary.articles, summary.accepted, summary.rejected, sources, selection)


def check_nonempty(
    articles: int, accepted: int, rejected: dict[str, int], sources: tuple[str, ...], selection: Selection
) -> None:
    """Raise ``RunError`` when no article was selected or no figure accepted, saying what to look at."""
    where = ", ".join(sources)
    if articles == 0:
        chosen = _describe(selection)
        raise RunError(f"no article selected from {where}" + (f" by {chosen}" if chosen else ""))
    if accepted == 0:
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(rejected.items(), key=_by_count)[:3])
        hint = ""
        if rejected and max(rejected, key=rejected.get) in ("missing_image", "missing_media", "not_referenced"):
            hint = "; JATS files need their images beside them (an extracted package folder, a tarball or a zip)"
        raise RunError(f"no figure accepted from {articles} article(s) of {where} (rejected: {reasons}){hint}")


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def _describe(selection: Selection) -> str:
    parts = []
    if selection.pmcids is not None:
        parts.append(f"--pmcids ({len(selection.pmcids)} PMCIDs)")
    if selection.license != "all":
        parts.append(f"--license {selection.license}")
    return " and ".join(parts)
