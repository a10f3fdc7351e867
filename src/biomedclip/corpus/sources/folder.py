"""Local folders: extracted article packages, loose JATS files, and package files (tarballs, zips) inside them.

A folder is walked in sorted order, without following symbolic links out of it. In each directory:

* a directory holding images and an article XML (``.nxml`` preferred, else one ``.xml``) is one package:
  its images are the media (names relative to that directory);
* otherwise every XML file in it is an article of its own, without media;
* a directory holding images but no XML is an image-only package: its figures come from a
  ``<PMCID>_figures_metadata.json`` file found anywhere under the root folder (a list of objects with
  ``figure_id``, ``label``, ``caption``, ``original_file_path``), else it is an article rejected with
  ``no_xml``;
* package files are read by ``package.read_package``; with ``defer_packages`` (a build) a package file whose
  name gives its PMCID is read later, where its article is processed (``package.deferred_package``), so the
  process that lists the folder never decompresses a package.

Symbolic links: a link that resolves inside the root folder is read like the file it names; a link that leaves
it is refused with reason ``symlink_outside_source`` (an image: that figure; an XML or package file, a linked
directory: an article-level rejection). Linked directories are never walked into.

Bounds (``SourceLimits``), as for package files: an XML or media file larger than ``max_member_bytes`` is refused
(``member_too_large``: an XML costs its article, an image its figure); the images an article's figures reference
are counted, in name order, against ``max_article_bytes`` less its XML's size, and those past that budget are
refused (``article_too_large``) without being read. Images no figure references are never read.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

from biomedclip.corpus.images import resolve_media
from biomedclip.corpus.records import Article, ArticleMeta, FigureRecord, MediaError
from biomedclip.corpus.sources.limits import SourceLimits
from biomedclip.corpus.sources.package import (
    deferred_package,
    is_image_name,
    is_package_name,
    is_xml_name,
    pmcid_in,
    read_package,
    referenced_media,
)
from biomedclip.corpus.sources.selection import Selection, select

FIGURE_METADATA_SUFFIX = "_figures_metadata.json"
OUTSIDE = "symlink_outside_source"


def _no_media(name: str) -> IO[bytes]:
    raise MediaError(f"missing_media: {name!r}: the article has no media")


def outside(path: Path, root: Path) -> bool:
    """Whether ``path`` (a link, or a path through one) resolves to somewhere outside ``root``."""
    return not path.resolve().is_relative_to(root.resolve())


def open_in_folder(
    folder: Path,
    names: frozenset[str],
    name: str,
    *,
    root: Path | None = None,
    max_bytes: int | None = None,
    refused: dict[str, str] | None = None,
) -> IO[bytes]:
    """A media file of ``folder``; refused when unlisted, named in ``refused`` (name -> ``"<reason>: <detail>"``),
    linked out of ``root`` (default ``folder``) or too big."""
    if name not in names:
        raise MediaError(f"missing_media: no media file {name!r} in {folder}")
    if refused and name in refused:
        raise MediaError(refused[name])
    path = folder / name
    if outside(path, root or folder):
        raise MediaError(f"{OUTSIDE}: {path} links to a file outside {root or folder}")
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise MediaError(f"member_too_large: {path} has {size} bytes (limit {max_bytes})")
        return path.open("rb")
    except OSError as error:
        raise MediaError(f"unreadable_media: {path}: {error}") from error


def _images(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() and is_image_name(p.name))


def _over_budget(folder: Path, wanted: set[str], root: Path, limits: SourceLimits, budget: int) -> dict[str, str]:
    """The ``wanted`` media past an article's byte ``budget`` (``article_too_large``), taken in name order; files
    that are refused anyway (too big, linked out of ``root``, unreadable) spend nothing."""
    refused = {}
    for name in sorted(wanted):
        path = folder / name
        try:
            size = path.stat().st_size
        except OSError:
            continue
        if size > limits.max_member_bytes or outside(path, root):
            continue
        if size > budget:
            refused[name] = f"article_too_large: {path} has {size} bytes, past the article's budget ({budget} left)"
        else:
            budget -= size
    return refused


def xml_article(
    path: Path, media_folder: Path | None = None, root: Path | None = None, limits: SourceLimits | None = None
) -> Article:
    """One JATS file as an article; its media are the images beside it when ``media_folder`` is given."""
    limits = limits or SourceLimits()
    media = _images(media_folder) if media_folder else []
    meta = ArticleMeta(pmcid=pmcid_in(path.name) or pmcid_in(path.parent.name) or "")
    if root is not None and outside(path, root):
        return Article(str(path), meta, None, media, _no_media, error=f"{OUTSIDE}: {path} links outside {root}")
    try:
        size = path.stat().st_size
        if size > limits.max_member_bytes:
            error = f"member_too_large: {path} has {size} bytes (limit {limits.max_member_bytes})"
            return Article(str(path), meta, None, media, _no_media, error=error)
        xml = path.read_bytes()
    except OSError as error:
        return Article(str(path), meta, None, media, _no_media, error=f"unreadable_xml: {error}")
    if not media_folder:
        return Article(str(path), meta, xml, media, _no_media)
    base = root or media_folder
    refused = _over_budget(
        media_folder, referenced_media(xml, media), base, limits, limits.max_article_bytes - len(xml)
    )
    opener = partial(
        open_in_folder, media_folder, frozenset(media), root=base, max_bytes=limits.max_member_bytes, refused=refused
    )
    return Article(str(path), meta, xml, media, opener)


def _figure_metadata(root: Path) -> dict[str, Path]:
    found = {}
    for folder, _, files in os.walk(root):
        for name in sorted(files):
            if name.endswith(FIGURE_METADATA_SUFFIX) and not outside(Path(folder) / name, root):
                found.setdefault(name.removesuffix(FIGURE_METADATA_SUFFIX).upper(), Path(folder) / name)
    return found


def image_only_article(
    folder: Path, metadata: Path | None, root: Path | None = None, limits: SourceLimits | None = None
) -> Article:
    """A package folder without XML; figures from its figure-metadata JSON, else an article-level rejection."""
    limits = limits or SourceLimits()
    media = _images(folder)
    pmcid = pmcid_in(folder.name) or f"file:{folder.name}"
    article = Article(str(folder), ArticleMeta(pmcid=pmcid), None, media, _no_media)
    if metadata is None:
        article.error = f"no_xml: {folder} has images but no article XML or figure metadata"
        return article
    try:
        size = metadata.stat().st_size
        if size > limits.max_member_bytes:
            article.error = f"member_too_large: {metadata} has {size} bytes (limit {limits.max_member_bytes})"
            return article
        entries = json.loads(metadata.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        article.error = f"bad_figure_metadata: {metadata}: {error}"
        return article
    article.figures = [_figure_from_metadata(entry, pmcid, str(metadata)) for entry in entries]
    wanted = {name for fig in article.figures if (name := resolve_media(fig.graphic, media))}
    refused = _over_budget(folder, wanted, root or folder, limits, limits.max_article_bytes - size)
    article.open_media = partial(
        open_in_folder, folder, frozenset(media), root=root, max_bytes=limits.max_member_bytes, refused=refused
    )
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


def _refused(path: Path, root: Path) -> Article:
    meta = ArticleMeta(pmcid=pmcid_in(path.name) or f"file:{path.name}")
    return Article(str(path), meta, None, [], _no_media, error=f"{OUTSIDE}: {path} links outside {root}")


@dataclass
class FolderSource:
    """Every package, JATS file and package file below a folder (or a single JATS file)."""

    path: Path
    selection: Selection = field(default_factory=Selection)
    limits: SourceLimits = field(default_factory=SourceLimits)
    defer_packages: bool = False

    @property
    def name(self) -> str:
        return str(self.path)

    def _walk(self) -> Iterator[Article]:
        if self.path.is_file():
            yield xml_article(self.path, limits=self.limits)
            return
        root, wants = self.path, self.selection.wants_pmcid
        read = deferred_package if self.defer_packages else read_package
        metadata = _figure_metadata(root)
        for top, dirs, names in sorted(os.walk(root), key=lambda entry: entry[0]):
            folder = Path(top)
            for linked in (folder / d for d in sorted(dirs) if (folder / d).is_symlink()):
                if outside(linked, root) and wants(pmcid_in(linked.name)):
                    yield _refused(linked, root)
            files = sorted(folder / n for n in names if (folder / n).is_file())
            xmls = [p for p in files if is_xml_name(p.name)]
            has_images = any(is_image_name(p.name) for p in files)
            if has_images and xmls:
                nxml = [p for p in xmls if p.name.lower().endswith(".nxml")]
                yield xml_article((nxml or xmls)[0], folder, root, self.limits)
            elif has_images:
                if wants(pmcid_in(folder.name)):
                    yield image_only_article(folder, metadata.get(pmcid_in(folder.name) or ""), root, self.limits)
            else:
                yield from (xml_article(p, root=root, limits=self.limits) for p in xmls if wants(pmcid_in(p.name)))
            for package in (p for p in files if is_package_name(p.name) and wants(pmcid_in(p.name))):
                if outside(package, root):
                    yield _refused(package, root)
                else:
                    yield read(package, self.limits)

    def articles(self) -> Iterator[Article]:
        return select(self._walk(), self.selection)
