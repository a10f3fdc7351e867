"""Phase 1 of a build: the per-article work, and the work store that makes builds resumable.

``read_article`` (in the reader) turns a source's ``Article`` into a picklable ``ArticlePayload``: the figure
records and the bytes of each figure's resolved image file. ``process_payload`` (in a worker, local process
or Ray) decodes and filters each figure and returns an ``ArticleResult``. ``WorkStore`` keeps one result file
per article version, written atomically, so a rerun skips the articles already done.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biomedclip.corpus.filters import FilterConfig, caption_reason, image_reason
from biomedclip.corpus.images import ImageConfig, ImageRejected, process_image, resolve_media
from biomedclip.corpus.jats import figures_of
from biomedclip.corpus.records import Article, ArticleMeta, FigureRecord, MediaError, TransientMediaError
from biomedclip.corpus.tokens import count_tokens


@dataclass(frozen=True)
class WorkConfig:
    """Everything the per-article work depends on (its hash names the work store)."""

    image: ImageConfig = field(default_factory=ImageConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    tokenizer_file: str | None = None  # tokenizer.json counting caption tokens; None: bundled BERT WordPiece

    def digest(self) -> str:
        """A short stable hash of this configuration."""
        return hashlib.sha256(json.dumps(_asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def _asdict(obj: Any) -> Any:
    from dataclasses import asdict

    return asdict(obj)


@dataclass
class ArticlePayload:
    """A picklable article: figure records plus, per resolved image name, its bytes or the error reading it."""

    source: str
    meta: ArticleMeta
    figures: list[FigureRecord]
    media: dict[str, bytes] = field(default_factory=dict)
    media_errors: dict[str, str] = field(default_factory=dict)
    media_names: frozenset[str] = frozenset()
    source_error: bool = False

    @property
    def store_name(self) -> str:
        """The work-store file name of this article version."""
        return article_store_name(self.meta, self.source)


def article_store_name(meta: ArticleMeta, source: str) -> str:
    """``PMC123.v2`` (or a hash of the source when the PMCID is unknown), safe as a file name."""
    base = f"{meta.pmcid}.v{meta.version if meta.version is not None else 0}" if meta.pmcid else ""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in base)
    return safe or "unknown-" + hashlib.sha1(source.encode()).hexdigest()[:16]


@dataclass
class ArticleResult:
    """Per-figure catalog rows (accepted or rejected) and the JPEG bytes of the accepted figures, by key."""

    name: str
    rows: list[dict[str, Any]]
    images: dict[str, bytes]
    persist: bool = True

    def to_bytes(self) -> bytes:
        """Serialise as an uncompressed tar: ``rows.json`` then ``<key>.jpg`` members."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in [("rows.json", json.dumps(self.rows, sort_keys=True).encode())] + [
                (f"{k}.jpg", v) for k, v in sorted(self.images.items())
            ]:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, name: str, data: bytes, *, with_images: bool = True) -> ArticleResult:
        """Inverse of ``to_bytes``; ``with_images=False`` reads only the rows."""
        rows: list[dict[str, Any]] = []
        images: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                payload = tar.extractfile(member)
                if payload is None:
                    continue
                if member.name == "rows.json":
                    rows = json.loads(payload.read())
                    if not with_images:
                        break
                elif member.name.endswith(".jpg"):
                    images[member.name[:-4]] = payload.read()
        return cls(name=name, rows=rows, images=images)


@dataclass(frozen=True)
class PackedResult:
    """An ``ArticleResult`` as the bytes of its work-store file, with the counts a progress bar needs."""

    name: str
    data: bytes
    persist: bool
    figures: int
    accepted: int

    @classmethod
    def of(cls, result: ArticleResult) -> PackedResult:
        accepted = sum(1 for row in result.rows if row["status"] == "accepted")
        return cls(result.name, result.to_bytes(), result.persist, len(result.rows), accepted)


def _split_reason(reason: str) -> tuple[str, str]:
    code, _, detail = reason.partition(":")
    return code.strip(), detail.strip()


