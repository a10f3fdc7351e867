"""Inline references: the body paragraphs of a JATS article that cite each of its figures.

Rules (``inline_references``):

* Citing paragraph: the innermost ``<p>`` holding an ``<xref ref-type="fig">`` whose ``rid`` (space-separated
  ids) names the figure, when that ``<p>`` lies in a ``<body>`` (the article's or a sub-article's) and not inside
  a float or its caption (``fig``, ``fig-group``, ``table-wrap``, ``supplementary-material``, ...). So a
  paragraph of a list item or a text box in the body counts on its own; xrefs in captions, tables, the abstract
  and the back matter do not. An id resolves to the ``<fig>`` bearing it, to every ``<fig>`` of a
  ``<fig-group>`` bearing it, or to the ``<fig>`` holding the element bearing it (a graphic, a label).
* Plain-text mentions: in an article without any ``<xref ref-type="fig">``, a body paragraph cites a figure
  when it names its label's number (``Figure 3``, ``Fig. 3A``, ``Figs. 3 and 4``, ``Figures 2–4``, ``Figure
  S1``), not after "Supplementary"/"Supporting"/"Extended Data"; these references have ``kind`` ``text``.
* One reference per (figure, paragraph text): ``paragraph`` is the paragraph as one line (rendered like a
  caption, nested paragraphs and floats left out), ``sentences`` the sentence(s) holding its citations
  (``sentences.py``), ``section`` the titles of the enclosing sections, outermost first, joined by `` > ``,
  ``panels`` the panel letters the citations name (``citations.py``; upper case, in order, once each: "Fig. 2B" -> B,
  "Figures 2B–D" -> B, C, D, "Fig. 2(b, c)" -> B, C, "Fig. 2A and C" -> A, C), ``kind`` ``xref`` or ``text``.
"""

from __future__ import annotations

import copy
import re
from collections import defaultdict
from collections.abc import Iterator
from typing import TypedDict

from lxml import etree

from biomedclip.corpus.citations import MENTION, NOT_THIS_ARTICLE, label_number, parse_citation
from biomedclip.corpus.sentences import sentences_holding


class InlineReference(TypedDict):
    """One body paragraph citing a figure."""

    paragraph: str
    sentences: list[str]
    section: str
    panels: list[str]
    kind: str  # "xref" (marked up) or "text" (a plain-text mention)


OUTSIDE_BODY_TEXT = frozenset(
    {"fig", "fig-group", "table-wrap", "table-wrap-group", "table", "caption", "supplementary-material", "media",
     "chem-struct-wrap", "graphic", "abstract", "trans-abstract", "front", "back", "ref-list", "floats-group"}
)  # fmt: skip
BODY_OWNERS = frozenset({"article", "sub-article", "response"})
CAPTION, CAPTION_REFERENCES = "caption", "caption+references"
TEXT_CHOICES = (CAPTION, CAPTION_REFERENCES)  # the training text a build writes (``--text``)
DEFAULT_REFERENCE_CHARS = 1000  # citing sentences added to the caption by ``caption+references``, at most
MARK_BASE = 0xF0000  # citation i is marked by chr(MARK_BASE + 2i) and chr(MARK_BASE + 2i + 1) while rendered
MARKS = re.compile("[\U000f0000-\U0010ffff]")  # private-use planes: removed from a paragraph before marking
MAX_MARKED = (0x10FFFF - MARK_BASE) // 2  # citations marked per paragraph at most
SECTION_SEPARATOR = " > "


def _local(element: etree._Element) -> str:
    tag = element.tag
    return tag[tag.rfind("}") + 1 :] if isinstance(tag, str) else ""


# --- paragraphs -------------------------------------------------------------------------------------------


def _is_body_paragraph(p: etree._Element) -> bool:
    for ancestor in p.iterancestors():
        name = _local(ancestor)
        if name in OUTSIDE_BODY_TEXT:
            return False
        if name == "body":
            parent = ancestor.getparent()
            return parent is None or _local(parent) in BODY_OWNERS
        if name in BODY_OWNERS:
            return False
    return False


def _apart(element: etree._Element) -> bool:
    """Whether ``element``, inside a paragraph, is not part of its text: a float, or a nested paragraph."""
    return _local(element) == "p" or _local(element) in OUTSIDE_BODY_TEXT


