"""The corpus report counts figures and articles apart: the issue's "found 778, accepted 8, rejected 787" added
articles rejected before any figure to the rejected figures."""

from __future__ import annotations

import pyarrow as pa

from biomedclip.corpus.report import Aggregates, compute_stats
from biomedclip.corpus.rows import CATALOG_SCHEMA


def test_articles_rejected_before_any_figure_are_not_counted_as_figures() -> None:
    rows = [
        {"key": "a1", "fig_id": "F1", "graphic": "f1.jpg", "status": "accepted", "split": "train", "sha256": "1" * 64}
        | {"caption_tokens": 12, "orig_width": 300, "orig_height": 200, "license": "CC BY", "journal": "J"},
        {"key": "a2", "fig_id": "F2", "graphic": "f2.jpg", "status": "rejected", "reason": "caption_too_short"},
        {"key": "a3", "fig_id": "F3", "graphic": "f3.jpg", "status": "rejected", "reason": "caption_too_short"},
        {"key": "b", "fig_id": None, "graphic": None, "status": "rejected", "reason": "no_figures"},  # an article
        {"key": "c", "fig_id": "", "graphic": "", "status": "rejected", "reason": "not_open_access"},  # an article
    ]
    agg = Aggregates()
    agg.add(pa.Table.from_pylist(rows, schema=CATALOG_SCHEMA))
    stats = compute_stats(agg, articles=4, clusters={}, duplicates=0, leaks=0, shards=1, split_articles={})
    assert stats["stages"]["figures_found"] == 3 and stats["accepted"] == 1
    assert stats["rejected"] == 2 and stats["rejected_articles"] == 2  # 1 + 2 == 3 figures found
    assert stats["rejected_by_reason"] == {"caption_too_short": 2, "no_figures": 1, "not_open_access": 1}
