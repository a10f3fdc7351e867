"""Build the corpus: sources -> work batches (phase 1) -> dedup, split, shards, catalog, report (phase 2).

Phase 1: the driver lists the articles of every source, skips those with a final result in the work store,
and sends the rest in batches of ``BuildConfig.batch_articles`` to the engine's workers; each worker processes
its batch and writes the result into OUT itself (``batches.py``); only counts come back. A source that cannot
be listed completely stops the build (``SourceListingError``) before phase 2, so the previous output stays.

Phase 2 (``assemble.py``) is a deterministic function of the results of the articles listed in this run
(latest version per article key). It writes everything into ``OUT/.next/`` and, once complete (marker file
``COMPLETE``), moves it into place; a build killed during that move finishes it when rerun, so shards never
appear without their catalog. A rerun after a kill (even ``kill -9``) gives byte-identical shards and the same
catalog as an uninterrupted run; a later build over a grown source processes only the new articles.
See ``rows.py`` for the OUT layout and the figure row.

Panels (``BuildConfig.unit`` ``panel`` or ``both``): the phase-1 workers also split each accepted figure into
panels (``panel_rows.py``) and write them into the panel corpus's own work store, ``OUT/panels/work``. Phase 2 runs
twice, the same stages over each store: the panel corpus into ``OUT/panels/.next``, then the figures (whose report
counts the panels) into ``OUT/.next``; the figures are released first, then the panels (a rerun after a kill
between the two finishes the second). ``OUT/panels`` has the figure layout (shards, catalog, stats...), so
``OUT/shards/train-*.tar::OUT/panels/shards/train-*.tar`` mixes figures and panels. With ``unit`` ``figure``, the
figure outputs are byte-identical to those of a build before units existed, and a panel corpus left by an earlier
build in OUT is removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from biomedclip.corpus import assemble
from biomedclip.corpus.articles import UNITS, WorkConfig, article_key, article_name, read_article
from biomedclip.corpus.batches import WorkItem, WorkStore
from biomedclip.corpus.dedup import DedupConfig
from biomedclip.corpus.distributed import map_units, run_batches, stop_fork_server
from biomedclip.corpus.outdir import OutDir
from biomedclip.corpus.records import Article, Source, SourceListingError
from biomedclip.corpus.report import panel_counts
from biomedclip.corpus.split import SplitConfig
from biomedclip.durable import fsync_file, fsync_path
from biomedclip.errors import InputError

__all__ = ["BuildConfig", "BuildSummary", "Progress", "WorkConfig", "build"]

PANELS = "panels"
RELEASED = ("shards", "catalog", "catalog.parquet", "clusters.parquet", "stats.json", "report.md", "report",
            "build_config.json")  # fmt: skip


@dataclass(frozen=True)
class BuildConfig:
    """The whole build recipe; written to ``OUT/build_config.json``.

    Attributes:
        unit: figure; both: also OUT/panels, a sample per panel of a compound figure; panel: both, singles kept whole.
    """

    work: WorkConfig = field(default_factory=WorkConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    shard_size: int = 10_000
    batch_articles: int = 32  # articles per unit of phase-1 work (one tar + one Parquet file in OUT/work)
    unit: Literal["figure", "panel", "both"] = "figure"

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise InputError(f"unit must be one of {', '.join(UNITS)}, not {self.unit!r}")
        if self.work.unit != self.unit:
            object.__setattr__(self, "work", replace(self.work, unit=self.unit))


@dataclass
class Progress:
    """Running counts handed to the progress callback after each batch."""

    articles: int = 0
    skipped: int = 0
    figures: int = 0
    accepted: int = 0


@dataclass
class BuildSummary:
    """What a build did: counts, rejections by reason, time and throughput."""

    articles: int
    articles_processed: int
    articles_skipped: int
    figures: int
    accepted: int
    rejected: dict[str, int]
    splits: dict[str, int]
    shards: int
    seconds: float
    figures_per_s: float
    panels: dict[str, Any] | None = None  # the panel corpus's numbers (``report.panel_counts``), None without


LISTING = pa.schema([("name", pa.string()), ("article", pa.string()), ("version", pa.int64())])


class Listing:
    """The article versions the sources listed in this run, kept as Arrow record batches (about 40 bytes each),
    and a set of 64-bit hashes of their names to drop an article a second source lists again."""

    CHUNK = 50_000

    def __init__(self) -> None:
        self.chunks: list[pa.RecordBatch] = []
        self.rows: tuple[list[str], list[str], list[int]] = ([], [], [])
        self.seen: set[int] = set()

    def add(self, name: str, article: str, version: int) -> bool:
        """Record ``name``; False when it was listed already."""
        digest = name_hash(name)
        if digest in self.seen:
            return False
        self.seen.add(digest)
        for column, value in zip(self.rows, (name, article, version), strict=True):
            column.append(value)
        if len(self.rows[0]) >= self.CHUNK:
            self._flush()
        return True

    def _flush(self) -> None:
        names, articles, versions = self.rows
        if names:
            self.chunks.append(pa.record_batch([names, articles, versions], schema=LISTING))
        self.rows = ([], [], [])

    def table(self) -> pa.Table:
        self._flush()
        return pa.Table.from_batches(self.chunks, schema=LISTING)


def name_hash(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


@contextmanager
def _locked(out: OutDir) -> Iterator[None]:
    """Hold ``OUT/build.lock`` (local OUT) for the build; a second build into OUT is refused."""
    if out.is_s3:
        yield
        return
    assert out.root is not None
    out.root.mkdir(parents=True, exist_ok=True)
    with open(out.root / "build.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise InputError(f"another build is writing to {out} ({holder}); wait for it to finish") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _picklable(article: Article) -> bool:
    try:
        pickle.dumps(article)
    except Exception:  # a closure or an open stream: the reader prepares a payload instead
        return False
    return True


def _batches(
    sources: Iterable[Source], done: set[int], listing: Listing, progress: Progress, size: int
) -> Iterator[list[WorkItem]]:
    batch: list[WorkItem] = []
    for source in sources:
        ship: bool | None = None  # whether this source's articles can go to workers as they are
        try:
            for article in source.articles():
                name = article_name(article.meta, article.source)
                if not listing.add(name, article_key(article.meta, article.source), article.meta.version or 0):
                    continue
                if name_hash(name) in done and not article.error:
                    progress.skipped += 1
                    continue
                if ship is None:
                    ship = _picklable(article)
                batch.append(article if ship else read_article(article.loaded()))
                if len(batch) >= size:
                    yield batch
                    batch = []
        except SourceListingError:
            raise
        except Exception as exc:  # a source that fails mid-listing: the build stops, the old output stays
            name = getattr(source, "name", str(source))
            raise SourceListingError(f"cannot list source {name}: {type(exc).__name__}: {exc}") from exc
    if batch:
        yield batch


def _release(root: Path) -> None:
    """Move a complete ``root/.next`` into place (idempotent: a rerun after a kill here finishes the move).

    The released images (``work/<digest>/images``) move with the shards; then the work batch tars of that
    configuration are deleted (every image they held is now in a shard or a pack), and the released images of
    any other configuration, which pointed into the shards just replaced, are dropped with their tarless batches.
    """
    stage = root / ".next"
    if not (stage / "COMPLETE").is_file():
        return
    images = sorted(p.relative_to(stage) for p in stage.glob("work/*/images"))
    for name in [*RELEASED, *images]:
        if (stage / name).exists():
            target = root / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / name, target)
    (root / "clusters.json").unlink(missing_ok=True)  # written by older builds
    fsync_path(root)
    released = {(stage / name).parent.name for name in images}
    for work in sorted((root / "work").glob("*/batches")):
        if work.parent.name in released:
            for tar in sorted(work.rglob("*.tar")):
                tar.unlink()
        elif (work.parent / "images").is_dir():
            tars = {p.stem for p in work.rglob("*.tar")}
            for rows in sorted(work.rglob("*.parquet")):
                if rows.stem not in tars:
                    rows.unlink()
            shutil.rmtree(work.parent / "images")
    shutil.rmtree(stage)


def _upload(stage: Path, out: OutDir) -> None:
    """S3 OUT: upload the released files (shards and catalog parts before stats and report), drop stale ones."""
    names = [str(p.relative_to(stage)) for p in sorted(stage.rglob("*"))
             if p.is_file() and p.name != "COMPLETE" and not str(p.relative_to(stage)).startswith("work/")]  # fmt: skip
    for name in names:
        out.put_file(name, stage / name)
    for folder in ("shards", "catalog", "report"):
        for old in out.list(folder):
            if old not in names:
                out.delete(old)


def _new_stage(out: OutDir, scratch: Path) -> Path:
    """An empty folder for phase 2's output: ``OUT/.next`` (local OUT), else ``scratch``."""
    stage = out.root / ".next" if out.root is not None else scratch
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    return stage


