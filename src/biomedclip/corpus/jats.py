"""JATS figure extraction: every ``<fig>`` of an article as a ``FigureRecord``, with the article's metadata.

Rules (chosen to read well and to lose nothing; compare ``pubmed_parser==0.5.1``, which keeps only two levels
of markup, glues paragraphs together, takes a fig's first *attribute* as its graphic and crashes on figures
without an id or a caption):

* Where: every ``<fig>`` below each top-level ``<article>`` (so inside ``<fig-group>``, ``<floats-group>``,
  ``<sub-article>``, OAI-PMH or ``<pmc-articleset>`` wrappers), matched by local name, so the JATS 1.3
  namespace, or any other, works too.
* Caption: the ``<caption>``'s ``<title>`` then every paragraph, in document order. A title, or a paragraph
  followed by another (Elsevier's title-as-first-paragraph), without final punctuation gets a period.
  Block elements (``p``, ``title``, ``list-item``, ``disp-formula``, ...) are separated by a space; inline
  markup (``italic``, ``bold``, ``xref``, ...) is joined as written; all whitespace runs (including
  no-break spaces) become one space. Superscripts and subscripts are joined (``Ca<sup>2+</sup>`` ->
  ``Ca2+``, ``H<sub>2</sub>O`` -> ``H2O``, ``CD4<sup>+</sup>`` -> ``CD4+``) except a numeric superscript
  right after a digit or ``)``, an exponent (``10<sup>4</sup>`` -> ``10^4``, not the misleading ``104``),
  and a superscript holding only a citation, which is set off by a space. In ``<alternatives>`` only the
  first child is rendered (MathML rather than its TeX twin). A ``<fig>`` with no caption of its own inside
  a ``<fig-group>`` takes the group's caption.
* Graphics: a fig's ``<graphic>`` elements (also in ``<alternatives>``), not those of its caption.
  One record per fig: ``graphic`` is the first graphic in document order that is not marked as a thumbnail;
  ``graphics`` lists them all.
* Rejections: a fig without caption text -> reason ``no_caption``; without a graphic -> ``no_graphic``.
  Malformed XML raises ``JatsError``; ``figures_of`` turns that, an article without ``<fig>`` and an article
  the source could not read into one rejected article-level record (``fig_id`` empty).
* Bounds, so that hostile markup costs one figure, never the article or the machine: a caption longer than
  ``max_caption_chars`` (``filters.FilterConfig``) is refused as ``caption_too_long`` while it is being
  rendered (rendering stops once the raw text passes ``RAW_CAPTION_FACTOR`` times the limit, so a 50 MB
  caption is never joined, normalised or tokenised; the record keeps its first ``max_caption_chars``
  characters); a caption nested deeper than ``MAX_CAPTION_DEPTH`` elements is refused as ``caption_too_deep``;
  only the first ``max_figures`` (``DEFAULT_MAX_FIGURES``) ``<fig>`` elements of a document are extracted, and
  the rest are counted into one article-level record rejected as ``too_many_figures`` (so a hostile article
  costs a bounded number of records, images read and rows, whatever its XML holds).
* Article key: the PMCID (``<article-id pub-id-type="pmc">``/``pmcid``); without one, ``doi:<DOI>``, else
  ``publisher-id:<id>``, else ``file:<name of the source file>`` (``article_key``), so every figure has a
  non-empty ``pmcid`` field, which names its article and decides its split.
* License: the ``<license>``'s URL (``xlink:href``, ``ali:license_ref``), else its ``license-type``, else its
  text, read as a Creative Commons code (``licenses.license_code``); a ``<license>`` that states other terms
  (Elsevier's COVID-19 permission) is ``NO-CC CODE``, PMC's own code for it in ``oa_file_list.csv``.
* Inline references: each record lists the body paragraphs citing its figure (``references.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from lxml import etree

from biomedclip.corpus.licenses import license_code
from biomedclip.corpus.records import Article, ArticleMeta, FigureRecord
from biomedclip.corpus.references import InlineReference, inline_references

REJECT_NO_CAPTION = "no_caption"
REJECT_NO_GRAPHIC = "no_graphic"
REJECT_NO_FIGURES = "no_figures"
REJECT_MALFORMED_XML = "malformed_xml"
REJECT_CAPTION_TOO_LONG = "caption_too_long"
REJECT_CAPTION_TOO_DEEP = "caption_too_deep"
DEFAULT_MAX_CAPTION_CHARS = 20_000  # the default of filters.FilterConfig.max_caption_chars
RAW_CAPTION_FACTOR = 4  # raw caption text (indentation included) allowed before normalising, per allowed char
MAX_CAPTION_DEPTH = 100  # real captions nest < 15 elements deep
REJECT_TOO_MANY_FIGURES = "too_many_figures"
DEFAULT_MAX_FIGURES = 2_000  # the most figures per article; the largest PMC articles have a few hundred
NON_CC_LICENSE = "NO-CC CODE"

XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
BLOCK_ELEMENTS = frozenset(
    {
        "p",
        "title",
        "list",
        "list-item",
        "def-list",
        "def-item",
        "term",
        "def",
        "disp-formula",
        "disp-quote",
        "statement",
        "boxed-text",
        "preformat",
        "caption",
        "table-wrap",
        "table",
        "tr",
        "td",
        "th",
        "speech",
        "verse-group",
        "verse-line",
    }
)
SKIPPED_ELEMENTS = frozenset({"graphic", "inline-graphic", "media", "alt-text", "long-desc", "object-id"})
EXPONENT = re.compile(r"[\-−–+]?\d[\d.,]*")
EXPONENT_BASES = frozenset("0123456789)")
THUMBNAIL_HINTS = ("thumb", "icon")
NON_PUBLICATION_DATES = frozenset({"pmc-release", "nihms-submitted", "received", "accepted", "rev-recd", "corrected"})


class JatsError(ValueError):
    """XML that cannot be read as an article: empty, malformed, or with no ``<article>`` element."""


class _CaptionTooLong(Exception):
    """Raised by ``_Output`` once a caption's raw text passes its budget."""


