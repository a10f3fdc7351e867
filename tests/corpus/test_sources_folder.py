"""Folder sources never read through symbolic links out of the source folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from biomedclip.corpus.jats import figures_of
from biomedclip.corpus.records import MediaError
from biomedclip.corpus.sources import SourceLimits, open_source

XML = (
    b'<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta><article-id pub-id-type="pmc">'
    b'PMC%d</article-id></article-meta></front><body><fig id="f1"><caption><p>A figure of the article.</p>'
    b'</caption><graphic xlink:href="f1"/></fig></body></article>'
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.jpg").write_bytes(b"\xff\xd8 secret bytes")
    (secret / "PMC9.nxml").write_bytes(XML % 9)
    (secret / "PMC8").mkdir()
    (secret / "PMC8" / "PMC8.nxml").write_bytes(XML % 8)
    root = tmp_path / "corpus"
    (root / "PMC1").mkdir(parents=True)
    (root / "PMC1" / "PMC1.nxml").write_bytes(XML % 1)
    os.symlink(secret / "secret.jpg", root / "PMC1" / "f1.jpg")
    (root / "PMC2").mkdir()
    (root / "PMC2" / "PMC2.nxml").write_bytes(XML % 2)
    (root / "PMC2" / "real.jpg").write_bytes(b"\xff\xd8 inside")
    os.symlink(root / "PMC2" / "real.jpg", root / "PMC2" / "f1.jpg")  # a link inside the folder is fine
    os.symlink(secret / "PMC9.nxml", root / "PMC9.nxml")
    os.symlink(secret / "PMC8", root / "PMC8")
    return root


def test_links_out_of_the_folder_are_refused_with_a_reason(tree: Path):
    articles = {a.meta.pmcid: a for a in open_source(str(tree)).articles()}
    assert sorted(articles) == ["PMC1", "PMC2", "PMC8", "PMC9"]
    with pytest.raises(MediaError, match=r"^symlink_outside_source: "):
        articles["PMC1"].open_media("f1.jpg")
    assert articles["PMC2"].open_media("f1.jpg").read() == b"\xff\xd8 inside"
    for pmcid in ("PMC8", "PMC9"):  # a linked XML file and a linked package folder
        assert articles[pmcid].xml is None and articles[pmcid].error.startswith("symlink_outside_source")
        assert figures_of(articles[pmcid])[0].reason.startswith("symlink_outside_source")


def test_folder_media_over_the_member_limit_are_refused(tmp_path: Path):
    (tmp_path / "PMC3").mkdir()
    (tmp_path / "PMC3" / "PMC3.nxml").write_bytes(XML % 3)
    (tmp_path / "PMC3" / "f1.jpg").write_bytes(b"x" * 1001)
    (tmp_path / "PMC3" / "f2.jpg").write_bytes(b"x" * 1000)  # limits above the XML's size: the XML is a member too
    (article,) = open_source(str(tmp_path), limits=SourceLimits(max_member_bytes=1000)).articles()
    assert article.open_media("f2.jpg").read() == b"x" * 1000
    with pytest.raises(MediaError, match=r"^member_too_large: "):
        article.open_media("f1.jpg")
