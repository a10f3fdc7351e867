"""Build the corpus: sources -> per-article work (phase 1) -> dedup, split, shards, catalog, report (phase 2).

Phase 1 sends each article to an engine (worker processes or Ray) that runs ``work.read_article`` then
``work.process_payload`` (an article that cannot be pickled is read here and sent as a payload); the driver
writes one result file per article version to ``OUT/work/<config hash>/``, atomically.
Articles already there are skipped, so a build killed at any moment (even ``kill -9``) resumes where it
stopped, and a later build over a grown source processes only the new articles.

Phase 2 is a deterministic function of the results of the articles the sources list in this run (latest
version per PMCID): exact and near-duplicate removal, the split by article, WebDataset shards, the Parquet
catalog and the report. Every output is written under a temporary name and renamed, so a rerun after a
kill gives byte-identical shards and the same catalog as an uninterrupted run. Nothing is written outside OUT.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from biomedclip.corpus.catalog import write_catalog
from biomedclip.corpus.dedup import DedupConfig, Fingerprint, find_duplicates
from biomedclip.corpus.distributed import run_engine
from biomedclip.corpus.records import Article, ArticleMeta, FigureRecord, Source
from biomedclip.corpus.report import write_report
from biomedclip.corpus.split import SPLITS, SplitConfig, assign_splits, cross_split_clusters
from biomedclip.corpus.work import (
    ArticlePayload,
    ArticleResult,
    PackedResult,
    WorkConfig,
    WorkStore,
    article_store_name,
    process_payload,
    read_article,
)
from biomedclip.shards import ShardWriter, shard_record, write_sizes


@dataclass(frozen=True)
class BuildConfig:
    """The whole build recipe; written to ``OUT/build_config.json``."""

    work: WorkConfig = field(default_factory=WorkConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    shard_size: int = 10_000


@dataclass
class Progress:
    """Running counts handed to the progress callback after each article."""

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


@dataclass
class _Seen:
    """An article listed by the sources in this run: its work-store name, or its in-memory result."""

    pmcid: str
    version: int
    name: str
    result: PackedResult | None = None


def _payloads(
    sources: Iterable[Source], store: WorkStore, seen: list[_Seen], progress: Progress, errors: list[PackedResult]
) -> Iterator[Article | ArticlePayload]:
    names: set[str] = set()
    for source in sources:
        ship: bool | None = None  # whether this source's articles can go to workers as they are
        try:
            for article in source.articles():
                name = article_store_name(article.meta, article.source)
                if name in names:
                    continue
                names.add(name)
                seen.append(_Seen(article.meta.pmcid or name, article.meta.version or 0, name))
                if name in store and not article.error:
                    progress.skipped += 1
                    continue
                if ship is None:
                    ship = _picklable(article)
                yield article if ship else read_article(article)
        except Exception as exc:  # a source that fails mid-listing: record it, go on with the next source
            record = FigureRecord(
                pmcid="", fig_id="", label="", caption="", graphic="", source=getattr(source, "name", str(source)),
                status="rejected", reason=f"unreadable_source: {type(exc).__name__}: {exc}",
            )  # fmt: skip
            meta = ArticleMeta(pmcid="")
            payload = ArticlePayload(source=record.source, meta=meta, figures=[record], source_error=True)
            errors.append(PackedResult.of(process_payload(payload)))


def _picklable(article: Article) -> bool:
    try:
        pickle.dumps(article)
    except Exception:  # a closure or an open stream: the reader prepares a payload instead
        return False
    return True


def _latest(seen: list[_Seen]) -> list[_Seen]:
    best: dict[str, _Seen] = {}
    for item in seen:
        if item.pmcid not in best or item.version > best[item.pmcid].version:
            best[item.pmcid] = item  # _Seen.pmcid falls back to the store name, so it is never empty
    return sorted(best.values(), key=lambda s: (s.pmcid, s.name))


def _load(item: _Seen, store: WorkStore, *, with_images: bool) -> ArticleResult:
    if item.result is not None:
        return ArticleResult.from_bytes(item.name, item.result.data, with_images=with_images)
    return store.get(item.name, with_images=with_images)


def _write_json(path: Path, data: Any) -> None:
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def finalize(out: Path, articles: list[_Seen], store: WorkStore, config: BuildConfig) -> list[dict[str, Any]]:
    """Phase 2: dedup, split, shards, catalog and report from the work store; returns the catalog rows."""
    rows: list[dict[str, Any]] = []
    accepted_of: dict[str, list[dict[str, Any]]] = {}
    used: set[str] = set()
    for item in articles:
        loaded = _load(item, store, with_images=False).rows
        for row in loaded:  # two articles claiming one PMCID in their XML: keep keys unique, deterministically
            row["stored_key"] = row["key"]
            if row["key"] in used:
                row["key"] = f"{row['key']}-{item.name}".replace(".", "_")
            used.add(row["key"])
        rows.extend(loaded)
        accepted_of[item.name] = [r for r in loaded if r["status"] == "accepted"]
    rows.sort(key=lambda r: (r["pmcid"] or "", r["key"]))
    candidates = [Fingerprint(r["key"], r["sha256"], r["phash"]) for r in rows if r["status"] == "accepted"]
    clusters = find_duplicates(candidates, config.dedup)
    by_key = {r["key"]: r for r in rows}
    for cluster in clusters:
        for key in cluster.duplicates:
            by_key[key].update(status="rejected", reason=f"{cluster.kind}_duplicate", duplicate_of=cluster.kept)
    split_of = assign_splits([r["pmcid"] for r in rows if r["pmcid"] and not r.get("split")], config.split)
    for row in rows:  # a source that knows the split (a labelled folder's split folders or hash rule) keeps it
        row["split"] = row.get("split") or split_of.get(row["pmcid"])
    leaks = cross_split_clusters(clusters, {r["key"]: r["split"] for r in rows})

    staging = out / ".shards.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    writers = {s: ShardWriter(staging, s, config.shard_size) for s in SPLITS}
    for item in articles:
        accepted = [r for r in accepted_of[item.name] if r["status"] == "accepted"]
        if not accepted:
            continue
        images = _load(item, store, with_images=True).images
        for row in sorted(accepted, key=lambda r: r["key"]):
            writer = writers[row["split"]]
            writer.write(row["key"], images[row["stored_key"]], row["caption"], shard_record(row))
            row["shard"] = writer.paths[-1].name
    shard_count = sum(len(w.close()) for w in writers.values())
    write_sizes(staging, {name: n for w in writers.values() for name, n in w.sizes.items()})
    shutil.rmtree(out / "shards", ignore_errors=True)
    os.replace(staging, out / "shards")

    write_catalog(rows, out / "catalog.parquet")
    write_report(out, rows, clusters, leaks, shard_count, config.work.tokenizer_file)
    _write_json(out / "clusters.json", [asdict(c) for c in clusters])
    return rows


def build(
    sources: Iterable[Source],
    out: Path,
    config: BuildConfig = BuildConfig(),
    *,
    engine: str = "local",
    workers: int = 0,
    on_progress: Callable[[Progress], None] | None = None,
) -> BuildSummary:
    """Build the corpus from ``sources`` into ``out`` (resumable; see the module docstring)."""
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "build_config.json", asdict(config))
    store = WorkStore(out / "work" / config.work.digest())
    seen: list[_Seen] = []
    errors: list[PackedResult] = []
    progress = Progress()
    by_name = {}
    for result in run_engine(engine, _payloads(sources, store, seen, progress, errors), config.work, workers):
        if result.persist:
            store.put(result)
        else:
            by_name[result.name] = result
        progress.articles += 1
        progress.figures += result.figures
        progress.accepted += result.accepted
        if on_progress:
            on_progress(progress)
    if on_progress:  # skipped articles after the last processed one
        on_progress(progress)
    for item in seen:
        item.result = by_name.get(item.name)
    articles = _latest(seen) + [_Seen(f"{e.name}-{i}", 0, e.name, e) for i, e in enumerate(errors)]
    rows = finalize(out, articles, store, config)
    seconds = time.perf_counter() - start
    accepted = [r for r in rows if r["status"] == "accepted"]
    return BuildSummary(
        articles=len(articles),
        articles_processed=progress.articles,
        articles_skipped=progress.skipped,
        figures=sum(1 for r in rows if r["fig_id"] or r["graphic"]),
        accepted=len(accepted),
        rejected=dict(Counter(r["reason"] for r in rows if r["status"] != "accepted").most_common()),
        splits=dict(Counter(r["split"] for r in accepted)),
        shards=len(list((out / "shards").glob("*.tar"))),
        seconds=seconds,
        figures_per_s=progress.figures / seconds if seconds else 0.0,
    )