def _prune(element: etree._Element) -> None:
    """Remove the parts of ``element`` that are apart from its text (their tails stay)."""
    for child in list(element):
        if _apart(child):
            _remove_keeping_tail(child)
        else:
            _prune(child)


def _section(p: etree._Element) -> str:
    titles = []
    for ancestor in p.iterancestors():
        if _local(ancestor) == "sec":
            title = next((c for c in ancestor if _local(c) == "title"), None)
            text = " ".join("".join(title.itertext()).split()) if title is not None else ""
            if text:
                titles.append(text)
        elif _local(ancestor) == "body":
            break
    return SECTION_SEPARATOR.join(reversed(titles))


def _own_xrefs(p: etree._Element) -> list[etree._Element]:
    """The fig xrefs in the text of ``p`` itself (not in a nested paragraph or float)."""
    own = []
    for xref in p.iter("{*}xref"):
        if xref.get("ref-type") != "fig":
            continue
        between = []
        for ancestor in xref.iterancestors():
            if ancestor is p:
                break
            between.append(ancestor)
        if not any(_apart(a) for a in between):
            own.append(xref)
    return own[:MAX_MARKED]


def _paragraph_of(element: etree._Element) -> etree._Element | None:
    return next((a for a in element.iterancestors() if _local(a) == "p"), None)


def render_paragraph(p: etree._Element, marked: list[etree._Element] = ()) -> tuple[str, list[tuple[int, int] | None]]:
    """``p`` as one line without its nested paragraphs and floats, and the span of each element of ``marked``
    in it (None for one whose text is not rendered)."""
    from biomedclip.corpus.jats import element_text  # jats imports this module

    twin = copy.deepcopy(p)
    originals = list(p.iter())  # held, so that each element's id is its own while the twins are matched
    position = {id(element): i for i, element in enumerate(originals)}
    twins = list(twin.iter())
    for element in twins:
        for attribute in ("text", "tail"):
            value = getattr(element, attribute, None)
            if value and MARKS.search(value):
                setattr(element, attribute, MARKS.sub("", value))
    for index, xref in enumerate(marked):
        node = twins[position[id(xref)]]
        opening, closing = chr(MARK_BASE + 2 * index), chr(MARK_BASE + 2 * index + 1)
        node.text = opening + (node.text or "")
        if len(node):
            node[-1].tail = (node[-1].tail or "") + closing
        else:
            node.text += closing
    _prune(twin)
    text, spans = _strip_marks(element_text(twin))
    return text, [spans.get(index) for index in range(len(marked))]


def _too_deep(p: etree._Element) -> bool:
    """A paragraph nested deeper than captions may be (hostile markup): left out, as such a caption is."""
    from biomedclip.corpus.jats import MAX_CAPTION_DEPTH, element_depth

    return element_depth(p) > MAX_CAPTION_DEPTH


def _remove_keeping_tail(element: etree._Element) -> None:
    parent, tail = element.getparent(), element.tail or ""
    previous = element.getprevious()
    if previous is not None:
        previous.tail = (previous.tail or "") + " " + tail
    else:
        parent.text = (parent.text or "") + " " + tail
    parent.remove(element)