def read_article(article: Article, config: WorkConfig | None = None) -> ArticlePayload:
    """Reader side: list the figures, resolve each accepted figure's image and read its bytes (never raises).

    A ``TransientMediaError`` marks the payload like a source error: its result is not stored as done.
    """
    max_caption_chars = (config or WorkConfig()).filters.max_caption_chars
    try:
        figures = figures_of(article, max_caption_chars)
    except Exception as exc:  # a bug or a source surprise must not stop the run
        figures = [_article_rejection(article, f"unreadable_article: {type(exc).__name__}: {exc}")]
    payload = ArticlePayload(
        source=article.source,
        meta=article.meta,
        figures=figures,
        media_names=frozenset(article.media),
        source_error=bool(article.error),
    )
    for fig in figures:
        if fig.status != "accepted":
            continue
        name = resolve_media(fig.graphic, article.media) or fig.graphic  # unresolved: let the source say why
        fig.image_path = name
        if name in payload.media or name in payload.media_errors:
            continue
        try:
            with article.open_media(name) as stream:
                payload.media[name] = stream.read()
        except MediaError as exc:
            payload.media_errors[name] = str(exc)
            payload.source_error = payload.source_error or isinstance(exc, TransientMediaError)
        except Exception as exc:  # e.g. a truncated gzip stream behind the media file
            payload.media_errors[name] = f"{type(exc).__name__}: {exc}"
    return payload


def _article_rejection(article: Article, reason: str) -> FigureRecord:
    meta = article.meta
    return FigureRecord(
        pmcid=meta.pmcid, fig_id="", label="", caption="", graphic="", source=article.source,
        version=meta.version, license=meta.license, status="rejected", reason=reason,
    )  # fmt: skip


def _unique_keys(figures: list[FigureRecord]) -> list[str]:
    keys, seen = [], set()
    for fig in figures:
        key, n = fig.key, 1
        while key in seen:
            n += 1
            key = f"{fig.key}-{n}"
        seen.add(key)
        keys.append(key)
    return keys


def _process_figure(fig: FigureRecord, payload: ArticlePayload, config: WorkConfig) -> tuple[dict, bytes | None]:
    row: dict[str, Any] = {}
    if fig.status != "accepted":
        row["reason"], row["detail"] = _split_reason(fig.reason)
        return row, None
    reason = caption_reason(fig.caption, config.filters)
    if reason:
        return {"status": "rejected", "reason": reason}, None
    if fig.image_path in payload.media_errors:
        detail = payload.media_errors[fig.image_path]
        code = detail.split(":", 1)[0]  # sources name the reason first: "member_too_large: ..."
        if code.isidentifier() and code.islower() and code != "missing_media":
            reason = code
        else:
            reason = "unreadable_image" if fig.image_path in payload.media_names else "missing_image"
        return {"status": "rejected", "reason": reason, "detail": detail}, None
    try:
        image = process_image(payload.media[fig.image_path], config.image)
    except ImageRejected as exc:
        return {"status": "rejected", "reason": exc.reason, "detail": exc.detail}, None
    row.update(
        width=image.width, height=image.height, orig_width=image.orig_width, orig_height=image.orig_height,
        sha256=image.sha256, phash=image.phash,
    )  # fmt: skip
    reason = image_reason(image.orig_width, image.orig_height, config.filters)
    if reason:
        row.update(status="rejected", reason=reason)
        return row, None
    return row, image.jpeg


def process_payload(payload: ArticlePayload, config: WorkConfig = WorkConfig()) -> ArticleResult:
    """Worker side: decode, resize and filter every figure of one article; one bad figure never costs another."""
    figures = payload.figures
    tokens = count_tokens([f.caption for f in figures], config.tokenizer_file)
    rows, images = [], {}
    for fig, key, n_tokens in zip(figures, _unique_keys(figures), tokens, strict=True):
        row = fig.to_json()
        row.update(key=key, caption_tokens=n_tokens, reason="", detail="")
        try:
            extra, jpeg = _process_figure(fig, payload, config)
        except Exception as exc:  # a bug on one figure must not lose the others
            extra = {"status": "rejected", "reason": "internal_error", "detail": f"{type(exc).__name__}: {exc}"}
            jpeg = None
        row.update(extra)
        if jpeg is not None:
            images[key] = jpeg
        rows.append(row)
    return ArticleResult(name=payload.store_name, rows=rows, images=images, persist=not payload.source_error)


def process_article(article: Article, config: WorkConfig = WorkConfig()) -> ArticleResult:
    """The whole per-article work in one process: ``process_payload(read_article(article))``."""
    return process_payload(read_article(article), config)


class WorkStore:
    """One result file per article version under ``root`` (``<2 hex>/<name>.tar``), each written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob("*/*.tmp*"):
            stale.unlink()

    def path(self, name: str) -> Path:
        return self.root / hashlib.sha1(name.encode()).hexdigest()[:2] / f"{name}.tar"

    def __contains__(self, name: str) -> bool:
        return self.path(name).is_file()

    def put(self, result: PackedResult) -> None:
        """Write ``result`` (temporary file, fsync, rename): after a crash it is either complete or absent."""
        path = self.path(result.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as fh:
            fh.write(result.data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def get(self, name: str, *, with_images: bool = True) -> ArticleResult:
        return ArticleResult.from_bytes(name, self.path(name).read_bytes(), with_images=with_images)