class _Output(list):
    """The pieces of a caption being rendered, refusing to grow past ``limit`` characters."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.chars = 0

    def append(self, text: str) -> None:
        if self.chars + len(text) > self.limit:
            super().append(text[: self.limit - self.chars])  # keep the head, never the whole text
            self.chars = self.limit
            raise _CaptionTooLong
        self.chars += len(text)
        super().append(text)


@dataclass(frozen=True)
class ArticleInfo:
    """Article metadata read from the JATS front matter."""

    pmcid: str | None = None
    pmid: str | None = None
    doi: str | None = None
    publisher_id: str | None = None
    journal: str | None = None
    year: int | None = None
    license: str | None = None
    license_url: str | None = None
    article_type: str | None = None


def _local(element: etree._Element) -> str:
    tag = element.tag
    return tag[tag.rfind("}") + 1 :] if isinstance(tag, str) else ""


def _children(element: etree._Element, name: str) -> Iterator[etree._Element]:
    return (child for child in element if _local(child) == name)


def _first(element: etree._Element | None, *path: str) -> etree._Element | None:
    """The first element reached by following child local names ``path`` from ``element``."""
    for name in path:
        if element is None:
            return None
        element = next(_children(element, name), None)
    return element


def _normalise(text: str) -> str:
    return " ".join(text.split())


def parse_xml(xml: bytes) -> etree._Element:
    """Parse JATS bytes safely (no network, no external entities, no DTD loading) or raise ``JatsError``."""
    if not xml or xml.isspace():
        raise JatsError("empty XML")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)
    try:
        root = etree.fromstring(xml, parser)
    except etree.XMLSyntaxError as error:
        raise JatsError(f"malformed XML: {error}") from error
    if root is None:
        raise JatsError("malformed XML: no root element")
    return root


def articles_in(root: etree._Element) -> list[etree._Element]:
    """The top-level ``<article>`` elements of a document (itself, or inside any wrapper)."""
    if _local(root) == "article":
        return [root]
    return [e for e in root.iter("{*}article") if next(e.iterancestors("{*}article"), None) is None]


def _pmcid(value: str) -> str | None:
    digits = re.sub(r"^\s*PMC", "", value.strip(), flags=re.I)
    return f"PMC{digits}" if digits.isdigit() else None


def _year(article_meta: etree._Element) -> int | None:
    dates = list(_children(article_meta, "pub-date"))
    publication = [d for d in dates if (d.get("pub-type") or d.get("date-type")) not in NON_PUBLICATION_DATES]
    years = []
    for date in publication or dates:
        year = _first(date, "year")
        if year is not None and (year.text or "").strip().isdigit():
            years.append(int(year.text.strip()))
    return min(years) if years else None


def _license(article_meta: etree._Element) -> tuple[str | None, str | None]:
    license_element = _first(article_meta, "permissions", "license")
    if license_element is None:
        statement = _first(article_meta, "permissions", "copyright-statement")
        statement = statement if statement is not None else _first(article_meta, "copyright-statement")
        return (license_code("".join(statement.itertext())) if statement is not None else None), None
    url = license_element.get(XLINK_HREF)
    if url is None:
        ref = next((e for e in license_element.iter() if _local(e) == "license_ref"), None)
        url = _normalise(ref.text or "") if ref is not None else None
    code = license_code(url) or license_code(license_element.get("license-type"))
    text = _normalise("".join(license_element.itertext()))
    code = code or license_code(text)
    return code or license_element.get("license-type") or (NON_CC_LICENSE if text or url else None), url


def article_key(info: ArticleInfo, file_name: str = "") -> str:
    """The article's PMCID, else ``doi:<DOI>``, else ``publisher-id:<id>``, else ``file:<file_name>``."""
    if info.pmcid:
        return info.pmcid
    if info.doi:
        return f"doi:{info.doi}"
    if info.publisher_id:
        return f"publisher-id:{info.publisher_id}"
    return f"file:{file_name}" if file_name else ""


