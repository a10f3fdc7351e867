"""Article packages: PMC ``oa_package`` tarballs (``PMCxxxx.tar.gz``) and publisher zips (eLife), never extracted.

A package holds one article XML (``.nxml`` preferred, else the first ``.xml``), its images and other files
(PDF, supplements). Reading follows the same rules for both formats:

* Only the XML and the images its figures reference are read (``referenced_media``), in memory; every other
  member is skipped unread. A tarball is streamed twice (once for the XML and the member list, once for the
  referenced images), so memory stays bounded by ``SourceLimits`` whatever the archive holds.
* Unsafe members never become media: absolute or ``..`` paths (``unsafe_member_path``), symbolic and hard
  links (``link_member``), devices and folders (``not_a_regular_file``), members over ``max_member_bytes``
  (``member_too_large``) and members past the article's ``max_article_bytes`` (``article_too_large``). They
  stay in ``Article.media`` so that a figure naming one is rejected with that reason (``MediaError`` message
  ``"<reason>: <detail>"``), never as a missing image and never replaced by a thumbnail.
* A truncated or corrupt archive (``truncated_archive``) is a transient failure: media not read whole raise
  ``TransientMediaError`` (so is a ``.gif`` thumbnail, whose full-size twin may have been cut off), and
  without its XML the article carries ``error`` and is not stored as done, so the next run tries again.
* Media names are relative to the XML's folder (``PMC123/gr1.jpg`` -> ``gr1.jpg``).
* Key: the PMCID in the file name or top folder, else the one in the XML, else ``jats.article_key``.
"""

from __future__ import annotations

import io
import posixpath
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

from biomedclip.corpus.images import EXTENSION_RANK, THUMBNAIL_EXTENSIONS, resolve_media
from biomedclip.corpus.jats import JatsError, article_info, article_key, articles_in, extract_figures, parse_xml
from biomedclip.corpus.records import Article, ArticleMeta, MediaError, TransientMediaError
from biomedclip.corpus.sources.limits import SourceLimits
from biomedclip.corpus.sources.selection import Selection, select

XML_SUFFIXES = (".nxml", ".xml")
IMAGE_SUFFIXES = EXTENSION_RANK
PMCID = re.compile(r"PMC\d+", re.I)
TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)
ZIP_ERRORS = (zipfile.BadZipFile, EOFError, zlib.error, OSError, NotImplementedError)
TRUNCATED = "truncated_archive"


def pmcid_in(name: str) -> str | None:
    """The first ``PMC<digits>`` in a file or folder name, upper-cased."""
    match = PMCID.search(name)
    return match.group(0).upper() if match else None


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def is_xml_name(name: str) -> bool:
    return name.lower().endswith(XML_SUFFIXES)


