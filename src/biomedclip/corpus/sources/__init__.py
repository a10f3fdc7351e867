"""Article sources behind one interface: ``open_source(spec, selection)`` returns a ``Source``.

Specs:

* ``s3://bucket[/prefix]``: the PMC Open Access layout on S3 (``s3.py``); endpoint from ``endpoint_url``, else
  ``BIOMEDCLIP_S3_ENDPOINT``, else boto3's own ``AWS_ENDPOINT_URL``; anonymous unless ``signed``; listed from
  the bucket's daily inventory or its prefixes (``s3_listing``: ``auto``, ``inventory``, ``prefixes``).
* ``imagefolder:PATH``: labelled image folders, captions from ``caption_template``.
* a package: a tarball (``.tar.gz``, ``.tgz``, ``.tar``, or any gzip/tar file; one legacy ``oa_package``) or a
  ``.zip`` (eLife's packages), read by ``package.py``.
* a folder: every extracted package, JATS file and package file below it.

A spec that names nothing readable raises ``SourceError``, an ``InputError`` (exit 2 on the command line).
* a ``.xml``/``.nxml`` file: one article.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from biomedclip.corpus.records import Article, Source
from biomedclip.corpus.sources.folder import FolderSource
from biomedclip.corpus.sources.imagefolder import DEFAULT_CAPTION_TEMPLATE, ImageFolderSource
from biomedclip.corpus.sources.limits import SourceLimits
from biomedclip.corpus.sources.package import PackageSource, is_package_name
from biomedclip.corpus.sources.s3 import S3Source
from biomedclip.corpus.sources.selection import Selection, parse_licenses, read_pmcids
from biomedclip.errors import InputError
from biomedclip.labelled_folders import HashSplit

__all__ = [
    "FolderSource",
    "ImageFolderSource",
    "PackageSource",
    "S3Source",
    "Selection",
    "SourceError",
    "SourceLimits",
    "open_source",
    "parse_licenses",
    "read_pmcids",
    "relative_to_root",
    "source_root",
]

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"


class SourceError(InputError):
    """A source spec that names nothing readable."""


def _is_package_file(path: Path) -> bool:
    if is_package_name(path.name):
        return True
    with path.open("rb") as handle:
        head = handle.read(512)
    return head.startswith((GZIP_MAGIC, ZIP_MAGIC)) or head[257:262] == b"ustar"


def source_root(source: Source) -> str:
    """The local folder a source's article paths are made relative to: the folder a folder or image-folder
    source reads, the folder holding a single file source; "" for ``s3://`` sources (their keys are kept)."""
    path = getattr(source, "path", None)
    if not isinstance(path, Path):
        return ""
    return str(path.parent if path.is_file() else path)


def relative_to_root(article: Article, root: str) -> Article:
    """The article with ``source`` relative to ``root`` (POSIX separators) and ``root`` recorded, so that the
    rows made from it name no path of the machine that read it (``records.strip_root`` for their messages)."""
    if not root:
        return article
    source = Path(article.source)
    if source.is_relative_to(root):
        article.source = source.relative_to(root).as_posix() if source != Path(root) else source.name
    article.root = root
    return article


def open_source(
    spec: str,
    selection: Selection | None = None,
    *,
    endpoint_url: str | None = None,
    signed: bool = False,
    caption_template: str = DEFAULT_CAPTION_TEMPLATE,
    imagefolder_split: HashSplit | None = None,
    class_names: Mapping[str, str] | None = None,
    limits: SourceLimits | None = None,
    s3_listing: str = "auto",
    defer_packages: bool = False,
) -> Source:
    """The source a spec names (see the module docstring); raises ``SourceError`` when it names nothing.

    ``imagefolder_split`` sets the train/val/test ratios of labelled folders without split folders (default
    70/10/20, the same as ``eval``'s) and ``class_names`` their class folder -> caption text map; a folder in
    neither labelled layout raises ``InputError``.
    ``defer_packages``: package files in a folder are read where their article is processed (``build``'s
    workers), not while listing.
    """
    selection = selection or Selection()
    limits = limits or SourceLimits()
    if spec.startswith("s3://"):
        bucket, _, prefix = spec.removeprefix("s3://").partition("/")
        if not bucket:
            raise SourceError(f"no bucket in {spec!r}")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        endpoint = endpoint_url or os.environ.get("BIOMEDCLIP_S3_ENDPOINT") or None
        return S3Source(
            bucket, prefix, selection, endpoint_url=endpoint, signed=signed, limits=limits, listing=s3_listing
        )
    if spec.startswith("imagefolder:"):
        path = Path(spec.removeprefix("imagefolder:"))
        if not path.is_dir():
            raise SourceError(f"image folder not found: {path}")
        return ImageFolderSource(path, caption_template, selection, imagefolder_split or HashSplit(), class_names)
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path, selection, limits, defer_packages)
    if not path.is_file():
        raise SourceError(f"source not found: {spec}")
    if path.name.lower().endswith((".xml", ".nxml")):
        return FolderSource(path, selection, limits)
    try:
        is_package = _is_package_file(path)
    except OSError as error:
        raise SourceError(f"cannot read {spec}: {error}") from error
    if is_package:
        return PackageSource(path, selection, limits)
    raise SourceError(f"not a JATS file, tarball, zip, folder, s3:// or imagefolder: spec: {spec}")