def article_info(article: etree._Element) -> ArticleInfo:
    """The metadata of one ``<article>`` element (its own front matter, not its sub-articles')."""
    meta = _first(article, "front", "article-meta")
    journal_meta = _first(article, "front", "journal-meta")
    if meta is None:
        return ArticleInfo(article_type=article.get("article-type"))
    ids = {(e.get("pub-id-type") or ""): (e.text or "").strip() for e in _children(meta, "article-id")}
    pmcid = _pmcid(ids.get("pmcid", "") or ids.get("pmc", ""))
    journal = None
    if journal_meta is not None:
        title = _first(journal_meta, "journal-title-group", "journal-title")
        title = title if title is not None else _first(journal_meta, "journal-title")
        journal = _normalise("".join(title.itertext())) if title is not None else None
        if not journal:
            nlm = next((e for e in _children(journal_meta, "journal-id") if e.get("journal-id-type") == "nlm-ta"), None)
            journal = _normalise(nlm.text or "") if nlm is not None else None
    license_value, license_url = _license(meta)
    return ArticleInfo(
        pmcid=pmcid,
        pmid=ids.get("pmid") or None,
        doi=ids.get("doi") or None,
        publisher_id=ids.get("publisher-id") or None,
        journal=journal or None,
        year=_year(meta),
        license=license_value,
        license_url=license_url,
        article_type=article.get("article-type"),
    )


def _render(element: etree._Element, out: list[str]) -> None:
    """Append the readable text of ``element`` (without its tail) to ``out`` following the module's rules."""
    name = _local(element)
    if not name or name in SKIPPED_ELEMENTS:
        return
    if name == "alternatives":
        first = next((c for c in element if _local(c)), None)
        if first is not None:
            _render(first, out)
        return
    block = name in BLOCK_ELEMENTS
    if block:
        out.append(" ")
    if name in ("sup", "sub"):
        inner: list[str] = _Output(out.limit - out.chars) if isinstance(out, _Output) else []
        _render_children(element, inner)
        raw = "".join(inner)
        text = _normalise(raw)
        previous = "".join(out[-3:]).rstrip()
        if name == "sup" and previous[-1:] in EXPONENT_BASES and EXPONENT.fullmatch(text):
            text = "^" + text
        elif raw[:1].isspace() or _is_citation(element):
            text = " " + text
        out.append(text + (" " if raw[-1:].isspace() else ""))
        return
    _render_children(element, out)
    if block:
        ends_block = name == "title" or (name == "p" and element.getnext() is not None)
        if ends_block and _local(element.getparent()) == "caption":
            last = _last_char(out)
            if last and last not in ".:;!?":
                out.append(".")
        out.append(" ")


