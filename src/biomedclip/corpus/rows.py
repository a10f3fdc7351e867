"""The typed figure row of a build, its Parquet schemas, and the OUT folder layout that holds the rows.

One ``FigureRow`` per figure (or per article that yields no figure): written by the worker that processed the
article into its batch's Parquet file, completed by phase 2 (``split``, ``duplicate_of``, ``shard``) and written
to the catalog. ``status`` is ``accepted`` or ``rejected``; ``reason`` is a short code (``missing_image``,
``near_duplicate``...) and ``detail`` says why in words: they are separate fields, never ``"code: detail"``.

OUT layout (``build(sources, OUT)``; OUT is a local folder or ``s3://bucket/prefix``)::

    OUT/
      build.lock                      held (flock) while a build runs: a second build into OUT is refused
      build_config.json               the resolved BuildConfig
      work/<config hash>/batches/<2 hex>/<batch>.tar      JPEGs of the batch's accepted figures, until
                                      the next release holds them (then deleted)
      work/<config hash>/batches/<2 hex>/<batch>.parquet  the batch's rows (``WORK_SCHEMA``); written last,
                                      it is the batch's done marker
      work/<config hash>/images/      released with the shards: ``pack-NNNNN.tar`` (the images no shard holds:
                                      duplicates, results not chosen) and ``index-*.parquet`` (batch, key, file,
                                      offset, size: where each image of a batch without its tar lies)
      shards/{split}-NNNNNN.tar       WebDataset shards: <key>.jpg, <key>.txt, <key>.json (the record,
                                      ``shards.SHARD_RECORD_FIELDS``), samples in key order within each split
      shards/sizes.json               samples per shard (the manifest open_clip's trainer reads)
      catalog/part-NNNNN.parquet      the catalog, one logical table (``pq.read_table("OUT/catalog")``,
                                      DuckDB ``'OUT/catalog/*.parquet'``): one part per shard, then the rejected rows
      catalog.parquet                 the same rows in one file, for builds of up to 100,000 rows
      clusters.parquet                the duplicates: key, duplicate_of (the kept figure), kind (exact|near)
      stats.json, report.md, report/  the report, computed from aggregates of the catalog
      .next/                          phase 2 output being prepared; moved into place once complete
      panels/                         ``--unit panel|both``: the panel corpus, an OUT of its own with the same
                                      layout (work/, shards/, catalog/, catalog.parquet, clusters.parquet, stats.json,
                                      report.md), one ``PanelRow`` per panel; released after the figures

Disk: each processed image is stored once. A worker writes it to its batch tar; phase 2 copies every image
into the new shards (kept figures) or packs (the others), reading earlier batches' images from the previous
release; once released, the batch tars are deleted. An incremental build thus needs no reprocessing. On the two
real fixture packages OUT holds 88 KB per accepted figure (68 KB of it the shards), where it held 153 KB before.
With ``s3://`` OUT, phase 2 runs in a local temporary folder and uploads its result into
``OUT/releases/<id>/`` (shards/, catalog/, catalog.parquet, ... as above; the catalog's image paths are relative
to that folder), then writes ``OUT/RELEASE.json`` (``{"release": "releases/<id>", "files": {...}}``) last: readers
follow it (``shards.follow_release``), so they see the previous release until the new one is complete
(``build.lock`` is an object created by a conditional PUT); there the batch tars stay (an upload is not an atomic
release), so S3 OUT keeps the second copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import pyarrow as pa

from biomedclip.corpus.licenses import license_group
from biomedclip.shards import CATALOG_FIELDS, PANEL_CATALOG_FIELDS, arrow_schema

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
    thumb: str | None = None  # the grey thumbnail that confirms a near duplicate (``corpus.pixels``), hex
    pixel_sha256: str | None = None  # SHA-256 of the normalised decoded pixels (``images.pixel_digest``)
    caption_tokens: int | None = None
    split: str | None = None  # set by phase 2, unless the source knows it (a labelled folder's split)
    duplicate_of: str | None = None  # set by phase 2
    shard: str | None = None  # set by phase 2: the shard's file name
    class_name: str | None = None  # the class folder of a labelled image, else None
    license_group: str | None = None  # from ``license`` (``licenses.license_group``) unless given
    inline_references: list[dict[str, Any]] = field(default_factory=list)  # ``references.InlineReference``

    def __post_init__(self) -> None:
        if self.license_group is None:
            self.license_group = license_group(self.license)

    def reject(self, reason: str, detail: str = "") -> FigureRow:
        """Mark this row rejected for ``reason`` (a code) with ``detail`` (words); returns the row."""
        self.status, self.reason, self.detail = REJECTED, reason, detail
        return self

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class PanelRow(FigureRow):
    """One panel of a compound figure (``corpus build --unit panel|both``): a crop of its parent's normalised
    image, keyed ``<parent key>_p<NN>`` (NN from 01 in reading order), with the parent's article fields.

    ``caption`` is the panel's text (shared caption + its own subcaption); ``box`` is in the parent's original
    pixels; ``alignment`` says how the text was found (see ``shards.PANEL_FIELDS``).
    """

    parent: str = ""
    box: list[int] | None = None
    panel_label: str | None = None
    subcaption: str | None = None
    alignment: str | None = None


CATALOG_SCHEMA = arrow_schema(CATALOG_FIELDS)
"""The catalog's columns: the record schema's catalog fields (``biomedclip.shards``), one per ``FigureRow`` field."""
PANEL_CATALOG_SCHEMA = arrow_schema(PANEL_CATALOG_FIELDS)
"""The panel catalog's columns: the figure catalog's, then the panel fields, one per ``PanelRow`` field."""


def work_schema(catalog: pa.Schema) -> pa.Schema:
    """A work batch's columns: the catalog's, plus ``final`` (False: a transient failure, retried by the next
    run), ``batch``, where the row's JPEG lies in the batch tar (``image_offset``, ``image_size``) and the JPEG's
    SHA-256 (``image_sha256``, checked before the image is copied into a shard or pack)."""
    extra = [("final", pa.bool_()), ("batch", pa.string()), ("image_offset", pa.int64()), ("image_size", pa.int64()),
             ("image_sha256", pa.string())]  # fmt: skip
    return pa.schema([*catalog, *(pa.field(name, kind) for name, kind in extra)])


WORK_SCHEMA = work_schema(CATALOG_SCHEMA)
PANEL_WORK_SCHEMA = work_schema(PANEL_CATALOG_SCHEMA)


def split_reason(reason: str, detail: str = "") -> tuple[str, str]:
    """``(code, detail)`` of a reason a source gave as ``"code: detail"`` (sources that set ``detail`` pass through)."""
    if detail:
        return reason, detail
    code, _, rest = reason.partition(":")
    return code.strip(), rest.strip()
