"""The typed figure row of a build, its Parquet schemas, and the OUT folder layout that holds the rows.

One ``FigureRow`` per figure (or per article that yields no figure): written by the worker that processed the
article into its batch's Parquet file, completed by phase 2 (``split``, ``duplicate_of``, ``shard``) and written
to the catalog. ``status`` is ``accepted`` or ``rejected``; ``reason`` is a short code (``missing_image``,
``near_duplicate``...) and ``detail`` says why in words: they are separate fields, never ``"code: detail"``.

OUT layout (``build(sources, OUT)``; OUT is a local folder or ``s3://bucket/prefix``)::

    OUT/
      build.lock                      held (flock) while a build runs: a second build into OUT is refused
      build_config.json               the resolved BuildConfig
      work/<config hash>/batches/<2 hex>/<batch>.tar      JPEGs of the batch's accepted figures
      work/<config hash>/batches/<2 hex>/<batch>.parquet  the batch's rows (``WORK_SCHEMA``); written last,
                                      it is the batch's done marker
      shards/{split}-NNNNNN.tar       WebDataset shards: <key>.jpg, <key>.txt, <key>.json (``RECORD_FIELDS``),
                                      samples in key order within each split
      catalog/part-NNNNN.parquet      the catalog, one logical table (``pq.read_table("OUT/catalog")``,
                                      DuckDB ``'OUT/catalog/*.parquet'``): one part per shard, then the rejected rows
      catalog.parquet                 the same rows in one file, for builds of up to 100,000 rows
      clusters.parquet                the duplicates: key, duplicate_of (the kept figure), kind (exact|near)
      stats.json, report.md, report/  the report, computed from aggregates of the catalog
      .next/                          phase 2 output being prepared; moved into place once complete

Disk: the work batches keep one JPEG per accepted figure (they are the source of every later phase 2, so an
incremental build needs no reprocessing), and the shards hold a second copy of each kept figure.
With ``s3://`` OUT, phase 2 runs in a local temporary folder and uploads its result (no lock on S3).
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any

import pyarrow as pa

ACCEPTED = "accepted"
REJECTED = "rejected"


@dataclass
class FigureRow:
    """One figure of the corpus (or one article-level rejection), as the catalog stores it."""

    key: str  # WebDataset sample key, unique in a build: "<article key>_<fig id>"
    article: str  # the article's key: its PMCID, else the source's fallback (DOI, publisher id, file name)
    pmcid: str
    fig_id: str
    label: str
    caption: str
    graphic: str
    source: str
    status: str = ACCEPTED
    reason: str = ""
    detail: str = ""
    version: int | None = None
    graphics: list[str] = field(default_factory=list)
    image_path: str = ""
    license: str | None = None
    journal: str | None = None
    year: int | None = None
    pmid: str | None = None
    doi: str | None = None
    width: int | None = None
    height: int | None = None
    orig_width: int | None = None
    orig_height: int | None = None
    sha256: str | None = None
    phash: str | None = None  # 16 hex digits
    caption_tokens: int | None = None
    split: str | None = None  # set by phase 2
    duplicate_of: str | None = None  # set by phase 2
    shard: str | None = None  # set by phase 2: the shard's file name

    def reject(self, reason: str, detail: str = "") -> FigureRow:
        """Mark this row rejected for ``reason`` (a code) with ``detail`` (words); returns the row."""
        self.status, self.reason, self.detail = REJECTED, reason, detail
        return self

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _arrow_type(hint: Any) -> pa.DataType:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) is list:
        return pa.list_(pa.string())
    return {str: pa.string(), int: pa.int64(), bool: pa.bool_()}[hint]


_HINTS = typing.get_type_hints(FigureRow)
CATALOG_SCHEMA = pa.schema([(f.name, _arrow_type(_HINTS[f.name])) for f in fields(FigureRow)])
"""The catalog's columns: every ``FigureRow`` field, in declaration order."""

WORK_SCHEMA = CATALOG_SCHEMA.append(pa.field("final", pa.bool_())).append(pa.field("batch", pa.string()))
WORK_SCHEMA = WORK_SCHEMA.append(pa.field("image_offset", pa.int64())).append(pa.field("image_size", pa.int64()))
"""A work batch's columns: the catalog's, plus ``final`` (False: a transient failure, retried by the next run),
``batch`` and where the figure's JPEG lies in the batch tar (``image_offset``, ``image_size``)."""

RECORD_FIELDS = (
    "pmcid", "version", "fig_id", "label", "caption", "graphic", "graphics", "image_path", "source", "license",
    "journal", "year", "pmid", "doi", "split", "status", "reason",
)  # fmt: skip
"""The fields of a shard's ``<key>.json`` record (the DESIGN.md contract)."""


def split_reason(reason: str, detail: str = "") -> tuple[str, str]:
    """``(code, detail)`` of a reason a source gave as ``"code: detail"`` (sources that set ``detail`` pass through)."""
    if detail:
        return reason, detail
    code, _, rest = reason.partition(":")
    return code.strip(), rest.strip()