def is_tarball_name(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(".tgz") or ".tar" in lower


def is_zip_name(name: str) -> bool:
    return name.lower().endswith(".zip")


def is_package_name(name: str) -> bool:
    return is_tarball_name(name) or is_zip_name(name)


@dataclass
class MediaFiles:
    """An article's media in memory: bytes by name, and the reason each unreadable name cannot be read.

    ``open`` (picklable through ``partial``) is an ``Article.open_media``.
    """

    files: dict[str, bytes] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    transient: set[str] = field(default_factory=set)
    listed: set[str] = field(default_factory=set)
    truncated: str = ""

    def refuse(self, name: str, reason: str, *, transient: bool = False) -> None:
        self.problems.setdefault(name, reason)
        if transient:
            self.transient.add(name)

    def open(self, name: str) -> IO[bytes]:
        if name in self.files:
            if self.truncated and posixpath.splitext(name)[1].lower() in THUMBNAIL_EXTENSIONS:
                raise TransientMediaError(f"{TRUNCATED}: thumbnail {name!r} refused, its full-size file may be cut off")
            return io.BytesIO(self.files[name])
        if name in self.problems:
            error = TransientMediaError if name in self.transient else MediaError
            raise error(self.problems[name])
        if self.truncated:
            raise TransientMediaError(f"{TRUNCATED}: {name!r} not reached ({self.truncated})")
        if name in self.listed:
            raise MediaError(f"not_referenced: {name!r} was not read, no figure of the XML uses it")
        raise MediaError(f"missing_media: no media file {name!r}")


def member_problem(name: str, kind: str, size: int, limits: SourceLimits) -> str | None:
    """Why a member may not be read (``"<reason>: <detail>"``), or None. ``kind``: file, link or other."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        return f"unsafe_member_path: {name!r}"
    if kind == "link":
        return f"link_member: {name!r} is a link"
    if kind != "file":
        return f"not_a_regular_file: {name!r}"
    if size > limits.max_member_bytes:
        return f"member_too_large: {name!r} has {size} bytes (limit {limits.max_member_bytes})"
    return None


def referenced_media(xml: bytes, names: list[str]) -> set[str]:
    """The media files the figures of ``xml`` use (as ``work`` resolves them); empty when the XML is unreadable."""
    try:
        figures = extract_figures(xml)
    except JatsError:
        return set()
    return {name for fig in figures if (name := resolve_media(fig.graphic, names))}


def xml_key(xml: bytes | None, file_name: str) -> tuple[str, str | None]:
    """``(key, license)`` of a package's XML: ``jats.article_key`` with ``file_name`` as the last resort."""
    if xml is not None:
        try:
            found = articles_in(parse_xml(xml))
        except JatsError:
            found = []
        if found:
            info = article_info(found[0])
            return article_key(info, file_name), info.license
    return f"file:{file_name}", None


@dataclass
class _Listing:
    """What one pass over an archive found: the XML, every member's name and kind, and read errors."""

    xml: bytes | None = None
    xml_name: str = ""
    members: dict[str, str | None] = field(default_factory=dict)  # name -> problem (None: readable)
    sizes: dict[str, int] = field(default_factory=dict)
    error: str = ""

    def take_xml(self, name: str, data: bytes) -> None:
        if self.xml is None or (name.lower().endswith(".nxml") and not self.xml_name.lower().endswith(".nxml")):
            self.xml, self.xml_name = data, name


def _tar_kind(member: tarfile.TarInfo) -> str:
    return "link" if member.issym() or member.islnk() else "file" if member.isfile() else "other"


def _list_tar(path: Path, limits: SourceLimits) -> _Listing:
    listing = _Listing()
    try:
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                if not (is_xml_name(member.name) or is_image_name(member.name)):
                    continue
                problem = member_problem(member.name, _tar_kind(member), member.size, limits)
                listing.members[member.name], listing.sizes[member.name] = problem, member.size
                if problem is None and is_xml_name(member.name):
                    handle = archive.extractfile(member)
                    listing.take_xml(member.name, handle.read() if handle else b"")
    except TAR_ERRORS as exc:
        listing.error = f"{path.name}: {type(exc).__name__}: {exc}"
    return listing


def _read_tar(path: Path, wanted: set[str], media: MediaFiles, budget: int, relative) -> None:
    left = set(wanted)
    try:
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                if not left:
                    return
                if member.name not in left:
                    continue
                left.discard(member.name)
                if member.size > budget:
                    media.refuse(relative(member.name), f"article_too_large: {member.name!r} is past the budget")
                    continue
                handle = archive.extractfile(member)
                media.files[relative(member.name)] = handle.read() if handle else b""
                budget -= member.size
    except TAR_ERRORS as exc:
        media.truncated = media.truncated or f"{path.name}: {type(exc).__name__}: {exc}"
    for name in left:  # cut off, or gone between the two passes
        media.refuse(relative(name), f"{TRUNCATED}: {name!r} could not be read whole", transient=True)


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "link"
    return "other" if info.is_dir() or (stat.S_IFMT(mode) and not stat.S_ISREG(mode)) else "file"


def _read_zip(path: Path, limits: SourceLimits) -> tuple[_Listing, MediaFiles, Callable[[str], str]]:
    listing, media = _Listing(), MediaFiles()
    try:
        with zipfile.ZipFile(path) as archive:
            infos = {}
            for info in archive.infolist():
                if not (is_xml_name(info.filename) or is_image_name(info.filename)):
                    continue
                problem = member_problem(info.filename, _zip_kind(info), info.file_size, limits)
                listing.members[info.filename], listing.sizes[info.filename] = problem, info.file_size
                infos[info.filename] = info
                if problem is None and is_xml_name(info.filename):
                    try:
                        listing.take_xml(info.filename, archive.read(info))
                    except ZIP_ERRORS as exc:  # a member whose size or CRC lies: that member, not the archive
                        listing.members[info.filename] = f"corrupt_member: {info.filename!r}: {exc}"
            relative = _relative_to(listing.xml_name, listing.members)
            budget = limits.max_article_bytes - len(listing.xml or b"")
            for name in sorted(_wanted(listing, relative)):
                if infos[name].file_size > budget:
                    media.refuse(relative(name), f"article_too_large: {name!r} is past the budget")
                    continue
                try:
                    media.files[relative(name)] = archive.read(infos[name])
                except ZIP_ERRORS as exc:
                    media.refuse(relative(name), f"corrupt_member: {name!r}: {exc}")
                budget -= infos[name].file_size
    except ZIP_ERRORS as exc:
        listing.error = f"{path.name}: {type(exc).__name__}: {exc}"
        relative = _relative_to(listing.xml_name, listing.members)
    return listing, media, relative


def _relative_to(xml_name: str, members: Iterable[str] = ()):
    """Names relative to the XML's folder; without an XML, to the one top folder all members share, if any."""
    folder = posixpath.dirname(xml_name)
    if not xml_name:
        tops = {PurePosixPath(name).parts[0] if "/" in name else "" for name in members}
        folder = tops.pop() if len(tops) == 1 else ""
    prefix = f"{folder}/" if folder else ""
    return partial(_strip_prefix, prefix)


def _strip_prefix(prefix: str, name: str) -> str:
    return name[len(prefix) :] if prefix and name.startswith(prefix) else name


def _wanted(listing: _Listing, relative) -> set[str]:
    """Member names of the readable images the XML references."""
    if listing.xml is None:
        return set()
    images = {relative(n): n for n, problem in listing.members.items() if is_image_name(n)}
    referenced = referenced_media(listing.xml, sorted(images))
    return {images[r] for r in referenced if listing.members[images[r]] is None}


def read_package(path: Path, limits: SourceLimits | None = None) -> Article:
    """Read one package (tarball or zip) into an ``Article`` (see the module docstring)."""
    limits = limits or SourceLimits()
    if is_zip_name(path.name) or zipfile.is_zipfile(path):
        listing, media, relative = _read_zip(path, limits)
    else:
        listing, media = _list_tar(path, limits), MediaFiles()
        relative = _relative_to(listing.xml_name, listing.members)
        wanted = _wanted(listing, relative)
        if wanted:
            budget = limits.max_article_bytes - len(listing.xml or b"")
            _read_tar(path, wanted, media, budget, relative)
    if listing.error:
        media.truncated = media.truncated or listing.error
    for name, problem in listing.members.items():
        if problem is not None and is_image_name(name):
            media.refuse(relative(name), problem)
    names = sorted({relative(n) for n in listing.members if is_image_name(n)})
    media.listed = set(names)
    top = PurePosixPath(listing.xml_name).parts[0] if "/" in listing.xml_name else ""
    key, license_code = xml_key(listing.xml, path.name)
    pmcid = pmcid_in(path.name) or pmcid_in(top) or key
    meta = ArticleMeta(pmcid=pmcid, license=license_code, extra={"xml_name": listing.xml_name})
    opener = partial(MediaFiles.open, media)
    if listing.xml is None:
        if listing.error:
            reason = f"{TRUNCATED}: {listing.error}"
        else:
            reason = f"no_xml: {path.name} holds no readable .nxml/.xml member"
        return Article(str(path), meta, None, names, opener, error=reason)
    return Article(str(path), meta, listing.xml, names, opener)


def _not_read(name: str) -> IO[bytes]:
    raise MediaError(f"missing_media: {name!r}: the package was not read (load the article first)")


def deferred_package(path: Path, limits: SourceLimits) -> Article:
    """The article of a package whose file name gives its PMCID, read later by ``Article.loaded()`` (in a
    build's worker): listing it costs no read. Other packages are read now (their key is in the XML)."""
    pmcid = pmcid_in(path.name)
    if pmcid is None:
        return read_package(path, limits)
    return Article(str(path), ArticleMeta(pmcid=pmcid), None, [], _not_read, load=partial(read_package, path, limits))


@dataclass
class PackageSource:
    """The article of one package file (folders of packages are read by ``FolderSource``)."""

    path: Path
    selection: Selection = field(default_factory=Selection)
    limits: SourceLimits = field(default_factory=SourceLimits)

    @property
    def name(self) -> str:
        return str(self.path)

    def _read(self) -> Iterator[Article]:
        if self.selection.wants_pmcid(pmcid_in(self.path.name)):
            yield read_package(self.path, self.limits)

    def articles(self) -> Iterator[Article]:
        return select(self._read(), self.selection)
