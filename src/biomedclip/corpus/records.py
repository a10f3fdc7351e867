"""The records that flow between corpus stages: an article from a source, and one figure record per figure.

The figure record's JSON form is the contract of ``../shared/DESIGN.md``; ``FigureRecord.to_json`` writes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import IO, Any, Protocol

from biomedclip.corpus.licenses import license_group
from biomedclip.errors import RunError


@dataclass(frozen=True)
class ArticleMeta:
    """What a source knows about an article before its XML is parsed (S3 metadata JSON, file lists)."""

    pmcid: str
    version: int | None = None
    license: str | None = None
    is_retracted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Article:
    """One article from a source: its JATS XML, its metadata and a way to open its media files by name.

    ``media`` lists the article's media file names (relative, as in its package); ``open_media(name)`` returns
    a binary file object, after whatever integrity check the source can make (e.g. md5 for S3), and raises
    ``MediaError`` when the file is missing or corrupt. Sources that already know their figures (labelled
    image folders) set ``figures`` and leave ``xml`` as None; otherwise figures come from the JATS XML.
    A source that could not read the article itself (truncated tarball, md5 mismatch on the XML) sets ``error``
    to the rejection reason and leaves ``xml`` as None, so the article is recorded rather than lost.
    A source that defers reading (a package file, read where the article is processed) sets ``load``, which
    returns the article read; ``loaded()`` is what every consumer of XML, media or metadata beyond the key uses.
    ``root`` is the local folder ``source`` is relative to once a build or ``corpus figures`` made it so
    (``sources.relative_to_root``), so that no output names a path of the machine that built it; "" otherwise.
    """

    source: str
    meta: ArticleMeta
    xml: bytes | None
    media: list[str]
    open_media: Callable[[str], IO[bytes]]
    figures: list[FigureRecord] | None = None
    error: str | None = None
    load: Callable[[], Article] | None = None
    root: str = ""

    def loaded(self) -> Article:
        """The article read (itself unless its reading was deferred), with this article's ``source`` and ``root``."""
        if self.load is None:
            return self
        article = self.load()
        article.source, article.root = self.source, self.root
        return article


def strip_root(text: str, root: str) -> str:
    """``text`` with every mention of the folder ``root`` (as given or resolved) made relative to it: the paths
    below it lose the prefix, the folder itself becomes ``.``."""
    if not root or not text:
        return text
    for folder in dict.fromkeys([root, os.path.realpath(root)]):
        folder = folder.rstrip(os.sep)
        text = text.replace(folder + os.sep, "").replace(folder, ".")
    return text


class MediaError(Exception):
    """A media file that cannot be read: missing, truncated, md5 mismatch, unsafe path or oversized."""


@dataclass
class FigureRecord:
    """One figure as a source or the JATS reader lists it: the DESIGN.md contract, plus ``status``, ``reason``.

    The build turns it into a ``rows.FigureRow`` (the catalog's typed row).

    ``graphic`` is the href the image comes from; ``graphics`` lists every graphic href of the figure.
    """

    pmcid: str
    fig_id: str
    label: str
    caption: str
    graphic: str
    source: str = ""
    version: int | None = None
    image_path: str = ""
    license: str | None = None
    journal: str | None = None
    year: int | None = None
    pmid: str | None = None
    doi: str | None = None
    split: str | None = None
    status: str = "accepted"
    reason: str = ""  # a short code (``no_caption``); ``detail`` says why in words
    detail: str = ""
    graphics: list[str] = field(default_factory=list)
    class_name: str | None = None  # the class folder of an image from a labelled image folder
    inline_references: list[dict[str, Any]] = field(default_factory=list)  # references.InlineReference

    @property
    def key(self) -> str:
        """A WebDataset-safe sample key, unique per figure (no dots, which webdataset treats as extensions)."""
        raw = f"{self.pmcid}_{self.fig_id or self.graphic}"
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in raw)

    def to_json(self) -> dict[str, Any]:
        """The record's JSON object: its fields plus ``license_group`` (from ``license``)."""
        return {**asdict(self), "license_group": license_group(self.license)}


class Source(Protocol):
    """A source of articles: S3 prefixes, tarballs, folders or labelled image folders."""

    name: str

    def articles(self) -> Iterator[Article]: ...


class TransientMediaError(MediaError):
    """A media file that could not be read this time (network fault, throttling, truncated download).

    Unlike a plain ``MediaError`` (a definite verdict on the content), the article is not stored as done:
    the next run tries it again.
    """


class SourceListingError(RunError):
    """A source that cannot be listed completely (unreachable endpoint, throttled prefix, unreadable folder).

    A build stops on it (non-zero exit, message naming the source) and leaves the previous output untouched.
    """
