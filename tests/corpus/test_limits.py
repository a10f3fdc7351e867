"""Bounds an input controls: figures per article (``too_many_figures``) and bytes per article of a folder source
(``article_too_large``, ``member_too_large``), each tested exactly at the bound and one over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biomedclip.corpus.articles import process_payload, read_article
from biomedclip.corpus.jats import extract_figures, figures_of
from biomedclip.corpus.records import MediaError
from biomedclip.corpus.sources import SourceLimits, open_source

DOCUMENTED_MAX_FIGURES = 2000  # README "Limits and failure behaviour"


def _xml(pmcid: int, graphics: list[str]) -> bytes:
    figs = "".join(
        f'<fig id="f{i}"><caption><p>Figure {i} of the article.</p></caption><graphic xlink:href="{g}"/></fig>'
        for i, g in enumerate(graphics)
    )
    return (
        '<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta><article-id pub-id-type="pmc">'
        f"PMC{pmcid}</article-id></article-meta></front><body>{figs}</body></article>"
    ).encode()


def _too_many(records) -> list:
    return [r for r in records if r.reason == "too_many_figures"]


@pytest.mark.parametrize("count", [DOCUMENTED_MAX_FIGURES, DOCUMENTED_MAX_FIGURES + 1])
def test_figures_past_the_default_bound_become_one_too_many_figures_record(count: int) -> None:
    records = extract_figures(_xml(7, [f"g{i}" for i in range(count)]))
    figures = [r for r in records if r.fig_id]
    assert [r.fig_id for r in figures] == [f"f{i}" for i in range(DOCUMENTED_MAX_FIGURES)]  # the first ones, in order
    assert all(r.status == "accepted" for r in figures)
    if count == DOCUMENTED_MAX_FIGURES:
        assert len(records) == DOCUMENTED_MAX_FIGURES and not _too_many(records)
    else:
        (rest,) = _too_many(records)
        assert (rest.pmcid, rest.fig_id, rest.status) == ("PMC7", "", "rejected")
        assert rest.detail == "1 figures past the first 2000 were not extracted"


def test_figure_bound_counts_every_article_of_a_wrapper() -> None:
    one, two = _xml(1, ["a", "b"]), _xml(2, ["c", "d"])
    wrapper = b"<pmc-articleset>" + one + two + b"</pmc-articleset>"
    records = extract_figures(wrapper, max_figures=3)
    assert [r.graphic for r in records] == ["a", "b", "c", ""]
    assert records[-1].detail == "1 figures past the first 3 were not extracted"


def test_too_many_figures_reaches_the_rows_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "PMC5.nxml").write_bytes(_xml(5, [f"g{i}" for i in range(DOCUMENTED_MAX_FIGURES + 3)]))
    (article,) = open_source(str(tmp_path)).articles()
    result = process_payload(read_article(article))
    reasons = [row.reason for row in result.rows]
    assert len(result.rows) == DOCUMENTED_MAX_FIGURES + 1
    assert reasons.count("too_many_figures") == 1
    (row,) = [row for row in result.rows if row.reason == "too_many_figures"]
    assert row.detail == "3 figures past the first 2000 were not extracted"


@pytest.mark.parametrize("entries", [2, 3])
def test_figure_bound_applies_to_figure_metadata_articles(tmp_path: Path, entries: int) -> None:
    folder = tmp_path / "PMC4"
    folder.mkdir()
    metadata = [{"figure_id": f"F{i}", "caption": f"Caption {i}.", "original_file_path": f"f{i}.jpg"} for i in range(3)]
    for i in range(3):
        (folder / f"f{i}.jpg").write_bytes(b"\xff\xd8")
    (tmp_path / "PMC4_figures_metadata.json").write_text(json.dumps(metadata[:entries]))
    (article,) = open_source(str(tmp_path)).articles()
    records = figures_of(article, max_figures=2)
    assert [r.fig_id for r in records] == ["F0", "F1"] + ([""] if entries == 3 else [])
    assert len(_too_many(records)) == (entries == 3)


def _package(root: Path, sizes: dict[str, int], referenced: list[str]) -> int:
    """A package folder ``PMC3`` with images of the given sizes; returns the size of its XML."""
    folder = root / "PMC3"
    folder.mkdir()
    xml = _xml(3, referenced)
    (folder / "PMC3.nxml").write_bytes(xml)
    for name, size in sizes.items():
        (folder / name).write_bytes(b"\xff" * size)
    return len(xml)


@pytest.mark.parametrize("over", [0, 1])
def test_folder_article_byte_budget(tmp_path: Path, over: int) -> None:
    sizes = {"a.jpg": 300, "b.jpg": 200, "c.jpg": 5000}  # c is never referenced: it is not read, costs nothing
    xml_size = _package(tmp_path, sizes, ["b", "a"])
    limits = SourceLimits(max_article_bytes=xml_size + 300 + 200 - over)
    (article,) = open_source(str(tmp_path), limits=limits).articles()
    assert article.open_media("a.jpg").read() == b"\xff" * 300  # budget taken in name order: a first
    if over:
        with pytest.raises(MediaError, match=r"^article_too_large: "):
            article.open_media("b.jpg")
        payload = read_article(article)
        assert payload.media_errors["b.jpg"][0] == "article_too_large"
        assert sorted(payload.media) == ["a.jpg"]
    else:
        assert article.open_media("b.jpg").read() == b"\xff" * 200


def test_files_refused_anyway_spend_no_article_budget(tmp_path: Path) -> None:
    xml_size = _package(tmp_path, {"a.jpg": 1001, "b.jpg": 200}, ["a", "b"])
    limits = SourceLimits(max_member_bytes=1000, max_article_bytes=xml_size + 200)
    (article,) = open_source(str(tmp_path), limits=limits).articles()
    with pytest.raises(MediaError, match=r"^member_too_large: "):
        article.open_media("a.jpg")
    assert article.open_media("b.jpg").read() == b"\xff" * 200


@pytest.mark.parametrize("over", [0, 1])
def test_image_only_article_byte_budget(tmp_path: Path, over: int) -> None:
    folder = tmp_path / "PMC6"
    folder.mkdir()
    (folder / "f0.jpg").write_bytes(b"\xff" * 100)
    (folder / "f1.jpg").write_bytes(b"\xff" * 100)
    entries = [{"figure_id": f"F{i}", "caption": "A caption.", "original_file_path": f"f{i}.jpg"} for i in range(2)]
    metadata = tmp_path / "PMC6_figures_metadata.json"
    metadata.write_text(json.dumps(entries))
    limits = SourceLimits(max_article_bytes=metadata.stat().st_size + 200 - over)
    (article,) = open_source(str(tmp_path), limits=limits).articles()
    assert article.open_media("f0.jpg").read() == b"\xff" * 100
    if over:
        with pytest.raises(MediaError, match=r"^article_too_large: "):
            article.open_media("f1.jpg")
    else:
        assert article.open_media("f1.jpg").read() == b"\xff" * 100


@pytest.mark.parametrize("over", [0, 1])
def test_folder_xml_over_the_member_limit_costs_its_article(tmp_path: Path, over: int) -> None:
    xml = _xml(9, ["a"])
    (tmp_path / "PMC9.nxml").write_bytes(xml)
    (article,) = open_source(str(tmp_path), limits=SourceLimits(max_member_bytes=len(xml) - over)).articles()
    if over:
        assert article.xml is None and article.error.startswith("member_too_large: ")
        assert figures_of(article)[0].reason.startswith("member_too_large")
    else:
        assert article.xml == xml and article.error is None