def element_text(element: etree._Element) -> str:
    """The readable text of ``element`` as one line, rendered like a caption (see the module rules)."""
    out: list[str] = []
    _render(element, out)
    return _normalise("".join(out))


def _last_char(out: list[str]) -> str:
    """The last non-space character rendered so far (without joining everything rendered so far)."""
    for piece in reversed(out):
        stripped = piece.rstrip()
        if stripped:
            return stripped[-1]
    return ""


def _is_citation(element: etree._Element) -> bool:
    """A superscript holding nothing but cross-references (``<sup><xref>12</xref></sup>``)."""
    return len(element) > 0 and all(_local(c) == "xref" for c in element) and not (element.text or "").strip()


def _render_children(element: etree._Element, out: list[str]) -> None:
    if element.text:
        out.append(element.text)
    for child in element:
        _render(child, out)
        if child.tail:
            out.append(child.tail)


def caption_text(caption: etree._Element | None, max_chars: int = DEFAULT_MAX_CAPTION_CHARS) -> tuple[str, str]:
    """A ``<caption>`` as one readable line (title, then every paragraph) and the reason it is refused, if any.

    A refused caption is returned cut to ``max_chars`` characters (``caption_too_long``) or empty
    (``caption_too_deep``); see the module docstring for the bounds.
    """
    if caption is None:
        return "", ""
    if element_depth(caption) > MAX_CAPTION_DEPTH:
        return "", REJECT_CAPTION_TOO_DEEP
    out = _Output(max_chars * RAW_CAPTION_FACTOR)
    try:
        _render(caption, out)
    except _CaptionTooLong:
        return _normalise("".join(out))[:max_chars], REJECT_CAPTION_TOO_LONG
    text = _normalise("".join(out))
    return (text[:max_chars], REJECT_CAPTION_TOO_LONG) if len(text) > max_chars else (text, "")


