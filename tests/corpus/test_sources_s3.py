"""The S3 source against a real S3-compatible server on loopback (moto) holding real PMC articles."""

from __future__ import annotations

import hashlib
import io
import json
import pickle

import pytest

from biomedclip.corpus.jats import figures_of
from biomedclip.corpus.records import MediaError
from biomedclip.corpus.sources import FolderSource, S3Source, Selection, open_source

XML = (
    b'<article xmlns:xlink="http://www.w3.org/1999/xlink"><body><fig id="f1"><caption><p>A cell.</p></caption>'
    b'<graphic xlink:href="f1"/></fig></body></article>'
)


def _source(endpoint: str, bucket: str, selection: Selection | None = None) -> S3Source:
    source = open_source(f"s3://{bucket}", selection, endpoint_url=endpoint)
    source.backoff_s = 0.0
    return source


def test_real_articles_latest_version_md5_checked(pmc_bucket, shared_fixtures):
    source = _source(pmc_bucket.endpoint, pmc_bucket.bucket)
    articles = {a.meta.pmcid: a for a in source.articles()}
    assert sorted(articles) == pmc_bucket.pmcids and len(articles) >= 25
    tarball_article = articles["PMC7112410"]
    assert tarball_article.meta.version == 2 and tarball_article.error is None
    local = next(FolderSource(shared_fixtures / "pmc/packages/oa_package_tarballs").articles())
    assert tarball_article.xml == local.xml
    assert tarball_article.open_media("gr2_lrg.jpg").read() == local.open_media("gr2_lrg.jpg").read()
    accepted = [r for a in articles.values() for r in figures_of(a) if r.status == "accepted"]
    assert len(accepted) >= 100 and all(r.version == 2 for r in accepted)
    assert {r.license for r in figures_of(articles["PMC10802347"])} == {"CC BY-NC-ND"}


def test_source_is_picklable_and_reads_in_another_process_shape(pmc_bucket):
    source = _source(pmc_bucket.endpoint, pmc_bucket.bucket, Selection(pmcids=frozenset({"PMC7135076"})))
    list(source.articles())
    clone = pickle.loads(pickle.dumps(source))
    (article,) = clone.articles()
    restored = pickle.loads(pickle.dumps(article))
    assert restored.open_media("gr1_lrg.jpg").read(2) == b"\xff\xd8"


def test_selection_license_retracted_pmcids_limit(s3_client, s3_endpoint, empty_bucket, write_article):
    for number, (license_code, retracted) in enumerate(
        [("CC BY", False), ("CC0", False), ("CC BY-NC-SA", False), ("CC BY", True), (None, False)], start=1
    ):
        write_article(
            s3_client,
            empty_bucket,
            f"PMC{number}",
            1,
            XML,
            {"f1.jpg": b"\xff\xd8"},
            license_code=license_code,
            is_retracted=retracted,
        )

    def pmcids(selection: Selection) -> list[str]:
        return [a.meta.pmcid for a in _source(s3_endpoint, empty_bucket, selection).articles()]

    assert pmcids(Selection()) == ["PMC1", "PMC2", "PMC3", "PMC5"]
    assert pmcids(Selection(include_retracted=True)) == ["PMC1", "PMC2", "PMC3", "PMC4", "PMC5"]
    assert pmcids(Selection(license="commercial")) == ["PMC1", "PMC2"]
    assert pmcids(Selection(license="noncommercial")) == ["PMC3"]
    assert pmcids(Selection(pmcids=frozenset({"PMC3", "PMC5", "PMC99"}))) == ["PMC3", "PMC5"]
    assert pmcids(Selection(limit=2)) == ["PMC1", "PMC2"]


def test_versions_are_grouped_numerically(s3_client, s3_endpoint, empty_bucket, write_article):
    for pmcid, version in [("PMC12", 2), ("PMC12", 10), ("PMC12", 9), ("PMC123", 1)]:
        write_article(s3_client, empty_bucket, pmcid, version, XML, {})
    versions = [(p, v) for p, v, _ in _source(s3_endpoint, empty_bucket).latest_versions()]
    assert versions == [("PMC12", 10), ("PMC123", 1)]


