"""``OUT/stats.json`` and ``OUT/report.md`` (with PNG plots in ``OUT/report/``) from the catalog rows."""

from __future__ import annotations

import json
import os
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from biomedclip.corpus.dedup import Cluster
from biomedclip.corpus.tokens import TOKENIZER_NAME

CONTEXT_LENGTHS = (77, 256)


def _quantiles(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])  # noqa: E731
    return {"min": float(ordered[0]), "p50": pick(0.5), "p95": pick(0.95), "max": float(ordered[-1]),
            "mean": round(statistics.fmean(ordered), 2)}  # fmt: skip


def compute_stats(
    rows: Sequence[dict[str, Any]], clusters: Sequence[Cluster], leaks: int, shards: int, tokenizer: str | None = None
) -> dict:
    """The numbers of the report: counts per stage, rejections, caption tokens, image sizes, licenses, journals."""
    figures = [r for r in rows if r["fig_id"] or r["graphic"]]
    accepted = [r for r in rows if r["status"] == "accepted"]
    reasons = Counter(r["reason"] for r in rows if r["status"] != "accepted")
    decoded = [r for r in figures if r.get("sha256")]
    dups = sum(len(c.duplicates) for c in clusters)
    tokens = [r["caption_tokens"] for r in accepted if r.get("caption_tokens") is not None]
    return {
        "articles": len({r["pmcid"] or r["source"] for r in rows}),
        "stages": {
            "figures_found": len(figures),
            "image_decoded": len(decoded),
            "passed_filters": len(accepted) + dups,
            "after_dedup": len(accepted),
        },
        "accepted": len(accepted),
        "rejected": sum(reasons.values()),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "splits": {s: sum(1 for r in accepted if r["split"] == s) for s in ("train", "val", "test")},
        "split_articles": {s: len({r["pmcid"] for r in accepted if r["split"] == s}) for s in ("train", "val", "test")},
        "shards": shards,
        "dedup": {
            "exact_clusters": sum(1 for c in clusters if c.kind == "exact"),
            "near_clusters": sum(1 for c in clusters if c.kind == "near"),
            "duplicates_removed": dups,
            "clusters_spanning_splits_resolved": leaks,
        },
        "caption_tokens": {
            "tokenizer": tokenizer or TOKENIZER_NAME,
            **_quantiles(tokens),
            **{
                f"share_within_{n}": round(sum(t <= n for t in tokens) / len(tokens), 4) if tokens else None
                for n in CONTEXT_LENGTHS
            },
        },
        "image_size": {
            "orig_width": _quantiles([r["orig_width"] for r in accepted]),
            "orig_height": _quantiles([r["orig_height"] for r in accepted]),
        },
        "licenses": dict(Counter(str(r["license"]) for r in accepted).most_common()),
        "journals": dict(Counter(str(r["journal"]) for r in accepted).most_common(20)),
    }


def _plots(directory: Path, stats: dict, rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    accepted = [r for r in rows if r["status"] == "accepted"]
    plots: list[tuple[str, str]] = []

    def bar(name: str, title: str, counts: dict[str, int]) -> None:
        fig, ax = plt.subplots(figsize=(7, max(2.5, 0.35 * len(counts) + 1)))
        labels = list(counts)[::-1]
        ax.barh(labels, [counts[k] for k in labels])
        ax.set_title(title)
        save(fig, name, title)

    def save(fig: Any, name: str, title: str) -> None:
        fig.tight_layout()
        fig.savefig(directory / f"{name}.png", dpi=80, metadata={"Software": None})
        plt.close(fig)
        plots.append((title, f"report/{name}.png"))

    bar("stages", "Figures per stage", stats["stages"])
    bar("rejections", "Rejected figures by reason", stats["rejected_by_reason"] or {"none": 0})
    tokens = [r["caption_tokens"] for r in accepted]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(tokens or [0], bins=50)
    for n in CONTEXT_LENGTHS:
        ax.axvline(n, color="red", linestyle="--")
    ax.set(title="Caption length (WordPiece tokens)", xlabel="tokens", ylabel="figures")
    save(fig, "caption_tokens", "Caption length in WordPiece tokens (red: 77 and 256)")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter([r["orig_width"] for r in accepted], [r["orig_height"] for r in accepted], s=4)
    ax.set(title="Original image size", xlabel="width (px)", ylabel="height (px)")
    save(fig, "image_sizes", "Original image sizes")
    bar("licenses", "Accepted figures by license", stats["licenses"] or {"none": 0})
    bar("journals", "Accepted figures by journal (top 20)", stats["journals"] or {"none": 0})
    return plots


def write_report(
    out: Path,
    rows: Sequence[dict[str, Any]],
    clusters: Sequence[Cluster],
    leaks: int,
    shards: int,
    tokenizer: str | None = None,
) -> dict:
    """Write ``stats.json``, ``report.md`` and the plots; returns the stats."""
    stats = compute_stats(rows, clusters, leaks, shards, tokenizer)
    plots = _plots(out / "report", stats, rows)
    tmp = out / "stats.json.tmp"
    tmp.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out / "stats.json")
    tok = stats["caption_tokens"]
    lines = [
        "# Corpus report",
        "",
        f"- articles: {stats['articles']}; figures found: {stats['stages']['figures_found']}; "
        f"accepted: {stats['accepted']}; rejected: {stats['rejected']}",
        f"- splits (figures): {stats['splits']}; articles per split: {stats['split_articles']}",
        f"- duplicates removed: {stats['dedup']['duplicates_removed']} "
        f"({stats['dedup']['exact_clusters']} exact, {stats['dedup']['near_clusters']} near clusters; "
        f"{stats['dedup']['clusters_spanning_splits_resolved']} spanned splits)",
        f"- caption tokens ({tok['tokenizer']}): median {tok.get('p50')}, p95 {tok.get('p95')}; "
        f"share within 77: {tok['share_within_77']}, within 256: {tok['share_within_256']}",
        "",
        "## Rejections by reason",
        "",
        "| reason | figures |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in stats["rejected_by_reason"].items()],
        "",
        *[line for title, path in plots for line in (f"## {title}", "", f"![{title}]({path})", "")],
    ]
    tmp = out / "report.md.tmp"
    tmp.write_text("\n".join(lines))
    os.replace(tmp, out / "report.md")
    return stats
