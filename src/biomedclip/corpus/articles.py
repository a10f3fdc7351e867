"""The per-article work of phase 1: an ``Article`` from a source becomes its ``FigureRow``s and JPEGs.

``read_article`` (where the source can be read: the driver or a worker) turns an ``Article`` into a picklable
``ArticlePayload``: the figure records and the bytes of each referenced image. ``process_payload`` (in a
worker) decodes, resizes and filters each figure and returns an ``ArticleResult``. Never raises for bad input:
each problem is a rejected row with a reason code and a detail.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from biomedclip.corpus.filters import FilterConfig, caption_reason, image_reason
from biomedclip.corpus.images import ImageConfig, ImageRejected, ProcessedImage, process_image, resolve_media
from biomedclip.corpus.jats import figures_of
from biomedclip.corpus.panel_rows import figure_panels
from biomedclip.corpus.records import Article, ArticleMeta, FigureRecord, MediaError, TransientMediaError, strip_root
from biomedclip.corpus.rows import ACCEPTED, WORK_SCHEMA, FigureRow, PanelRow, split_reason
from biomedclip.corpus.tokens import count_tokens

TRANSIENT_ERROR = "transient_error"
UNITS = ("figure", "panel", "both")
"""The samples a build makes: figures, panels (single figures kept whole), or both (panels of compound figures)."""


@dataclass(frozen=True)
class WorkConfig:
    """Everything the per-article work depends on (its hash names the work store).

    ``unit`` is ``BuildConfig.unit``, copied here by the build (not a setting of its own): with ``panel`` or
    ``both`` the workers also split each accepted figure into panels (``panel_rows``).
    """

    image: ImageConfig = field(default_factory=ImageConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    tokenizer_file: str | None = None  # tokenizer.json counting caption tokens; None: bundled BERT WordPiece
    unit: str = field(default="figure", metadata={"setting": False})
    fingerprints: str = (
        "content-phash+thumb8+pixel-sha256"  # what phase 1 stores for dedup (a change reprocesses the work)
    )

    def digest(self) -> str:
        """A short stable hash of this configuration and of the work rows' columns, so that a build never reads
        a work store written with another row schema (a field added since: its articles are processed again).
        Figure-only work keeps the hash it had before units."""
        values = asdict(self)
        if self.unit == "figure":
            del values["unit"]
        columns = [(column.name, str(column.type)) for column in WORK_SCHEMA]
        return hashlib.sha256(json.dumps([values, columns], sort_keys=True).encode()).hexdigest()[:12]


def _safe(text: str, extra: str = "-_") -> str:
    return "".join(c if c.isalnum() or c in extra else "_" for c in text)


def article_key(meta: ArticleMeta, source: str) -> str:
    """The article's key: its PMCID (or the source's fallback id), else a hash of where it came from."""
    return _safe(meta.pmcid or "") or "unknown-" + hashlib.sha1(source.encode()).hexdigest()[:16]


def article_name(meta: ArticleMeta, source: str) -> str:
    """The article version's name in the work store: ``<key>.v<version>``."""
    return f"{article_key(meta, source)}.v{meta.version or 0}"


@dataclass
class ArticlePayload:
    """A picklable article: figure records plus, per resolved image name, its bytes or the error reading it."""

    source: str
    meta: ArticleMeta
    figures: list[FigureRecord]
    media: dict[str, bytes] = field(default_factory=dict)
    media_errors: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (reason, detail)
    transient: bool = False  # a source or media read failed for a reason that may pass: retried next run
    root: str = ""  # the local folder ``source`` is relative to: removed from every path the rows mention

    @property
    def name(self) -> str:
        return article_name(self.meta, self.source)


@dataclass
class ArticleResult:
    """The rows of one article and the JPEG of each accepted figure, by key; ``final`` False: retry next run.

    With panels (``WorkConfig.unit`` ``panel`` or ``both``), also the panel rows of its figures and their crops.
    """

    name: str
    rows: list[FigureRow]
    images: dict[str, bytes]
    final: bool = True
    panel_rows: list[PanelRow] = field(default_factory=list)
    panel_images: dict[str, bytes] = field(default_factory=dict)


def read_article(article: Article, config: WorkConfig | None = None) -> ArticlePayload:
    """Reader side: list the figures, resolve each accepted figure's image and read its bytes (never raises).

    A source names the reason first in its ``MediaError`` (``"member_too_large: ..."``); that code is kept.
    """
    max_caption_chars = (config or WorkConfig()).filters.max_caption_chars
    try:
        figures = figures_of(article, max_caption_chars)
    except Exception as exc:  # a bug or a source surprise must not stop the run
        figures = [_article_rejection(article, "unreadable_article", f"{type(exc).__name__}: {exc}")]
    payload = ArticlePayload(source=article.source, meta=article.meta, figures=figures, root=article.root)
    payload.transient = bool(article.error)  # the source could not read it this time (truncated, md5): retry
    names = set(article.media)
    for fig in figures:
        if fig.status != ACCEPTED:
            continue
        name = resolve_media(fig.graphic, article.media) or fig.graphic  # unresolved: let the source say why
        fig.image_path = name
        if name in payload.media or name in payload.media_errors:
            continue
        code = "unreadable_image" if name in names else "missing_image"
        try:
            with article.open_media(name) as stream:
                payload.media[name] = stream.read()
        except TransientMediaError as exc:
            payload.media_errors[name] = _media_reason(exc, TRANSIENT_ERROR)
            payload.transient = True
        except MediaError as exc:
            payload.media_errors[name] = _media_reason(exc, code)
        except Exception as exc:  # e.g. a truncated gzip stream behind the media file
            payload.media_errors[name] = (code, f"{type(exc).__name__}: {exc}")
    return payload