def test_md5_mismatch_zero_byte_and_missing_objects(s3_client, s3_endpoint, empty_bucket, write_article):
    good = {"f1.jpg": b"\xff\xd8good"}
    write_article(
        s3_client, empty_bucket, "PMC1", 1, XML, good, metadata={"xml_url": "s3://x/PMC1.1/PMC1.1.xml?md5=" + "0" * 32}
    )
    write_article(s3_client, empty_bucket, "PMC2", 1, XML, {**good, "empty.jpg": b"", "bad.jpg": b"abc"})
    s3_client.put_object(Bucket=empty_bucket, Key="PMC2.1/bad.jpg", Body=b"abd")  # corrupted after listing
    write_article(s3_client, empty_bucket, "PMC3", 1, b"", good)
    write_article(s3_client, empty_bucket, "PMC4", 1, XML, good)
    s3_client.delete_object(Bucket=empty_bucket, Key="PMC4.1/PMC4.1.xml")
    s3_client.put_object(Bucket=empty_bucket, Key="PMC5.1/PMC5.1.json", Body=b"{not json")
    articles = {a.meta.pmcid: a for a in _source(s3_endpoint, empty_bucket).articles()}
    assert articles["PMC1"].error.startswith("md5_mismatch") and articles["PMC1"].xml is None
    assert articles["PMC3"].error.startswith("empty_object")
    assert articles["PMC4"].error.startswith("missing_object")
    assert articles["PMC5"].error.startswith("bad_metadata")
    media = articles["PMC2"]
    assert media.error is None and media.open_media("f1.jpg").read() == b"\xff\xd8good"
    assert media.open_media("empty.jpg").read() == b""  # md5-checked; the image stage rejects it as empty_file
    for name, reason in [("bad.jpg", "md5_mismatch"), ("nope.jpg", "missing")]:
        with pytest.raises(MediaError, match=reason):
            media.open_media(name)
    reasons = {pmcid: [r.reason.split(":")[0] for r in figures_of(a)] for pmcid, a in articles.items()}
    assert reasons["PMC1"] == ["md5_mismatch"] and reasons["PMC2"] == [""]


def test_etag_checked_and_metadata_fallbacks(s3_client, s3_endpoint, empty_bucket):
    md5 = hashlib.md5(b"\xff\xd8img").hexdigest()
    s3_client.put_object(Bucket=empty_bucket, Key="PMC7.1/PMC7.1.xml", Body=XML)
    s3_client.put_object(Bucket=empty_bucket, Key="PMC7.1/f1.jpg", Body=b"\xff\xd8img")
    s3_client.put_object(Bucket=empty_bucket, Key="PMC7.1/PMC7.1.pdf", Body=b"%PDF")
    record = {"pmcid": "PMC7", "version": 1, "license_code": "CC BY", "is_retracted": False}
    s3_client.put_object(Bucket=empty_bucket, Key="metadata/PMC7.1.json", Body=json.dumps(record).encode())
    (article,) = _source(s3_endpoint, empty_bucket).articles()
    assert article.error is None and article.media == ["f1.jpg"] and article.meta.license == "CC BY"
    assert hashlib.md5(article.open_media("f1.jpg").read()).hexdigest() == md5
    assert [r.status for r in figures_of(article)] == ["accepted"]


def test_a_damaged_transfer_is_retried_and_never_used(pmc_bucket):
    source = _source(pmc_bucket.endpoint, pmc_bucket.bucket, Selection(pmcids=frozenset({"PMC7135076"})))
    real_get = source.client.get_object
    damaged: list[str] = []

    def flaky_get(**kwargs):
        response = real_get(**kwargs)
        if kwargs["Key"].endswith(".xml") and len(damaged) < 2:
            data = response["Body"].read()
            damaged.append(kwargs["Key"])
            cut = len(damaged) == 1  # first a short read, then flipped bytes of the right length
            response["Body"] = io.BytesIO(data[:-100] if cut else data[:-1] + b"!")
        return response

    source.client.get_object = flaky_get
    (article,) = source.articles()
    assert len(damaged) == 2 and article.error is None and article.xml.rstrip().endswith(b">")
    source.attempts = 2
    damaged.clear()
    (article,) = source.articles()
    assert article.xml is None and article.error.startswith("md5_mismatch")


def test_member_and_article_byte_caps(s3_client, s3_endpoint, empty_bucket, write_article):
    from biomedclip.corpus.sources import SourceLimits

    media = {"a.jpg": b"a" * 1000, "b.jpg": b"b" * 1000, "c.jpg": b"c" * 1001}
    write_article(s3_client, empty_bucket, "PMC9", 1, XML, media)
    limits = SourceLimits(max_member_bytes=1000, max_article_bytes=1999)
    source = open_source(f"s3://{empty_bucket}", endpoint_url=s3_endpoint, limits=limits)
    (article,) = source.articles()
    with pytest.raises(MediaError, match=r"^member_too_large: "):
        article.open_media("c.jpg")
    assert article.open_media("a.jpg").read() == media["a.jpg"]  # exactly the member limit
    with pytest.raises(MediaError, match=r"^article_too_large: "):
        article.open_media("b.jpg")  # 1000 + 1000 bytes is one past the article's budget


def test_selection_by_licence_group_and_name(s3_client, s3_endpoint, empty_bucket, write_article):
    codes = ["CC BY-SA", "CC BY-ND", "CC BY-NC", "NO-CC CODE", "TDM", "CC0", None]
    for number, code in enumerate(codes, start=1):
        write_article(s3_client, empty_bucket, f"PMC{number}", 1, XML, {"f1.jpg": b"\xff\xd8"}, license_code=code)

    def pmcids(licence: str) -> list[str]:
        return [a.meta.pmcid for a in _source(s3_endpoint, empty_bucket, Selection(license=licence)).articles()]

    assert pmcids("commercial") == ["PMC1", "PMC2", "PMC6"]
    assert pmcids("noncommercial") == ["PMC3"]
    assert pmcids("other") == ["PMC4", "PMC5", "PMC7"]
    assert pmcids("cc-by-nd,NO-CC CODE") == ["PMC2", "PMC4"]
    assert pmcids("noncommercial, CC0") == ["PMC3", "PMC6"]
