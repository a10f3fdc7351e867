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

import errno
import fcntl
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from biomedclip.corpus import assemble
from biomedclip.corpus.articles import UNITS, WorkConfig, article_key, article_name, read_article
from biomedclip.corpus.batches import DamagedWork, WorkItem, WorkStore
from biomedclip.corpus.dedup import DedupConfig
from biomedclip.corpus.distributed import map_units, run_batches, stop_fork_server
from biomedclip.corpus.outdir import OutDir
from biomedclip.corpus.records import Article, Source, SourceListingError
from biomedclip.corpus.references import CAPTION, DEFAULT_REFERENCE_CHARS, TEXT_CHOICES
from biomedclip.corpus.report import panel_counts
from biomedclip.corpus.sources import relative_to_root, source_root
from biomedclip.corpus.split import SplitConfig
from biomedclip.durable import fsync_file, fsync_path
from biomedclip.errors import InputError, RunError
from biomedclip.shards import RELEASE_POINTER, current_release

__all__ = ["BuildConfig", "BuildSummary", "Progress", "WorkConfig", "build"]

PANELS = "panels"
RELEASED = ("shards", "catalog", "catalog.parquet", "clusters.parquet", "stats.json", "report.md", "report",
            "build_config.json")  # fmt: skip


@dataclass(frozen=True)
class BuildConfig:
    """The whole build recipe; written to ``OUT/build_config.json``.

    Attributes:
        text: training text (.txt): caption (the paper's) or caption+references (then body sentences citing it).
        max_reference_chars: the most characters of citing sentences that caption+references adds (whole ones).
        unit: figure; both: also OUT/panels, a sample per panel of a compound figure; panel: both, singles kept whole.
    """

    work: WorkConfig = field(default_factory=WorkConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    shard_size: int = 10_000
    batch_articles: int = 32  # articles per unit of phase-1 work (one tar + one Parquet file in OUT/work)
    text: str = CAPTION
    max_reference_chars: int = DEFAULT_REFERENCE_CHARS
    unit: Literal["figure", "panel", "both"] = "figure"

    def __post_init__(self) -> None:
        if self.text not in TEXT_CHOICES:
            raise ValueError(f"text must be one of {', '.join(TEXT_CHOICES)}, not {self.text!r}")
        if self.max_reference_chars < 0:
            raise ValueError(f"max_reference_chars must be >= 0, not {self.max_reference_chars}")
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
    warnings: list[str] = field(default_factory=list)  # damaged work files dropped and processed again
    panels: dict[str, Any] | None = None  # the panel corpus's numbers (``report.panel_counts``), None without


RELEASES = "releases"  # S3 OUT: releases/<id>/ holds each build's released files (see _upload)
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # OUT cannot take the build: one line, not a traceback
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
def _locked(out: OutDir, warnings: list[str]) -> Iterator[None]:
    """Hold ``OUT/build.lock`` (local OUT) for the build; a second build into OUT is refused.

    The file names its holder (``pid N on HOST``). A lock still held although that build is dead (its leftover
    processes inherited the open file) is stale: it is taken over, with a warning appended to ``warnings``.
    """
    if out.is_s3:
        with _s3_locked(out, warnings):
            yield
        return
    assert out.root is not None
    out.root.mkdir(parents=True, exist_ok=True)
    path = out.root / "build.lock"
    while True:
        fh = open(path, "a+")  # noqa: SIM115 - held open for the whole build
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            if not _holder_is_dead(holder):
                raise InputError(
                    f"another build is writing to {out} ({holder or 'another process'}); wait for it to finish"
                ) from None
            path.unlink(missing_ok=True)  # a new file, a new lock: what still holds the old one no longer counts
            warnings.append(f"{path} was held for a build that is dead ({holder}): taken over")
            continue
        if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino:
            break
        fh.close()  # another build took a stale lock over meanwhile: try again with the file that is there now
    with fh:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def _s3_locked(out: OutDir, warnings: list[str]) -> Iterator[None]:
    """S3 OUT: hold the object ``OUT/build.lock``, created with a conditional PUT (only if absent), deleted at the
    end. A lock left by a build of this host that is dead is taken over with a warning; any other is refused."""
    from botocore.exceptions import ClientError

    holder = f"pid {os.getpid()} on {socket.gethostname()}"
    while not out.create_object("build.lock", holder.encode()):
        try:
            other = out.read_bytes("build.lock").decode(errors="replace").strip()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "NoSuchKey":
                raise
            continue  # released meanwhile: try again
        if not _holder_is_dead(other):
            raise InputError(
                f"another build is writing to {out} ({other or 'another process'}); wait for it to finish, or, if "
                f"no build is running, delete {out}/build.lock"
            )
        out.delete("build.lock")
        warnings.append(f"{out}/build.lock was held for a build that is dead ({other}): taken over")
    try:
        yield
    finally:
        out.delete("build.lock")


def _holder_is_dead(holder: str) -> bool:
    """Whether the build a lock file names (``pid N on HOST``) is certainly dead: a process of this host that no
    longer exists. Unknown, older or other-host holders count as alive."""
    match = re.fullmatch(r"pid (\d+) on (\S+)", holder)
    if match is None or match.group(2) != socket.gethostname():
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


@contextmanager
def _sigterm_exits() -> Iterator[None]:
    """While the build runs in the main thread: SIGTERM raises ``SystemExit(143)``, so the build stops as it does
    on SIGINT (pools killed, fork server stopped, lock released) and exits with the status SIGTERM would give."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
        root = source_root(source)
        try:
            for article in source.articles():
                article = relative_to_root(article, root)
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
    """S3 OUT: upload the released files into a new release folder, then point ``OUT/RELEASE.json`` at it.

    S3 has no atomic rename of many objects, so each build uploads into ``OUT/releases/<id>/`` (shards and catalog
    parts before stats and report) and then writes ``OUT/RELEASE.json`` (one PUT, atomic): ``{"release":
    "releases/<id>", "files": {name: {bytes, sha256}}}``. A reader that follows it (``shards.follow_release``) sees
    one complete release, the previous one until the new one is whole. The release before the current one is kept
    for readers that started on it; older ones, uploads cut short, and files of the older flat layout (directly
    under OUT) are deleted once they are two releases old.
    """
    names = [str(p.relative_to(stage)) for p in sorted(stage.rglob("*"))
             if p.is_file() and p.name != "COMPLETE" and not str(p.relative_to(stage)).startswith("work/")]  # fmt: skip
    manifest = {name: _fingerprint(stage / name) for name in names}
    previous = current_release(out.url)
    release = f"{RELEASES}/{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    for name in names:
        out.put_file(f"{release}/{name}", stage / name)
    _write_json(stage / RELEASE_POINTER, {"release": release, "files": manifest})
    out.put_file(RELEASE_POINTER, stage / RELEASE_POINTER)
    kept = {release, previous}
    for old in out.list(RELEASES):
        if "/".join(old.split("/")[:2]) not in kept:
            out.delete(old)
    if previous:  # the flat layout, if any, is two releases old now
        for folder in ("shards", "catalog", "report"):
            for old in out.list(folder):
                out.delete(old)
        for name in RELEASED:
            if "." in name:  # a file (the folders' objects are deleted above)
                out.delete(name)


def _fingerprint(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        return {"bytes": path.stat().st_size, "sha256": hashlib.file_digest(handle, "sha256").hexdigest()}


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
    """Build the corpus from ``sources`` into ``out`` (a folder or ``s3://bucket/prefix``; see the module docstring).

    Work files found damaged are dropped with a warning and their articles processed again: a batch whose rows
    cannot be read before phase 1, the batches whose images phase 2 finds damaged (then phases 1 and 2 run once
    more; damage found again is a ``RunError``). A full disk, an exhausted quota or a read-only OUT is a
    ``RunError`` naming the file (the previous release stays; a rerun resumes).
    """
    run = partial(_build, list(sources), out, config, engine, workers, on_progress)
    try:
        try:
            return run([])
        except DamagedWork as damage:
            warnings = [f"work batch {batch}: {what}; its articles are processed again"
                        for batch, what in damage.batches.items()]  # fmt: skip
            return run(warnings)
    except DamagedWork as again:
        batch, what = next(iter(again.batches.items()))
        raise RunError(f"work batch {batch} is damaged again after it was processed again ({what}): check the "
                       f"storage of {out}") from again  # fmt: skip
    except OSError as error:
        if error.errno not in WRITE_ERRORS:
            raise
        where = f" ({error.filename})" if error.filename else ""
        raise RunError(f"cannot write the build into {out}: {error.strerror}{where}; the previous release is "
                       "unchanged, rerun when there is room: the build resumes") from error  # fmt: skip


def _build(
    sources: list[Source],
    out: Path | str,
    config: BuildConfig,
    engine: str,
    workers: int,
    on_progress: Callable[[Progress], None] | None,
    warnings: list[str],
) -> BuildSummary:
    start = time.perf_counter()
    outdir = OutDir(out)
    panel_out = OutDir(f"{outdir.url}/{PANELS}")
    with _sigterm_exits(), _locked(outdir, warnings):
        if outdir.root is not None:  # a previous build killed while releasing its output: finish that first
            _release(outdir.root)
            _release(outdir.root / PANELS)
        digest = config.work.digest()
        panel_store = WorkStore.of_panels(panel_out, digest) if config.unit != "figure" else None
        store = WorkStore(outdir, digest, panels=panel_store)
        outdir.remove_scratch("work")  # files a killed worker was writing
        panel_out.remove_scratch("work")
        warnings += store.drop_damaged()
        listing, progress = Listing(), Progress()
        done = {name_hash(name) for name in store.done_articles()}
        batches = _batches(sources, done, listing, progress, config.batch_articles)
        with closing(run_batches(engine, batches, config.work, store, workers)) as results:  # closed when interrupted
            for counts in results:
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
            return BuildSummary(0, progress.articles, progress.skipped, 0, 0, {}, {}, 0, seconds, 0.0, warnings)
        with tempfile.TemporaryDirectory(prefix="biomedclip-next-") as tmp:
            settings = assemble.Settings(
                config.dedup, config.split, config.shard_size, config.work.tokenizer_file,
                text=config.text, max_reference_chars=config.max_reference_chars,
            )  # fmt: skip
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
            except DamagedWork as damage:
                for batch in damage.batches:
                    store.discard(batch)
                    if panel_store is not None:
                        panel_store.discard(batch)
                raise
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
        warnings=warnings,
        panels=stats.get("panels"),
    )
