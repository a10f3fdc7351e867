"""Local folders: extracted article packages, loose JATS files, and tarballs found inside them.

A folder is walked in sorted order. In each directory:

* a directory holding images and an article XML (``.nxml`` preferred, else one ``.xml``) is one package:
  its images are the media (names relative to that directory);
* otherwise every XML file in it is an article of its own, without media;
* a directory holding images but no XML is an image-only package: its figures come from a
  ``<PMCID>_figures_metadata.json`` file found anywhere under the root folder (a list of objects with
  ``figure_id``, ``label``, ``caption``, ``original_file_path``), else it is an article rejected with
  ``no_xml``;
* tarballs are read by ``TarballSource``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

from biomedclip.corpus.records import Article, ArticleMeta, FigureRecord, MediaError
from biomedclip.corpus.sources.local import is_image_name, is_xml_name, pmcid_in, select
from biomedclip.corpus.sources.selection import Selection
from biomedclip.corpus.sources.tarball import DEFAULT_MAX_MEMBER_BYTES, is_tarball_name, read_package

FIGURE_METADATA_SUFFIX = "_figures_metadata.json"


def _no_media(name: str) -> IO[bytes]:
    raise MediaError(f"missing media file {name!r}: the article has no media")


def open_in_folder(folder: Path, names: frozenset[str], name: str) -> IO[bytes]:
    if name not in names:
        raise MediaError(f"missing media file {name!r} in {folder}")
    try:
        return (folder / name).open("rb")
    except OSError as error:
        raise MediaError(f"cannot read {folder / name}: {error}") from error


def xml_article(path: Path, media_folder: Path | None = None) -> Article:
    """One JATS file as an article; its media are the images beside it when ``media_folder`` is given."""
    media = (
        sorted(p.name for p in media_folder.iterdir() if p.is_file() and is_image_name(p.name)) if media_folder else []
    )
    opener = partial(open_in_folder, media_folder, frozenset(media)) if media_folder else _no_media
    meta = ArticleMeta(pmcid=pmcid_in(path.name) or pmcid_in(path.parent.name) or "")
    try:
        xml = path.read_bytes()
    except OSError as error:
        return Article(str(path), meta, None, media, opener, error=f"unreadable_xml: {error}")
    return Article(str(path), meta, xml, media, opener)


def _figure_metadata(root: Path) -> dict[str, Path]:
    return {
        p.name.removesuffix(FIGURE_METADATA_SUFFIX).upper(): p for p in sorted(root.rglob(f"*{FIGURE_METADATA_SUFFIX}"))
    }


def image_only_article(folder: Path, metadata: Path | None) -> Article:
    """A package folder without XML; figures from its figure-metadata JSON, else an article-level rejection."""
    media = sorted(p.name for p in folder.iterdir() if p.is_file() and is_image_name(p.name))
    pmcid = pmcid_in(folder.name) or ""
    article = Article(
        str(folder), ArticleMeta(pmcid=pmcid), None, media, partial(open_in_folder, folder, frozenset(media))
    )
    if metadata is None:
        article.error = f"no_xml: {folder} has images but no article XML or figure metadata"
        return article
    try:
        entries = json.loads(metadata.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        article.error = f"bad_figure_metadata: {metadata}: {error}"
        return article
    article.figures = [_figure_from_metadata(entry, pmcid, str(metadata)) for entry in entries]
    return article


def _figure_from_metadata(entry: dict, pmcid: str, source: str) -> FigureRecord:
    path = PurePosixPath(str(entry.get("original_file_path") or ""))
    graphic = path.stem if path.name else ""
    record = FigureRecord(
        pmcid=str(entry.get("pmcid") or pmcid),
        fig_id=str(entry.get("figure_id") or ""),
        label=" ".join(html.unescape(str(entry.get("label") or "")).split()),
        caption=" ".join(html.unescape(str(entry.get("caption") or "")).split()),
        graphic=graphic,
        graphics=[graphic] if graphic else [],
        source=source,
    )
    if not record.caption:
        record.status, record.reason = "rejected", "no_caption"
    elif not record.graphic:
        record.status, record.reason = "rejected", "no_graphic"
    return record


@dataclass
class FolderSource:
    """Every package, JATS file and tarball below a folder (or a single JATS file)."""

    path: Path
    selection: Selection = field(default_factory=Selection)
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES

    @property
    def name(self) -> str:
        return str(self.path)

    def _walk(self) -> Iterator[Article]:
        if self.path.is_file():
            yield xml_article(self.path)
            return
        metadata = _figure_metadata(self.path)
        for folder in sorted([self.path, *(p for p in self.path.rglob("*") if p.is_dir())]):
            files = sorted(p for p in folder.iterdir() if p.is_file())
            xmls = [p for p in files if is_xml_name(p.name)]
            has_images = any(is_image_name(p.name) for p in files)
            if has_images and xmls:
                nxml = [p for p in xmls if p.name.lower().endswith(".nxml")]
                yield xml_article((nxml or xmls)[0], folder)
            elif has_images:
                if self.selection.wants_pmcid(pmcid_in(folder.name)):
                    yield image_only_article(folder, metadata.get(pmcid_in(folder.name) or ""))
            else:
                yield from (xml_article(p) for p in xmls if self.selection.wants_pmcid(pmcid_in(p.name)))
            for tarball in (p for p in files if is_tarball_name(p.name)):
                if self.selection.wants_pmcid(pmcid_in(tarball.name)):
                    yield read_package(tarball, self.max_member_bytes)

    def articles(self) -> Iterator[Article]:
        return select(self._walk(), self.selection)
