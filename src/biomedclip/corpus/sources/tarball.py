"""Legacy PMC ``oa_package`` tarballs (``PMCxxxx.tar.gz``), read as a stream, never extracted to disk.

Only the article XML (``.nxml``, else ``.xml``) and image members are kept, in memory; other members (PDF,
supplements) are skipped unread. Unsafe members never become media: absolute or ``..`` paths, symbolic and
hard links, devices, and members larger than ``max_member_bytes``; asking for one raises ``MediaError`` with
the reason. A truncated or corrupt archive yields what was read before the damage: the article with its XML
and the media read so far (later media raise ``MediaError`` naming the truncation), or, without XML, an
article whose ``error`` says why.
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from biomedclip.corpus.records import Article, ArticleMeta
from biomedclip.corpus.sources.local import bytes_opener, is_image_name, is_xml_name, pmcid_in, select
from biomedclip.corpus.sources.selection import Selection

DEFAULT_MAX_MEMBER_BYTES = 256 * 1024 * 1024
READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


def is_tarball_name(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(".tgz") or ".tar" in lower


def _unsafe(member: tarfile.TarInfo, max_member_bytes: int) -> str | None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        return f"unsafe tar member path {member.name!r}"
    if member.issym() or member.islnk():
        return f"tar member {member.name!r} is a link"
    if not member.isfile():
        return f"tar member {member.name!r} is not a regular file"
    if member.size > max_member_bytes:
        return f"tar member {member.name!r} is oversized ({member.size} > {max_member_bytes} bytes)"
    return None


def read_package(path: Path, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> Article:
    """Read one ``oa_package`` tarball into an ``Article`` (media names are relative to the package folder)."""
    xml: bytes | None = None
    xml_name = ""
    files: dict[str, bytes] = {}
    problems: dict[str, str] = {}
    error: str | None = None
    top = ""
    try:
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                name = member.name
                parts = PurePosixPath(name).parts
                top = top or (parts[0] if len(parts) > 1 else "")
                relative = "/".join(parts[1:]) if len(parts) > 1 else name
                if not (is_xml_name(name) or is_image_name(name)):
                    continue
                reason = _unsafe(member, max_member_bytes)
                if reason:
                    problems[relative] = problems.setdefault(PurePosixPath(name).name, reason)
                    continue
                handle = archive.extractfile(member)
                data = handle.read() if handle else b""
                if is_image_name(name):
                    files[relative] = data
                elif xml is None or (name.lower().endswith(".nxml") and not xml_name.lower().endswith(".nxml")):
                    xml, xml_name = data, relative
    except READ_ERRORS as exc:
        error = f"truncated_tarball: {path.name}: {exc}"
    pmcid = pmcid_in(path.name) or pmcid_in(top) or ""
    meta = ArticleMeta(
        pmcid=pmcid, extra={"xml_name": xml_name, "tar_error": error} if error else {"xml_name": xml_name}
    )
    if error:
        problems = {**problems, "*": error}
    opener = bytes_opener(files, problems)
    if xml is None:
        reason = error or f"no_xml: {path.name} holds no .nxml/.xml member"
        return Article(source=str(path), meta=meta, xml=None, media=sorted(files), open_media=opener, error=reason)
    return Article(source=str(path), meta=meta, xml=xml, media=sorted(files), open_media=opener)


@dataclass
class TarballSource:
    """The article of one tarball (folders of tarballs are read by ``FolderSource``)."""

    path: Path
    selection: Selection = field(default_factory=Selection)
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES

    @property
    def name(self) -> str:
        return str(self.path)

    def _read(self) -> Iterator[Article]:
        if self.selection.wants_pmcid(pmcid_in(self.path.name)):
            yield read_package(self.path, self.max_member_bytes)

    def articles(self) -> Iterator[Article]:
        return select(self._read(), self.selection)