def element_depth(element: etree._Element) -> int:
    """How deep elements nest below ``element`` (1 for an element without children), without recursion."""
    deepest, stack = 0, [(element, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node)
    return deepest


def _graphics(fig: etree._Element) -> list[etree._Element]:
    """The fig's own ``<graphic>`` elements, not those inside its caption or nested figs."""
    found = []
    stack = list(fig)
    while stack:
        element = stack.pop(0)
        name = _local(element)
        if name == "graphic":
            found.append(element)
        elif name and name not in ("caption", "fig"):
            stack[:0] = list(element)
    return found


def _href(graphic: etree._Element) -> str:
    href = graphic.get(XLINK_HREF)
    if href is None:
        href = next((v for k, v in graphic.attrib.items() if etree.QName(k).localname == "href"), "")
    return href.strip()


def _is_thumbnail(graphic: etree._Element) -> bool:
    hints = f"{graphic.get('specific-use', '')} {graphic.get('content-type', '')}".lower()
    return any(hint in hints for hint in THUMBNAIL_HINTS)


def _fig_record(
    fig: etree._Element,
    info: ArticleInfo,
    meta: ArticleMeta | None,
    source: str,
    max_caption_chars: int,
    references: list[InlineReference] | None = None,
) -> FigureRecord:
    caption, refused = caption_text(_first(fig, "caption"), max_caption_chars)
    parent = fig.getparent()
    if not caption and not refused and parent is not None and _local(parent) == "fig-group":
        caption, refused = caption_text(_first(parent, "caption"), max_caption_chars)
    label = _first(fig, "label")
    graphics = _graphics(fig)
    hrefs = [h for h in (_href(g) for g in graphics) if h]
    preferred = [_href(g) for g in graphics if _href(g) and not _is_thumbnail(g)]
    record = FigureRecord(
        pmcid=info.pmcid or (meta.pmcid if meta else "") or article_key(info),
        fig_id=fig.get("id") or "",
        label=_normalise("".join(label.itertext())) if label is not None else "",
        caption=caption,
        graphic=(preferred or hrefs or [""])[0],
        graphics=hrefs,
        source=source,
        version=meta.version if meta else None,
        license=(meta.license if meta and meta.license else info.license),
        journal=info.journal,
        year=info.year,
        pmid=info.pmid,
        doi=info.doi,
        inline_references=list(references or []),
    )
    if refused:
        record.status, record.reason = "rejected", refused
    elif not caption:
        record.status, record.reason = "rejected", REJECT_NO_CAPTION
    elif not record.graphic:
        record.status, record.reason = "rejected", REJECT_NO_GRAPHIC
    return record


def extract_figures(
    xml: bytes,
    *,
    source: str = "",
    meta: ArticleMeta | None = None,
    max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS,
    max_figures: int = DEFAULT_MAX_FIGURES,
) -> list[FigureRecord]:
    """Every ``<fig>`` of the document's articles as a record (rejected ones carry a reason).

    Args:
        xml: the JATS document (an article, or a wrapper holding articles).
        source: where it came from, copied to each record.
        meta: what the source knows (version, license); its pmcid is used when the XML has none, and
            without either the record is keyed by ``article_key``.
        max_caption_chars: longer captions are refused (``caption_too_long``) while being extracted.
        max_figures: figures past this many are only counted, into one ``too_many_figures`` record.

    Raises:
        JatsError: the XML is empty, malformed or holds no ``<article>``.
    """
    root = parse_xml(xml)
    articles = articles_in(root)
    if not articles:
        raise JatsError(f"no <article> element (root is <{_local(root)}>)")
    records: list[FigureRecord] = []
    skipped = 0
    for article in articles:
        info = article_info(article)
        references = inline_references(article)
        for element in article.iter("{*}fig"):
            if len(records) < max_figures:
                records.append(_fig_record(element, info, meta, source, max_caption_chars, references.get(element)))
            else:
                skipped += 1
    if skipped:
        info = article_info(articles[0])
        pmcid = info.pmcid or (meta.pmcid if meta else "") or article_key(info)
        records.append(_too_many(pmcid, source, meta.version if meta else None, skipped, max_figures))
    return records


def _too_many(pmcid: str, source: str, version: int | None, skipped: int, max_figures: int) -> FigureRecord:
    """The article-level record standing for the ``skipped`` figures past ``max_figures``."""
    return FigureRecord(
        pmcid=pmcid, fig_id="", label="", caption="", graphic="", source=source, version=version,
        status="rejected", reason=REJECT_TOO_MANY_FIGURES,
        detail=f"{skipped} figures past the first {max_figures} were not extracted",
    )  # fmt: skip


def article_rejection(article: Article, reason: str) -> FigureRecord:
    """One article-level rejected record (no figure id) for an article whose figures cannot be listed."""
    return FigureRecord(
        pmcid=article.meta.pmcid,
        fig_id="",
        label="",
        caption="",
        graphic="",
        source=article.source,
        version=article.meta.version,
        license=article.meta.license,
        status="rejected",
        reason=reason,
    )


def figures_of(
    article: Article, max_caption_chars: int = DEFAULT_MAX_CAPTION_CHARS, max_figures: int = DEFAULT_MAX_FIGURES
) -> list[FigureRecord]:
    """The figure records of an article, at most ``max_figures`` of them plus one ``too_many_figures`` record
    for the rest; never raises for bad input (it becomes a rejected record)."""
    if article.error:
        return [article_rejection(article, article.error)]
    if article.figures is not None:
        if len(article.figures) > max_figures:
            skipped = len(article.figures) - max_figures
            rest = _too_many(article.meta.pmcid, article.source, article.meta.version, skipped, max_figures)
            return [*article.figures[:max_figures], rest]
        return article.figures or [article_rejection(article, REJECT_NO_FIGURES)]
    try:
        records = extract_figures(
            article.xml or b"",
            source=article.source,
            meta=article.meta,
            max_caption_chars=max_caption_chars,
            max_figures=max_figures,
        )
    except JatsError as error:
        return [article_rejection(article, f"{REJECT_MALFORMED_XML}: {error}")]
    return records or [article_rejection(article, REJECT_NO_FIGURES)]
