"""JATS figure extraction on real PMC articles and on the markup corner cases."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import pubmed_parser
import pytest
from lxml import etree

from biomedclip.corpus.jats import JatsError, extract_figures, figures_of
from biomedclip.corpus.records import Article, ArticleMeta
from biomedclip.corpus.sources import open_source


def _xml_files(shared: Path) -> list[Path]:
    return sorted((shared / "pmc" / "nxml").rglob("*.*xml")) + sorted((shared / "pmc" / "packages").rglob("*.nxml"))


def _article(body: str, ns: str = "") -> bytes:
    xmlns = f' xmlns="{ns}"' if ns else ""
    return (
        f'<article{xmlns} xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta>'
        f'<article-id pub-id-type="pmc">123</article-id></article-meta></front><body>{body}</body></article>'
    ).encode()


def test_every_fig_of_the_real_articles_is_extracted(shared_fixtures):
    figs_with_graphic = extracted = 0
    for path in _xml_files(shared_fixtures):
        tree = etree.parse(str(path))
        figs = [e for e in tree.iter() if isinstance(e.tag, str) and etree.QName(e).localname == "fig"]
        figs_with_graphic += sum(
            any(etree.QName(g).localname == "graphic" for g in f.iter() if isinstance(g.tag, str)) for f in figs
        )
        records = extract_figures(path.read_bytes(), source=str(path))
        assert len(records) == len(figs), path
        extracted += sum(r.status == "accepted" for r in records)
        for record in records:
            assert record.pmcid.startswith("PMC") and record.source == str(path)
            if record.status == "accepted":
                assert record.caption and record.graphic and record.caption == " ".join(record.caption.split())
    assert figs_with_graphic > 100
    # one real fig (PMC9500000's graphical abstract) has a graphic but no caption: rejected, not lost
    assert extracted == figs_with_graphic - 1


def test_real_article_metadata(shared_fixtures):
    records = extract_figures((shared_fixtures / "pmc/nxml/pubmed_parser/pone.0000217.nxml").read_bytes())
    first = records[0]
    assert (first.pmcid, first.pmid, first.fig_id, first.label) == (
        "PMC1790863",
        "17299597",
        "pone-0000217-g001",
        "Figure 1",
    )
    assert first.graphic == "pone.0000217.g001" and first.journal == "PLoS ONE" and first.year == 2007
    assert first.license == "CC BY" and first.doi == "10.1371/journal.pone.0000217"
    assert first.caption.startswith("Fisher's geometric model in two-dimensional phenotypic space. Fitness varies")


def test_caption_spacing_around_inline_and_block_markup():
    xml = _article(
        '<fig id="f1"><label>Figure 1</label><caption><title>Growth curves</title><p>Cells at 10<sup>4</sup> per '
        "ml with Ca<sup>2+</sup>, CD4<sup>+</sup> and H<sub>2</sub>O in <italic>E. <bold>coli</bold></italic>"
        '<sup><xref ref-type="bibr" rid="b1">12</xref></sup>.</p><p>Second&#160;paragraph'
        '<inline-formula><alternatives><mml:math xmlns:mml="http://www.w3.org/1998/Math/MathML"><mml:mi>x</mml:mi>'
        "</mml:math><tex-math>x</tex-math></alternatives></inline-formula>.</p></caption>"
        '<graphic xlink:href="f1"/></fig>'
    )
    (record,) = extract_figures(xml)
    assert record.caption == (
        "Growth curves. Cells at 10^4 per ml with Ca2+, CD4+ and H2O in E. coli 12. Second paragraphx."
    )


def test_nested_markup_kept_where_pubmed_parser_loses_it(tmp_path):
    xml = _article(
        '<fig id="f1"><caption><p>Level of <italic>IL-1<sub>β</sub></italic> rises.</p></caption>'
        '<graphic xlink:href="f1"/></fig>'
    )
    (record,) = extract_figures(xml)
    assert record.caption == "Level of IL-1β rises."
    path = tmp_path / "a.xml"
    path.write_bytes(xml)
    (theirs,) = pubmed_parser.parse_pubmed_caption(str(path))
    assert "β" not in theirs["fig_caption"]


def test_namespace_wrappers_groups_and_floats():
    body = (
        '<fig-group id="g"><caption><p>Shared caption.</p></caption>'
        '<fig id="a"><graphic xlink:href="a"/></fig><fig id="b"><caption><p>Own.</p></caption>'
        '<graphic xlink:href="b"/></fig></fig-group>'
    )
    inner = _article(body, ns="http://jats.nlm.nih.gov/ns/1.3").decode()
    inner = inner.replace(
        "</body>",
        '</body><floats-group><fig id="c"><caption><p>Float.</p></caption>'
        '<graphic xlink:href="c"/></fig></floats-group>',
    )
    wrapped = f'<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/"><GetRecord><record><metadata>{inner}</metadata></record></GetRecord></OAI-PMH>'
    records = extract_figures(wrapped.encode())
    assert [(r.fig_id, r.caption, r.graphic, r.pmcid) for r in records] == [
        ("a", "Shared caption.", "a", "PMC123"),
        ("b", "Own.", "b", "PMC123"),
        ("c", "Float.", "c", "PMC123"),
    ]


def test_several_graphics_first_non_thumbnail_wins():
    xml = _article(
        '<fig id="f"><caption><p>Panels.</p></caption><graphic xlink:href="f-thumb" specific-use="thumbnail"/>'
        '<alternatives><graphic xlink:href="f-large"/><graphic xlink:href="f-small"/></alternatives></fig>'
    )
    (record,) = extract_figures(xml)
    assert record.graphic == "f-large" and record.graphics == ["f-thumb", "f-large", "f-small"]


def test_figures_without_caption_or_graphic_are_rejected_not_dropped():
    xml = _article(
        '<fig><graphic xlink:href="x"/></fig><fig id="n"><caption><p>No image.</p></caption></fig>'
        '<fig id="e"><caption><title> </title></caption><graphic xlink:href="e"/></fig>'
    )
    records = extract_figures(xml)
    assert [(r.fig_id, r.status, r.reason) for r in records] == [
        ("", "rejected", "no_caption"),
        ("n", "rejected", "no_graphic"),
        ("e", "rejected", "no_caption"),
    ]


@pytest.mark.parametrize("xml", [b"", b"   ", b"<article><fig>", b"not xml at all", b"<html><body/></html>"])
def test_bad_xml_raises_and_becomes_an_article_rejection(xml):
    with pytest.raises(JatsError):
        extract_figures(xml)
    article = Article("s.xml", ArticleMeta(pmcid="PMC9", version=2), xml, [], lambda name: None)
    (record,) = figures_of(article)
    assert record.status == "rejected" and record.reason.startswith("malformed_xml")
    assert (record.pmcid, record.version, record.source, record.fig_id) == ("PMC9", 2, "s.xml", "")


def test_article_without_figures_and_unreadable_article(shared_fixtures):
    xml = (shared_fixtures / "pmc/nxml/pubmed_parser/6605965a.nxml").read_bytes()
    (record,) = figures_of(Article("a", ArticleMeta(pmcid="PMC1"), xml, [], lambda name: None))
    assert record.reason == "no_figures"
    broken = Article("b", ArticleMeta(pmcid="PMC2"), None, [], lambda name: None, error="md5_mismatch: k")
    assert [r.reason for r in figures_of(broken)] == ["md5_mismatch: k"]


def test_entities_are_not_expanded():
    xml = b'<!DOCTYPE article [<!ENTITY x SYSTEM "file:///etc/passwd">]><article><body><fig><caption><p>&x;</p></caption></fig></body></article>'
    records = extract_figures(xml)
    assert "root:" not in records[0].caption


def _bare_article(ids: str, body: str, permissions: str = "") -> bytes:
    return (
        '<article xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:ali="http://www.niso.org/schemas/ali/1.0/">'
        f"<front><article-meta>{ids}{permissions}</article-meta></front><body>{body}</body></article>"
    ).encode()


PMC_ID = '<article-id pub-id-type="pmc">PMC77</article-id>'
DOI_ID = '<article-id pub-id-type="doi">10.1/x</article-id>'
PUBLISHER_ID = '<article-id pub-id-type="publisher-id">00353</article-id>'
FIG = '<fig id="f1"><caption><p>A stained section of a kidney.</p></caption><graphic xlink:href="g1"/></fig>'


@pytest.mark.parametrize(
    ("ids", "key"),
    [
        (PMC_ID + DOI_ID, "PMC77"),
        (PUBLISHER_ID + DOI_ID, "doi:10.1/x"),
        (PUBLISHER_ID, "publisher-id:00353"),
        ("", "file:article.xml"),
    ],
)
def test_an_article_without_pmcid_is_keyed_by_doi_then_publisher_id_then_file_name(ids: str, key: str) -> None:
    from biomedclip.corpus.sources.selection import with_xml_metadata

    article = Article("some/folder/article.xml", ArticleMeta(pmcid=""), _bare_article(ids, FIG), [], io.BytesIO)
    keyed = with_xml_metadata(article)
    assert keyed.meta.pmcid == key
    assert [r.pmcid for r in figures_of(keyed)] == [key]


@pytest.mark.parametrize(
    ("permissions", "license_code"),
    [
        ('<permissions><license license-type="open-access"><ali:license_ref>'
         "https://creativecommons.org/licenses/by-nc/4.0/</ali:license_ref></license></permissions>", "CC BY-NC"),
        ('<permissions><license license-type="cc-by-sa"><license-p>Terms.</license-p></license></permissions>',
         "CC BY-SA"),
        ("<permissions><license><license-p>Elsevier hereby grants permission to make all its COVID-19-related "
         "research available.</license-p></license></permissions>", "NO-CC CODE"),
        ("<permissions><copyright-statement>All rights reserved.</copyright-statement></permissions>", None),
    ],
)  # fmt: skip
def test_license_from_the_xml(permissions: str, license_code: str | None) -> None:
    xml = _bare_article('<article-id pub-id-type="pmc">1</article-id>', FIG, permissions)
    assert extract_figures(xml)[0].license == license_code


def test_the_lancet_packages_state_a_non_cc_license(shared_fixtures):
    for name in ("PMC7112410.tar.gz", "PMC7135076.tar.gz"):
        (article,) = open_source(str(shared_fixtures / "pmc/packages/oa_package_tarballs" / name)).articles()
        assert article.meta.license == "NO-CC CODE"  # PMC's own code for them in oa_file_list.csv
        assert {r.license for r in figures_of(article)} == {"NO-CC CODE"}


def _caption_fig(fig_id: str, text: str) -> str:
    return f'<fig id="{fig_id}"><caption><p>{text}</p></caption><graphic xlink:href="{fig_id}"/></fig>'


def test_caption_length_is_bounded_during_extraction_exactly_at_the_limit() -> None:
    limit = 50
    body = _caption_fig("at", "x" * limit) + _caption_fig("over", "x" * (limit + 1)) + _caption_fig("ok", "fine")
    records = {r.fig_id: r for r in extract_figures(_bare_article("", body), max_caption_chars=limit)}
    assert (records["at"].status, records["at"].caption) == ("accepted", "x" * limit)
    assert (records["over"].status, records["over"].reason) == ("rejected", "caption_too_long")
    assert records["over"].caption == "x" * limit  # the head is kept for the catalog, never the whole text
    assert records["ok"].status == "accepted"


def test_a_huge_caption_is_refused_without_copying_it() -> None:
    huge = "word " * 2_000_000  # 10 MB of caption in one text node
    xml = _bare_article("", _caption_fig("huge", huge) + FIG)
    tracemalloc.start()
    try:
        records = extract_figures(xml)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(r.fig_id, r.status, r.reason) for r in records] == [
        ("huge", "rejected", "caption_too_long"),
        ("f1", "accepted", ""),
    ]
    assert len(records[0].caption) <= 20_000
    assert peak < 24_000_000  # the 10 MB text node once, and no split/join/normalised copies of it


def test_deeply_nested_caption_costs_that_figure_not_the_article() -> None:
    deep = "<italic>" * 700 + "deep" + "</italic>" * 700
    records = extract_figures(_bare_article("", FIG + _caption_fig("deep", deep)))
    assert [(r.fig_id, r.status, r.reason) for r in records] == [
        ("f1", "accepted", ""),
        ("deep", "rejected", "caption_too_deep"),
    ]


def test_caption_depth_limit_is_exact() -> None:
    from biomedclip.corpus.jats import MAX_CAPTION_DEPTH

    def nested(depth: int) -> str:  # <caption> and <p> are two levels, each <bold> one more
        inner = depth - 2
        return "<bold>" * inner + "a caption that nests" + "</bold>" * inner

    body = _caption_fig("at", nested(MAX_CAPTION_DEPTH)) + _caption_fig("over", nested(MAX_CAPTION_DEPTH + 1))
    records = {r.fig_id: r for r in extract_figures(_bare_article("", body))}
    assert (records["at"].status, records["at"].caption) == ("accepted", "a caption that nests")
    assert (records["over"].status, records["over"].reason) == ("rejected", "caption_too_deep")
