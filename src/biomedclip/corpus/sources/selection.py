"""Which articles a source yields: licence groups and names, retracted articles, PMCID lists and a limit."""

from __future__ import annotations

import csv
import dataclasses
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from biomedclip.corpus.jats import JatsError, article_info, article_key, articles_in, parse_xml
from biomedclip.corpus.licenses import LICENSE_GROUPS, NON_CC_CODES, license_code, license_group
from biomedclip.corpus.records import Article, ArticleMeta
from biomedclip.errors import InputError

ALL_LICENSES = "all"


def parse_licenses(value: str) -> frozenset[str]:
    """The licence groups and names a ``--license`` value lists (comma-separated): ``all``, a group of
    ``licenses.LICENSE_GROUPS`` or a licence name (``CC BY``, ``cc-by-nc``, ``CC0``, ``NO-CC CODE``...), as
    groups and normalised codes. Raises ``ValueError`` for an entry that is none of these."""
    wanted = set()
    for entry in (part.strip() for part in value.split(",")):
        code = license_code(entry) or next((c for c in NON_CC_CODES if c.lower() == entry.lower()), None)
        if entry.lower() in (ALL_LICENSES, *LICENSE_GROUPS):
            wanted.add(entry.lower())
        elif code is not None:
            wanted.add(code)
        else:
            raise ValueError(
                f"license must be all, {', '.join(LICENSE_GROUPS)} or a licence name (CC BY, CC BY-NC, CC0, "
                f"NO-CC CODE, ...), not {entry!r}"
            )
    return frozenset(wanted)


@dataclass(frozen=True)
class Selection:
    """Article selection. Defaults follow the paper (no license filter) but drop retracted articles.

    Attributes:
        license: ``all``, or licence groups and names, comma-separated (``parse_licenses``): ``commercial`` (CC0,
            CC BY, CC BY-SA, CC BY-ND, public domain), ``noncommercial`` (any NC), ``other`` (no licence, an
            unknown one, publisher terms), or names such as ``CC BY`` or ``CC BY-NC-ND``.
        include_retracted: keep articles flagged as retracted.
        pmcids: keep only these PMCIDs (``PMC123`` form; ``read_pmcids`` reads them from a file); None keeps all.
        limit: stop after this many selected articles; None for no limit.
    """

    license: str = "all"
    include_retracted: bool = False
    pmcids: frozenset[str] | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        parse_licenses(self.license)

    def wants_pmcid(self, pmcid: str | None) -> bool:
        """Whether an article with this PMCID may be selected (None: unknown yet, so maybe)."""
        return self.pmcids is None or pmcid is None or pmcid in self.pmcids

    def admits(self, meta: ArticleMeta) -> bool:
        """Whether an article with this metadata is selected (the limit is the source's job)."""
        if self.pmcids is not None and meta.pmcid not in self.pmcids:
            return False
        if meta.is_retracted and not self.include_retracted:
            return False
        wanted = parse_licenses(self.license)
        if ALL_LICENSES in wanted:
            return True
        code = license_code(meta.license) or (meta.license or "").strip().upper()
        return license_group(meta.license) in wanted or code in wanted


PMCID_VALUE = re.compile(r"(?:PMC)?(\d+)", re.I)
ACCESSION_COLUMN = "Accession ID"


def _pmcid(value: str) -> str | None:
    match = PMCID_VALUE.fullmatch(value.strip())
    return f"PMC{int(match.group(1))}" if match else None


def read_pmcids(path: Path) -> frozenset[str]:
    """The PMCIDs a ``--pmcids`` file names, as ``PMC<digits>``.

    Accepted: one ID per line (``PMC123`` or ``123``; blank lines and ``#`` comments skipped), or PMC's
    ``oa_file_list.csv`` (columns File, Article Citation, Accession ID, Last Updated, PMID, License: the
    ``Accession ID`` column; without its header row, the first field of each row that reads ``PMC<digits>``).
    Raises ``InputError`` for a line that is none of these, or a file that names no PMCID.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the PMCID list {path}: {error}") from error
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    found: set[str] = set()
    if lines and "," in lines[0]:
        rows = list(csv.reader(lines))
        column = next((i for i, name in enumerate(rows[0]) if name.strip() == ACCESSION_COLUMN), None)
        for number, row in enumerate(rows, start=1):
            if column is not None and number == 1:
                continue
            fields = row[column : column + 1] if column is not None else row
            candidates = (_pmcid(f) for f in fields if column is not None or f.strip().upper().startswith("PMC"))
            pmcid = next((p for p in candidates if p), None)
            if pmcid is None:
                raise InputError(f"{path}: row {number} has no PMCID: {','.join(row)[:80]!r}")
            found.add(pmcid)
    else:
        for number, line in enumerate(lines, start=1):
            pmcid = _pmcid(line)
            if pmcid is None:
                raise InputError(f"{path}: line {number} is not a PMCID (PMC123 or 123): {line.strip()[:80]!r}")
            found.add(pmcid)
    if not found:
        raise InputError(f"{path} names no PMCID")
    return frozenset(found)


def with_xml_metadata(article: Article) -> Article:
    """Fill the article's key and license from its XML where the source did not know them.

    The key is the PMCID, else ``jats.article_key`` (DOI, publisher id), else ``file:<source file name>``:
    never empty.
    """
    if article.meta.pmcid and (article.meta.license or article.xml is None):
        return article
    info = None
    if article.xml is not None:
        try:
            found = articles_in(parse_xml(article.xml))
        except JatsError:
            found = []
        info = article_info(found[0]) if found else None
    file_name = PurePosixPath(article.source.replace("\\", "/")).name or article.source
    key = article.meta.pmcid or (article_key(info, file_name) if info else f"file:{file_name}")
    meta = dataclasses.replace(article.meta, pmcid=key, license=article.meta.license or (info and info.license))
    return dataclasses.replace(article, meta=meta)


def select(articles: Iterable[Article], selection: Selection) -> Iterator[Article]:
    """Apply ``selection`` to articles whose metadata may only be known from their XML, up to the limit.

    Every article leaves with a non-empty key (``with_xml_metadata``). Articles a source could not read
    (``error`` set) are kept unless their PMCID is excluded, so that they are recorded as rejections.
    """
    count = 0
    for article in articles:
        if selection.limit is not None and count >= selection.limit:
            return
        if selection.license != ALL_LICENSES or not article.meta.pmcid:
            article = with_xml_metadata(article.loaded())
        if article.error:
            if not selection.wants_pmcid(article.meta.pmcid or None):
                continue
        elif not selection.admits(article.meta):
            continue
        count += 1
        yield article
