"""Local sources: oa_package tarballs (real, truncated, hostile), package folders, JATS files, image folders."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from biomedclip.corpus.jats import figures_of
from biomedclip.corpus.records import MediaError, TransientMediaError
from biomedclip.corpus.sources import (
    FolderSource,
    ImageFolderSource,
    PackageSource,
    Selection,
    SourceError,
    SourceLimits,
    open_source,
)


def _pmc(shared: Path) -> Path:
    return shared / "pmc" / "packages"


def test_real_tarball_is_read_without_extracting(shared_fixtures, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _pmc(shared_fixtures) / "oa_package_tarballs" / "PMC7112410.tar.gz"
    (article,) = open_source(str(path)).articles()
    assert article.meta.pmcid == "PMC7112410" and article.error is None
    assert "gr1_lrg.jpg" in article.media and not any(n.endswith(".pdf") for n in article.media)
    with tarfile.open(path) as archive:
        expected = archive.extractfile("PMC7112410/gr1_lrg.jpg").read()
    assert article.open_media("gr1_lrg.jpg").read() == expected
    records = figures_of(article)
    assert [r.graphic for r in records] == ["gr1_lrg", "gr2_lrg", "gr3_lrg", "gr4_lrg"]
    assert records[0].caption == "Temporal clinical profiles in 75 patients with SARS. Mean (SD) are presented."
    assert list(tmp_path.iterdir()) == []


def test_truncated_tarball_yields_what_is_readable(shared_fixtures):
    path = _pmc(shared_fixtures) / "extracted" / "oa_package_tarball" / "PMC10802347.tar.gz.truncated"
    (article,) = open_source(str(path)).articles()
    assert article.xml is not None and article.error is None
    assert "nihpp-2023.12.31.573776v1-f0004.jpg" in article.media
    assert len(figures_of(article)) == 4
    with pytest.raises(TransientMediaError, match="truncated_archive"):
        article.open_media("nihpp-2023.12.31.573776v1-f0001.jpg")


def test_truncated_before_the_xml_is_an_article_rejection(shared_fixtures, tmp_path):
    data = (_pmc(shared_fixtures) / "oa_package_tarballs" / "PMC7112410.tar.gz").read_bytes()
    cut = tmp_path / "PMC7112410.tar.gz"
    cut.write_bytes(data[:3000])
    (article,) = PackageSource(cut).articles()
    assert article.xml is None and article.error.startswith("truncated_archive")
    assert figures_of(article)[0].reason.startswith("truncated_archive")


def _add(archive: tarfile.TarFile, name: str, data: bytes = b"", **attributes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attributes.items():
        setattr(info, key, value)
    archive.addfile(info, io.BytesIO(data) if data else None)


def test_hostile_tar_members_never_become_media(tmp_path):
    xml = (
        b'<article xmlns:xlink="http://www.w3.org/1999/xlink"><body><fig id="f"><caption><p>C.</p></caption>'
        b'<graphic xlink:href="good"/></fig></body></article>'
    )
    path = tmp_path / "pkg" / "PMC42.tar.gz"
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as archive:
        _add(archive, "PMC42/../../escape.jpg", b"evil")
        _add(archive, "/abs/absolute.jpg", b"evil")
        _add(archive, "PMC42/sym.jpg", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        _add(archive, "PMC42/hard.jpg", type=tarfile.LNKTYPE, linkname="PMC42/good.jpg")
        _add(archive, "PMC42/big.jpg", b"x" * 5000)
        _add(archive, "PMC42/good.jpg", b"\xff\xd8good")
        _add(archive, "PMC42/main.nxml", xml)
    (article,) = PackageSource(path, limits=SourceLimits(max_member_bytes=4096)).articles()
    assert article.meta.pmcid == "PMC42" and "good.jpg" in article.media
    assert article.open_media("good.jpg").read() == b"\xff\xd8good"
    refused = [
        ("sym.jpg", "link_member"),
        ("hard.jpg", "link_member"),
        ("big.jpg", "member_too_large"),
        ("../../escape.jpg", "unsafe_member_path"),
        ("/abs/absolute.jpg", "unsafe_member_path"),
    ]
    for name, reason in refused:
        with pytest.raises(MediaError, match=f"^{reason}: "):
            article.open_media(name)
    assert [r.status for r in figures_of(article)] == ["accepted"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["PMC42.tar.gz", "pkg"]


def test_tarball_without_xml_and_garbage_tarball(tmp_path):
    with tarfile.open(tmp_path / "PMC1.tar.gz", "w:gz") as archive:
        _add(archive, "PMC1/a.jpg", b"\xff\xd8")
        _add(archive, "PMC1/empty.jpg")
    (tmp_path / "PMC2.tgz").write_bytes(b"\x1f\x8b not really gzip")
    (tmp_path / "PMC3.tar.gz").write_bytes(b"")
    articles = list(open_source(str(tmp_path)).articles())
    assert articles[0].media == ["a.jpg", "empty.jpg"]
    assert [(a.meta.pmcid, a.error.split(":")[0]) for a in articles] == [
        ("PMC1", "no_xml"),
        ("PMC2", "truncated_archive"),
        ("PMC3", "truncated_archive"),
    ]


def test_folder_of_extracted_packages(shared_fixtures):
    articles = {Path(a.source).name: a for a in FolderSource(_pmc(shared_fixtures) / "extracted").articles()}
    package = articles["nihpp-2023.12.31.573776v1.nxml"]
    assert package.meta.pmcid == "PMC10802347" and len(package.media) == 7
    assert package.open_media("nihpp-2023.12.31.573776v1-f0002.jpg").read(2) == b"\xff\xd8"
    image_only = articles["PMC10118017"]
    records = figures_of(image_only)
    assert [(r.fig_id, r.label, r.graphic) for r in records] == [
        ("f1", "Figure 1", "fpls-14-1154535-g001"),
        ("f2", "Figure 2", "fpls-14-1154535-g002"),
        ("f3", "Figure 3", "fpls-14-1154535-g003"),
    ]
    assert records[0].caption == "Examples of major anthocyanin species in Andean maize."
    assert articles["PMC1064083"].error.startswith("no_xml")
    assert articles["PMC10802347.repacked_no_pdf.tar.gz"].error is None
    with pytest.raises(MediaError):
        package.open_media("../../../etc/passwd")


def test_zero_byte_and_malformed_xml_files(tmp_path):
    package = tmp_path / "PMC7"
    package.mkdir()
    (package / "PMC7.nxml").write_bytes(b"<article/>")
    (package / "empty.jpg").write_bytes(b"")
    (tmp_path / "PMC5.xml").write_bytes(b"")
    (tmp_path / "PMC6.nxml").write_bytes(b"<article><body><fig>")
    articles = list(open_source(str(tmp_path)).articles())
    records = [r for a in articles for r in figures_of(a)]
    assert [(r.pmcid, r.reason.split(":")[0]) for r in records] == [
        ("PMC5", "malformed_xml"),
        ("PMC6", "malformed_xml"),
        ("PMC7", "no_figures"),
    ]
    assert articles[2].open_media("empty.jpg").read() == b""  # the image stage rejects it as empty_file


def test_selection_by_license_pmcid_and_limit(shared_fixtures):
    folder = shared_fixtures / "pmc" / "nxml"
    everything = list(open_source(str(folder)).articles())
    commercial = list(open_source(str(folder), Selection(license="commercial")).articles())
    noncommercial = list(open_source(str(folder), Selection(license="noncommercial")).articles())
    other = list(open_source(str(folder), Selection(license="other")).articles())
    assert {a.meta.license for a in commercial} == {"CC BY", "public domain"} and len(commercial) > 5
    assert {a.meta.license for a in noncommercial} == {"CC BY-NC", "CC BY-NC-ND"}
    assert {a.meta.license for a in other} == {"NO-CC CODE", None}
    assert len(commercial) + len(noncommercial) + len(other) == len(everything)
    by_name = list(open_source(str(folder), Selection(license="CC BY-NC-ND, public domain")).articles())
    assert {a.meta.license for a in by_name} == {"CC BY-NC-ND", "public domain"}
    assert {a.meta.pmcid for a in by_name} < {a.meta.pmcid for a in commercial + noncommercial}
    wanted = frozenset({"PMC1790863", "PMC6000000"})
    chosen = list(open_source(str(folder), Selection(pmcids=wanted)).articles())
    assert sorted(a.meta.pmcid for a in chosen) == sorted(wanted)
    assert len(list(open_source(str(folder), Selection(limit=3)).articles())) == 3


def test_image_folder_with_caption_template(shared_fixtures, tmp_path):
    images = sorted((shared_fixtures / "images" / "bccd" / "JPEGImages").glob("*.jpg"))[:3]
    for folder, image in zip(["pleural_effusion", "normal", "normal"], images, strict=True):
        (tmp_path / folder).mkdir(exist_ok=True)
        shutil.copy(image, tmp_path / folder / image.name)
    (tmp_path / "normal" / "notes.txt").write_text("not an image")
    source = open_source(f"imagefolder:{tmp_path}", caption_template="a chest X-ray showing {label}")
    assert isinstance(source, ImageFolderSource)
    articles = list(source.articles())
    records = [r for a in articles for r in figures_of(a)]
    assert [r.caption for r in records] == ["a chest X-ray showing normal"] * 2 + [
        "a chest X-ray showing pleural effusion"
    ]
    assert records[2].pmcid == f"{records[2].split}/pleural_effusion/{images[0].stem}"  # split: labelled_folders
    assert records[2].split in ("train", "val", "test") and records[2].graphic == images[0].name
    assert articles[2].open_media(images[0].name).read() == images[0].read_bytes()


def test_bad_specs(tmp_path):
    for spec in [str(tmp_path / "missing"), f"imagefolder:{tmp_path / 'missing'}", "s3://"]:
        with pytest.raises(SourceError):
            open_source(spec)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SourceError):
        open_source(str(tmp_path / "notes.txt"))
    with pytest.raises(ValueError):
        Selection(license="comercial")