def _media_reason(error: MediaError, fallback: str) -> tuple[str, str]:
    """``(reason, detail)`` of a source's media error: its leading code when it names one, else ``fallback``."""
    text = str(error)
    code, sep, detail = text.partition(":")
    if sep and code.isidentifier() and code.islower() and code != "missing_media":
        return code, detail.strip()
    return fallback, text


def _article_rejection(article: Article, reason: str, detail: str) -> FigureRecord:
    meta = article.meta
    return FigureRecord(
        pmcid=meta.pmcid or "", fig_id="", label="", caption="", graphic="", source=article.source,
        version=meta.version, license=meta.license, status="rejected", reason=reason, detail=detail,
    )  # fmt: skip


def unique_keys(base: str, figures: list[FigureRecord]) -> list[str]:
    """``<base>_<fig id or graphic>`` per figure, made unique with ``-2``, ``-3``... (linear in the figures)."""
    keys: list[str] = []
    taken: set[str] = set()
    next_n: dict[str, int] = defaultdict(lambda: 2)
    for fig in figures:
        stem = _safe(f"{base}_{fig.fig_id or fig.graphic}")
        key = stem
        while key in taken:
            key = f"{stem}-{next_n[stem]}"
            next_n[stem] += 1
        taken.add(key)
        keys.append(key)
    return keys


def _row(fig: FigureRecord, key: str, article: str, root: str) -> FigureRow:
    reason, detail = split_reason(fig.reason, fig.detail)
    return FigureRow(
        key=key, article=article, pmcid=fig.pmcid or "", fig_id=fig.fig_id, label=fig.label, caption=fig.caption,
        graphic=fig.graphic, source=strip_root(fig.source, root), status=fig.status, reason=reason,
        detail=strip_root(detail, root), version=fig.version, graphics=list(fig.graphics),
        image_path=fig.image_path, license=fig.license, journal=fig.journal,
        year=fig.year, pmid=fig.pmid, doi=fig.doi, split=fig.split, class_name=fig.class_name,
        inline_references=list(fig.inline_references),
    )  # fmt: skip


def _process_figure(
    row: FigureRow, payload: ArticlePayload, config: WorkConfig, decoded: dict[str, ProcessedImage | ImageRejected]
) -> bytes | None:
    """The figure's JPEG, or None with ``row`` rejected; ``decoded`` holds each image of the article processed
    once, for every figure that names it (one large image named by thousands of figures is decoded once)."""
    reason = caption_reason(row.caption, config.filters)
    if reason:
        limit = config.filters.max_caption_chars
        if len(row.caption) > limit:  # a mis-tagged body or a hostile caption: keep a bounded prefix
            row.detail, row.caption = f"{len(row.caption)} characters", row.caption[:limit]
        row.reject(reason, row.detail)
        return None
    if row.image_path in payload.media_errors:
        reason, detail = payload.media_errors[row.image_path]
        row.reject(reason, strip_root(detail, payload.root))
        return None
    if row.image_path not in decoded:
        try:
            decoded[row.image_path] = process_image(payload.media[row.image_path], config.image)
        except ImageRejected as exc:
            decoded[row.image_path] = exc
    image = decoded[row.image_path]
    if isinstance(image, ImageRejected):
        row.reject(image.reason, image.detail)
        return None
    row.width, row.height, row.orig_width, row.orig_height = (
        image.width,
        image.height,
        image.orig_width,
        image.orig_height,
    )
    row.sha256, row.phash, row.thumb = image.sha256, image.phash, image.thumb
    row.pixel_sha256 = image.pixel_sha256
    reason = image_reason(image.orig_width, image.orig_height, config.filters)
    if reason:
        row.reject(reason, f"{image.orig_width}x{image.orig_height}")
        return None
    return image.jpeg


def process_payload(payload: ArticlePayload, config: WorkConfig = WorkConfig()) -> ArticleResult:
    """Worker side: decode, resize and filter every figure of one article; one bad figure never costs another.

    Captions are tokenised (for the report) only for the figures that pass every filter, normalised and
    therefore at most ``max_caption_chars`` long.
    """
    base = article_key(payload.meta, payload.source)
    rows, images = [], {}
    decoded: dict[str, ProcessedImage | ImageRejected] = {}
    for fig, key in zip(payload.figures, unique_keys(base, payload.figures), strict=True):
        row = _row(fig, key, base, payload.root)
        if row.status == ACCEPTED:
            try:
                jpeg = _process_figure(row, payload, config, decoded)
            except Exception as exc:  # a bug on one figure must not lose the others
                row.reject("internal_error", strip_root(f"{type(exc).__name__}: {exc}", payload.root))
                jpeg = None
            if jpeg is not None:
                images[key] = jpeg
        rows.append(row)
    result = ArticleResult(name=payload.name, rows=rows, images=images, final=not payload.transient)
    if config.unit != "figure":
        for row in rows:
            if row.key in images:
                found, crops = figure_panels(row, images[row.key], config.image, config.filters,
                                             keep_single=config.unit == "panel")  # fmt: skip
                result.panel_rows += found
                result.panel_images.update(crops)
    for kept in (rows, result.panel_rows):
        accepted = [r for r in kept if r.status == ACCEPTED]
        counts = count_tokens([" ".join(r.caption.split()) for r in accepted], config.tokenizer_file)
        for row, n_tokens in zip(accepted, counts, strict=True):
            row.caption_tokens = n_tokens
    return result


def process_article(item: Article | ArticlePayload, config: WorkConfig) -> ArticleResult:
    """The whole per-article work: read it (when not read yet), then process it."""
    return process_payload(read_article(item.loaded(), config) if isinstance(item, Article) else item, config)
