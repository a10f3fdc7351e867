"""``OUT/stats.json`` and ``OUT/report.md`` (with PNG plots in ``OUT/report/``), from aggregates of the catalog."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from biomedclip.corpus.licenses import LICENSE_GROUPS
from biomedclip.corpus.tokens import TOKENIZER_NAME

CONTEXT_LENGTHS = (77, 256)
LONG_CONTEXTS = (256, 512)  # the text towers' contexts (paper.yaml, paper-long.yaml): captions past them are cut
SPLITS = ("train", "val", "test")


COLUMNS = ["fig_id", "graphic", "status", "reason", "sha256", "split", "caption_tokens", "orig_width",
           "orig_height", "license", "journal", "license_group", "inline_references"]  # fmt: skip
SCATTER_POINTS = 5_000


@dataclass
class Aggregates:
    """What the report needs from the catalog, summed part by part (memory bounded by distinct values)."""

    figures: int = 0
    decoded: int = 0
    accepted: int = 0
    reasons: Counter = field(default_factory=Counter)  # every rejected row: figures and whole articles
    article_reasons: Counter = field(default_factory=Counter)  # rows of articles rejected before any figure
    splits: Counter = field(default_factory=Counter)
    tokens: Counter = field(default_factory=Counter)
    widths: Counter = field(default_factory=Counter)
    heights: Counter = field(default_factory=Counter)
    licenses: Counter = field(default_factory=Counter)
    journals: Counter = field(default_factory=Counter)
    license_groups: Counter = field(default_factory=Counter)
    long_captions: Counter = field(default_factory=Counter)  # (split, context length) -> captions longer
    with_references: int = 0  # accepted figures cited by at least one body paragraph
    references: int = 0  # their (figure, citing paragraph) pairs
    sizes: list[tuple[int, int]] = field(default_factory=list)  # the first SCATTER_POINTS accepted, for the plot

    def add(self, table: pa.Table) -> None:
        """Add one catalog part (column-wise)."""
        is_figure = pc.or_(pc.not_equal(pc.fill_null(table["fig_id"], ""), ""),
                           pc.not_equal(pc.fill_null(table["graphic"], ""), ""))  # fmt: skip
        self.figures += _true(is_figure)
        self.decoded += _true(pc.and_(is_figure, pc.is_valid(table["sha256"])))
        ok = pc.equal(table["status"], "accepted")
        self.reasons.update(_counts(table.filter(pc.invert(ok))["reason"]))
        self.article_reasons.update(_counts(table.filter(pc.and_(pc.invert(ok), pc.invert(is_figure)))["reason"]))
        accepted = table.filter(ok)
        self.accepted += len(accepted)
        self.splits.update(_counts(accepted["split"]))
        self.tokens.update(_counts(pc.drop_null(accepted["caption_tokens"])))
        self.widths.update(_counts(accepted["orig_width"]))
        self.heights.update(_counts(accepted["orig_height"]))
        self.licenses.update({str(k): v for k, v in _counts(accepted["license"]).items()})
        self.journals.update({str(k): v for k, v in _counts(accepted["journal"]).items()})
        self.license_groups.update({str(k): v for k, v in _counts(accepted["license_group"]).items()})
        for n in LONG_CONTEXTS:
            over = accepted.filter(pc.greater(pc.fill_null(accepted["caption_tokens"], 0), n))
            self.long_captions.update({(str(k), n): v for k, v in _counts(over["split"]).items()})
        cited = pc.fill_null(pc.list_value_length(accepted["inline_references"]), 0)
        self.with_references += _true(pc.greater(cited, 0))
        self.references += int(pc.sum(cited).as_py() or 0)
        room = SCATTER_POINTS - len(self.sizes)
        if room > 0:
            head = accepted.slice(0, room)
            self.sizes += list(zip(head["orig_width"].to_pylist(), head["orig_height"].to_pylist(), strict=True))


def _true(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def _counts(column: pa.ChunkedArray) -> Counter:
    counts = pc.value_counts(column)
    return Counter(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)))


def _quantiles(counts: Counter) -> dict[str, float]:
    """min, p50, p95, max and mean of the values counted in ``counts`` (value -> how many)."""
    n = sum(counts.values())
    if not n:
        return {}
    ordered = sorted(counts.items())

    def pick(q: float) -> float:
        target, seen = min(n - 1, int(q * n)), 0
        for value, count in ordered:
            seen += count
            if seen > target:
                return float(value)
        return float(ordered[-1][0])

    mean = sum(v * c for v, c in ordered) / n
    return {"min": float(ordered[0][0]), "p50": pick(0.5), "p95": pick(0.95), "max": float(ordered[-1][0]),
            "mean": round(mean, 2)}  # fmt: skip


def compute_stats(
    agg: Aggregates, *, articles: int, clusters: dict[str, int], duplicates: int, leaks: int, shards: int,
    split_articles: dict[str, int], tokenizer: str | None = None,
) -> dict:  # fmt: skip
    """The numbers of the report: counts per stage, rejections, caption tokens, image sizes, licenses, journals."""
    within = {n: sum(c for t, c in agg.tokens.items() if t <= n) for n in CONTEXT_LENGTHS}
    n_tokens = sum(agg.tokens.values())
    return {
        "articles": articles,
        "stages": {
            "figures_found": agg.figures,
            "image_decoded": agg.decoded,
            "passed_filters": agg.accepted + duplicates,
            "after_dedup": agg.accepted,
        },
        "accepted": agg.accepted,
        "rejected": sum(agg.reasons.values()) - sum(agg.article_reasons.values()),  # figures only
        "rejected_articles": sum(agg.article_reasons.values()),  # articles rejected before any figure
        "rejected_by_reason": dict(sorted(agg.reasons.items())),  # figures and articles
        "splits": {s: agg.splits.get(s, 0) for s in ("train", "val", "test")},
        "split_articles": split_articles,
        "shards": shards,
        "dedup": {
            "exact_clusters": clusters.get("exact", 0),
            "near_clusters": clusters.get("near", 0),
            "duplicates_removed": duplicates,
            "clusters_spanning_splits_resolved": leaks,
        },
        "caption_tokens": {
            "tokenizer": tokenizer or TOKENIZER_NAME,
            **_quantiles(agg.tokens),
            **{f"share_within_{n}": round(within[n] / n_tokens, 4) if n_tokens else None for n in CONTEXT_LENGTHS},
        },
        "image_size": {"orig_width": _quantiles(agg.widths), "orig_height": _quantiles(agg.heights)},
        "licenses": dict(agg.licenses.most_common()),
        "license_groups": {g: agg.license_groups.get(g, 0) for g in LICENSE_GROUPS},
        "long_captions": {s: {f"over_{n}": agg.long_captions.get((s, n), 0) for n in LONG_CONTEXTS} for s in SPLITS},
        "inline_references": {
            "references": agg.references,
            "figures_with_references": agg.with_references,
            "share_with_references": round(agg.with_references / agg.accepted, 4) if agg.accepted else None,
        },
        "journals": dict(agg.journals.most_common(20)),
    }


def _plots(directory: Path, stats: dict, agg: Aggregates) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
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
    bar("rejections", "Rejected figures and articles by reason", stats["rejected_by_reason"] or {"none": 0})
    fig, ax = plt.subplots(figsize=(7, 3.5))
    values = sorted(agg.tokens) or [0]
    ax.hist(values, bins=50, weights=[agg.tokens.get(v, 0) for v in values])
    for n in CONTEXT_LENGTHS:
        ax.axvline(n, color="red", linestyle="--")
    ax.set(title="Caption length (WordPiece tokens)", xlabel="tokens", ylabel="figures")
    save(fig, "caption_tokens", "Caption length in WordPiece tokens (red: 77 and 256)")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter([w for w, _ in agg.sizes], [h for _, h in agg.sizes], s=4)
    ax.set(title="Original image size", xlabel="width (px)", ylabel="height (px)")
    save(fig, "image_sizes", "Original image sizes")
    bar("licenses", "Accepted figures by license", stats["licenses"] or {"none": 0})
    bar("journals", "Accepted figures by journal (top 20)", stats["journals"] or {"none": 0})
    return plots


PANEL_COLUMNS = ["parent", "status", "reason", "panel_label", "subcaption", "alignment", "split"]
PANEL_ALIGNMENTS = ("label", "order", "position", "none")
"""The ``alignment`` of a panel of a compound figure (``figure``: a single figure kept whole; null: a failure)."""


def panel_counts(catalog_parts: Sequence[Path]) -> dict[str, Any]:
    """The panel corpus's numbers for the figure report, from its catalog parts (one row per panel, accepted or
    rejected): compound figures, panels found, labelled panels (a letter read), aligned subcaptions (a panel
    text with its own subcaption), panels by alignment, accepted panels per split, rejections by reason, figures
    kept whole (``--unit panel``) and figures the splitter failed on."""
    found = {"compound_figures": set(), "panels": 0, "labelled": 0, "aligned": 0}
    alignments: Counter = Counter()
    splits: Counter = Counter()
    reasons: Counter = Counter()
    accepted = 0
    for part in catalog_parts:
        table = pq.read_table(part, columns=PANEL_COLUMNS)
        alignments.update(_counts(pc.fill_null(table["alignment"], "")))
        panels = table.filter(pc.is_in(table["alignment"], pa.array(PANEL_ALIGNMENTS)))
        found["compound_figures"].update(panels["parent"].to_pylist())
        found["panels"] += len(panels)
        found["labelled"] += _true(pc.is_valid(panels["panel_label"]))
        found["aligned"] += _true(pc.is_valid(panels["subcaption"]))
        ok = pc.equal(table["status"], "accepted")
        accepted += _true(ok)
        splits.update(_counts(table.filter(ok)["split"]))
        reasons.update(_counts(table.filter(pc.invert(ok))["reason"]))
    return {
        "compound_figures": len(found["compound_figures"]),
        "panels": found["panels"],
        "labelled_panels": found["labelled"],
        "aligned_subcaptions": found["aligned"],
        "by_alignment": {k: alignments.get(k, 0) for k in PANEL_ALIGNMENTS},
        "single_figures_kept": alignments.get("figure", 0),
        "split_failures": reasons.get("panel_split_failed", 0),
        "accepted": accepted,
        "splits": {s: splits.get(s, 0) for s in ("train", "val", "test")},
        "rejected_by_reason": dict(sorted(reasons.items())),
    }


def write_report(
    out: Path, catalog_parts: Sequence[Path], panels: dict | None = None, plots: bool = True, **counts: Any
) -> dict:
    """Write ``stats.json``, ``report.md`` and (``plots``) the plots from the catalog parts; returns the stats.

    ``counts``: the phase-2 aggregates ``compute_stats`` takes (articles, clusters, duplicates, leaks...);
    ``panels``: the panel corpus's numbers (``panel_counts``), in ``stats.json`` and the report when given.
    """
    agg = Aggregates()
    for part in catalog_parts:
        agg.add(pq.read_table(part, columns=COLUMNS))
    stats = compute_stats(agg, **counts)
    if panels is not None:
        stats["panels"] = panels
    drawn = _plots(out / "report", stats, agg) if plots else []
    tmp = out / "stats.json.tmp"
    tmp.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out / "stats.json")
    tok = stats["caption_tokens"]
    lines = [
        "# Corpus report",
        "",
        f"- articles: {stats['articles']}; figures found: {stats['stages']['figures_found']}; "
        f"accepted: {stats['accepted']}; rejected: {stats['rejected']}; articles rejected before any figure: "
        f"{stats['rejected_articles']}",
        f"- splits (figures): {stats['splits']}; articles per split: {stats['split_articles']}",
        f"- duplicates removed: {stats['dedup']['duplicates_removed']} "
        f"({stats['dedup']['exact_clusters']} exact, {stats['dedup']['near_clusters']} near clusters; "
        f"{stats['dedup']['clusters_spanning_splits_resolved']} spanned splits)",
        f"- caption tokens ({tok['tokenizer']}): median {tok.get('p50')}, p95 {tok.get('p95')}; "
        f"share within 77: {tok['share_within_77']}, within 256: {tok['share_within_256']}",
        "- captions longer than the text tower's context (tokens, per split): "
        + "; ".join(
            f"{s}: " + ", ".join(f"{v} over {k.removeprefix('over_')}" for k, v in counts.items())
            for s, counts in stats["long_captions"].items()
        ),
        f"- licence groups (accepted figures): {stats['license_groups']}; licences: {stats['licenses']}",
        f"- inline references: {stats['inline_references']['references']} citing paragraphs for "
        f"{stats['inline_references']['figures_with_references']} figures "
        f"(share of accepted figures: {stats['inline_references']['share_with_references']})",
        "",
        "## Rejections by reason",
        "",
        "| reason | figures or articles |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in stats["rejected_by_reason"].items()],
        "",
        *[line for title, path in drawn for line in (f"## {title}", "", f"![{title}]({path})", "")],
        *(_panel_lines(panels) if panels is not None else []),
    ]
    tmp = out / "report.md.tmp"
    tmp.write_text("\n".join(lines))
    os.replace(tmp, out / "report.md")
    return stats


def _panel_lines(panels: dict[str, Any]) -> list[str]:
    """The report's section on the panel corpus (``panels/``)."""
    return [
        "## Panels (panels/)",
        "",
        f"- compound figures: {panels['compound_figures']}; panels: {panels['panels']}; labelled panels: "
        f"{panels['labelled_panels']}; aligned subcaptions: {panels['aligned_subcaptions']}",
        f"- by alignment: {panels['by_alignment']}; single figures kept whole: {panels['single_figures_kept']}; "
        f"splitter failures: {panels['split_failures']}",
        f"- accepted panel samples: {panels['accepted']}, splits: {panels['splits']}",
        "",
        "| reason | panels |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in panels["rejected_by_reason"].items()],
        "",
    ]