def _seal(stage: Path, out: OutDir) -> None:
    """Local OUT: sync the staged files and mark the stage ``COMPLETE``, ready for ``_release``."""
    if out.root is None:
        return
    for path in stage.rglob("*"):  # shards and catalog parts are synced already: cheap
        if path.is_file():
            fsync_file(path)
    (stage / "COMPLETE").write_text("")
    fsync_file(stage / "COMPLETE")


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def build(
    sources: Iterable[Source],
    out: Path | str,
    config: BuildConfig = BuildConfig(),
    *,
    engine: str = "local",
    workers: int = 0,
    on_progress: Callable[[Progress], None] | None = None,
) -> BuildSummary:
    """Build the corpus from ``sources`` into ``out`` (a folder or ``s3://bucket/prefix``; see the module docstring)."""
    start = time.perf_counter()
    outdir = OutDir(out)
    panel_out = OutDir(f"{outdir.url}/{PANELS}")
    with _locked(outdir):
        if outdir.root is not None:  # a previous build killed while releasing its output: finish that first
            _release(outdir.root)
            _release(outdir.root / PANELS)
        digest = config.work.digest()
        panel_store = WorkStore.of_panels(panel_out, digest) if config.unit != "figure" else None
        store = WorkStore(outdir, digest, panels=panel_store)
        outdir.remove_scratch("work")  # files a killed worker was writing
        panel_out.remove_scratch("work")
        listing, progress = Listing(), Progress()
        done = {name_hash(name) for name in store.done_articles()}
        batches = _batches(sources, done, listing, progress, config.batch_articles)
        for counts in run_batches(engine, batches, config.work, store, workers):
            progress.articles += counts.articles
            progress.figures += counts.figures
            progress.accepted += counts.accepted
            if on_progress:
                on_progress(progress)
        if on_progress:  # skipped articles after the last processed one
            on_progress(progress)
        listed = listing.table()
        del listing, done, batches  # phase 1's per-article sets: phase 2 needs only the table
        if listed.num_rows == 0:  # nothing selected: leave OUT as it is (the CLI says why)
            seconds = time.perf_counter() - start
            return BuildSummary(0, progress.articles, progress.skipped, 0, 0, {}, {}, 0, seconds, 0.0)
        with tempfile.TemporaryDirectory(prefix="biomedclip-next-") as tmp:
            settings = assemble.Settings(config.dedup, config.split, config.shard_size, config.work.tokenizer_file)
            run = partial(map_units, engine=engine, workers=workers)
            panels = None
            try:
                if panel_store is not None:
                    rule = assemble.split_rule(store, listed, config.split, run)
                    panel_stage = _new_stage(panel_out, Path(tmp) / PANELS)
                    assemble.assemble(panel_stage, panel_store, listed, replace(settings, plots=False), run, rule=rule)
                    panels = panel_counts(sorted((panel_stage / "catalog").glob("part-*.parquet")))
                    _seal(panel_stage, panel_out)
                stage = _new_stage(outdir, Path(tmp) / "figures")
                stats = assemble.assemble(stage, store, listed, settings, run, panels=panels)
            finally:
                stop_fork_server()
            _write_json(stage / "build_config.json", asdict(config))
            _seal(stage, outdir)
            for done_stage, where in [(stage, outdir), *([(panel_stage, panel_out)] if panel_store else [])]:
                if where.root is not None:
                    _release(where.root)
                else:
                    _upload(done_stage, where)
            if panel_store is None and panel_out.root is not None and panel_out.root.exists():
                shutil.rmtree(panel_out.root)  # an earlier build's panels no longer match the figures
    seconds = time.perf_counter() - start
    return BuildSummary(
        articles=stats["articles"],
        articles_processed=progress.articles,
        articles_skipped=progress.skipped,
        figures=stats["stages"]["figures_found"],
        accepted=stats["accepted"],
        rejected=dict(sorted(stats["rejected_by_reason"].items(), key=lambda kv: (-kv[1], kv[0]))),
        splits={s: n for s, n in stats["splits"].items() if n},
        shards=stats["shards"],
        seconds=seconds,
        figures_per_s=progress.figures / seconds if seconds else 0.0,
        panels=stats.get("panels"),
    )
