"""Article sources behind one interface: ``open_source(spec, selection)`` returns a ``Source``.

Specs:

* ``s3://bucket[/prefix]``: the PMC Open Access layout on S3 (``s3.py``); endpoint from ``endpoint_url``, else
  ``BIOMEDCLIP_S3_ENDPOINT``, else boto3's own ``AWS_ENDPOINT_URL``; anonymous unless ``signed``.
* ``imagefolder:PATH``: labelled image folders, captions from ``caption_template``.
* a tarball (``.tar.gz``, ``.tgz``, ``.tar``, or any gzip/tar file): one legacy ``oa_package``.
* a folder: every extracted package, JATS file and tarball below it.
* a ``.xml``/``.nxml`` file: one article.
"""

from __future__ import annotations

import os
from pathlib import Path

from biomedclip.corpus.records import Source
from biomedclip.corpus.sources.folder import FolderSource
from biomedclip.corpus.sources.imagefolder import DEFAULT_CAPTION_TEMPLATE, ImageFolderSource
from biomedclip.corpus.sources.s3 import S3Source
from biomedclip.corpus.sources.selection import Selection, license_class
from biomedclip.corpus.sources.tarball import TarballSource, is_tarball_name
from biomedclip.labelled_folders import HashSplit

__all__ = [
    "FolderSource",
    "ImageFolderSource",
    "S3Source",
    "Selection",
    "SourceError",
    "TarballSource",
    "license_class",
    "open_source",
]

GZIP_MAGIC = b"\x1f\x8b"


class SourceError(ValueError):
    """A source spec that names nothing readable."""


def _is_tarball_file(path: Path) -> bool:
    if is_tarball_name(path.name):
        return True
    with path.open("rb") as handle:
        head = handle.read(512)
    return head.startswith(GZIP_MAGIC) or head[257:262] == b"ustar"


def open_source(
    spec: str,
    selection: Selection | None = None,
    *,
    endpoint_url: str | None = None,
    signed: bool = False,
    caption_template: str = DEFAULT_CAPTION_TEMPLATE,
    imagefolder_split: HashSplit | None = None,
) -> Source:
    """The source a spec names (see the module docstring); raises ``SourceError`` when it names nothing.

    ``imagefolder_split`` sets the train/val/test ratios of labelled folders without split folders (default
    70/10/20, the same as ``eval``'s); a folder in neither labelled layout raises ``InputError``.
    """
    selection = selection or Selection()
    if spec.startswith("s3://"):
        bucket, _, prefix = spec.removeprefix("s3://").partition("/")
        if not bucket:
            raise SourceError(f"no bucket in {spec!r}")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        endpoint = endpoint_url or os.environ.get("BIOMEDCLIP_S3_ENDPOINT") or None
        return S3Source(bucket, prefix, selection, endpoint_url=endpoint, signed=signed)
    if spec.startswith("imagefolder:"):
        path = Path(spec.removeprefix("imagefolder:"))
        if not path.is_dir():
            raise SourceError(f"image folder not found: {path}")
        return ImageFolderSource(path, caption_template, selection, imagefolder_split or HashSplit())
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path, selection)
    if not path.is_file():
        raise SourceError(f"source not found: {spec}")
    if path.name.lower().endswith((".xml", ".nxml")):
        return FolderSource(path, selection)
    if _is_tarball_file(path):
        return TarballSource(path, selection)
    raise SourceError(f"not a JATS file, tarball, folder, s3:// or imagefolder: spec: {spec}")
