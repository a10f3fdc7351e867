"""Helpers shared by the local sources (tarballs, package folders, XML files)."""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Iterable, Iterator
from functools import partial
from typing import IO

from biomedclip.corpus.jats import JatsError, article_info, articles_in, parse_xml
from biomedclip.corpus.records import Article, MediaError
from biomedclip.corpus.sources.selection import Selection
from biomedclip.shards import IMAGE_EXTENSIONS

XML_SUFFIXES = (".nxml", ".xml")
IMAGE_SUFFIXES = tuple(f".{ext}" for ext in IMAGE_EXTENSIONS)
PMCID = re.compile(r"PMC\d+", re.I)


def pmcid_in(name: str) -> str | None:
    """The first ``PMC<digits>`` in a file or folder name, upper-cased."""
    match = PMCID.search(name)
    return match.group(0).upper() if match else None


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def is_xml_name(name: str) -> bool:
    return name.lower().endswith(XML_SUFFIXES)


def _open_bytes(files: dict[str, bytes], problems: dict[str, str], name: str) -> IO[bytes]:
    if name in files:
        return io.BytesIO(files[name])
    reason = problems.get(name)
    if reason is None:
        reason = f"missing media file {name!r}" + (f" ({problems['*']})" if "*" in problems else "")
    raise MediaError(reason)


def bytes_opener(files: dict[str, bytes], problems: dict[str, str] | None = None):
    """A picklable ``open_media`` over in-memory files; ``problems`` maps unreadable names to their reason."""
    return partial(_open_bytes, files, problems or {})


def with_xml_metadata(article: Article) -> Article:
    """Fill the article's pmcid and license from its XML where the source did not know them."""
    if article.xml is None or (article.meta.pmcid and article.meta.license):
        return article
    try:
        found = articles_in(parse_xml(article.xml))
    except JatsError:
        return article
    if not found:
        return article
    info = article_info(found[0])
    meta = dataclasses.replace(
        article.meta, pmcid=article.meta.pmcid or info.pmcid or "", license=article.meta.license or info.license
    )
    return dataclasses.replace(article, meta=meta)


def select(articles: Iterable[Article], selection: Selection) -> Iterator[Article]:
    """Apply ``selection`` to articles whose metadata may only be known from their XML, up to the limit.

    Articles a source could not read (``error`` set) are kept unless their PMCID is excluded, so that they are
    recorded as rejections.
    """
    count = 0
    for article in articles:
        if selection.limit is not None and count >= selection.limit:
            return
        if selection.license != "all" or (selection.pmcids is not None and not article.meta.pmcid):
            article = with_xml_metadata(article)
        if article.error:
            if not selection.wants_pmcid(article.meta.pmcid or None):
                continue
        elif not selection.admits(article.meta):
            continue
        count += 1
        yield article