def _strip_marks(text: str) -> tuple[str, dict[int, tuple[int, int]]]:
    """``text`` without its citation marks (white space kept single) and the span of each citation, by index."""
    out: list[str] = []
    starts: dict[int, int] = {}
    spans: dict[int, tuple[int, int]] = {}
    for ch in text:
        code = ord(ch) - MARK_BASE
        if code >= 0:
            if code % 2 == 0:
                starts[code // 2] = len(out)
            elif code // 2 in starts:
                spans[code // 2] = (starts[code // 2], len(out))
        elif ch == " " and (not out or out[-1] == " "):
            continue
        else:
            out.append(ch)
    while out and out[-1] == " ":
        out.pop()
    return "".join(out), {i: (min(a, len(out)), min(b, len(out))) for i, (a, b) in spans.items()}


# --- figures of an article ---------------------------------------------------------------------------------


def _targets(article: etree._Element) -> dict[str, list[etree._Element]]:
    """The figures each id of the article names (see the module rules)."""
    targets: dict[str, list[etree._Element]] = {}
    for group in article.iter("{*}fig-group"):
        if group.get("id"):
            targets[group.get("id")] = list(group.iter("{*}fig"))
    for fig in article.iter("{*}fig"):
        if fig.get("id"):
            targets[fig.get("id")] = [fig]
        for element in fig.iterdescendants():
            ident = element.get("id") if _local(element) not in ("", "fig") else None
            if ident and ident not in targets:
                targets[ident] = [next(element.iterancestors("{*}fig"))]
    return targets


def _body_paragraphs(article: etree._Element) -> Iterator[etree._Element]:
    return (p for p in article.iter("{*}p") if _is_body_paragraph(p))


def _add(found: dict, fig: etree._Element, p: etree._Element, text: str, spans, panels, kind: str) -> None:
    entry = found[fig].setdefault(text, {"p": p, "spans": [], "panels": [], "kind": kind})
    entry["spans"].extend(spans)
    entry["panels"].extend(panels)


def _references(found: dict) -> dict[etree._Element, list[InlineReference]]:
    result = {}
    for fig, by_text in found.items():
        result[fig] = [
            InlineReference(
                paragraph=text,
                sentences=sentences_holding(text, entry["spans"]),
                section=_section(entry["p"]),
                panels=list(dict.fromkeys(entry["panels"])),
                kind=entry["kind"],
            )
            for text, entry in by_text.items()
        ]
    return result


def _fig_number(fig: etree._Element) -> str:
    label = next(fig.iterchildren("{*}label"), None)
    return label_number("".join(label.itertext())) if label is not None else ""


def _panels_for(fig: etree._Element, citation: list[tuple[str, list[str]]]) -> list[str]:
    """The panels of ``fig`` a parsed citation names (by label number; a citation of one figure names its own)."""
    number = _fig_number(fig)
    named = [panels for n, panels in citation if n and n == number]
    if named:
        return [p for panels in named for p in panels]
    return citation[0][1] if len(citation) == 1 else []


def inline_references(article: etree._Element) -> dict[etree._Element, list[InlineReference]]:
    """The references to each ``<fig>`` of ``article`` (a top-level ``<article>`` element), by fig element."""
    targets = _targets(article)
    xrefs = [x for x in article.iter("{*}xref") if x.get("ref-type") == "fig"]
    found: dict = defaultdict(dict)
    if xrefs:
        paragraphs = dict.fromkeys(p for p in (_paragraph_of(x) for x in xrefs) if p is not None)
        for p in paragraphs:
            if not _is_body_paragraph(p) or _too_deep(p):
                continue
            own = _own_xrefs(p)
            text, spans = render_paragraph(p, own)
            starts = sorted(span[0] for span in spans if span is not None)
            for xref, span in zip(own, spans, strict=True):
                if span is None:
                    continue
                lo, hi = span
                stop = next((start for start in starts if start >= hi), len(text))
                citation = parse_citation(text[lo:stop]) if text[lo:hi].strip() else []
                cited = [f for rid in (xref.get("rid") or "").split() for f in targets.get(rid, [])]
                for fig in dict.fromkeys(cited):
                    _add(found, fig, p, text, [(lo, hi)], _panels_for(fig, citation), "xref")
    else:
        by_number: dict[str, list[etree._Element]] = defaultdict(list)
        for fig in article.iter("{*}fig"):
            if _fig_number(fig):
                by_number[_fig_number(fig)].append(fig)
        if by_number:
            for p in _body_paragraphs(article):
                if _too_deep(p):
                    continue
                text, _ = render_paragraph(p)
                for match in MENTION.finditer(text):
                    if NOT_THIS_ARTICLE.search(text[max(0, match.start() - 30) : match.start()]):
                        continue
                    citation = parse_citation(text[match.start() : match.start() + 80])
                    for number, panels in citation:
                        for fig in by_number.get(number, []):
                            _add(found, fig, p, text, [(match.start(), match.end() + 1)], panels, "text")
    return _references(found)


def training_text(caption: str, references: list[InlineReference] | None, text: str, max_chars: int) -> str:
    """The training text of a figure: its caption (``caption``), or (``caption+references``) its caption followed
    by the distinct sentences citing it, in order, whole sentences only, at most ``max_chars`` characters of them
    (a first sentence longer than that is cut at a word boundary)."""
    if text == CAPTION or not references:
        return caption
    added: list[str] = []
    for sentence in dict.fromkeys(s for ref in references for s in ref["sentences"]):
        if len(" ".join([*added, sentence])) <= max_chars:
            added.append(sentence)
            continue
        if not added:
            head = sentence[:max_chars]
            added.append(head.rsplit(" ", 1)[0] if " " in head else head)
        break
    return " ".join([caption, *added]) if added else caption
