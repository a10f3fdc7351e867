"""Corpus test fixtures: a real S3-compatible server on loopback (moto) filled with the real PMC fixtures.

``write_article`` writes one article in PMC's new S3 layout (see ``biomedclip.corpus.sources.s3``):
``PMC<id>.<v>/PMC<id>.<v>.xml``, ``PMC<id>.<v>/PMC<id>.<v>.json`` (metadata with ``?md5=`` URLs), a copy of the
JSON under ``metadata/`` and every media file under the version prefix; tests get it as the ``write_article``
fixture.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from biomedclip.corpus.records import Article, MediaError, Source
from biomedclip.corpus.sources import FolderSource
from biomedclip.corpus.sources.selection import with_xml_metadata

PMC_BUCKET = "pmc-oa-opendata"


@dataclass(frozen=True)
class PmcBucket:
    endpoint: str
    bucket: str
    pmcids: list[str]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 and a free port, for the whole session."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def make_client(endpoint: str):
    """A signed boto3 S3 client with dummy credentials (moto accepts any) for writing test data."""
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )


@pytest.fixture(scope="session")
def s3_client(s3_endpoint):
    return make_client(s3_endpoint)


def create_public_bucket(client, name: str) -> None:
    """A bucket anyone may list and read, like ``pmc-oa-opendata`` (anonymous clients get 403 otherwise)."""
    client.create_bucket(Bucket=name)
    statement = {
        "Effect": "Allow",
        "Principal": "*",
        "Action": ["s3:GetObject", "s3:ListBucket"],
        "Resource": [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"],
    }
    client.put_bucket_policy(Bucket=name, Policy=json.dumps({"Version": "2012-10-17", "Statement": [statement]}))


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def write_article(
    client: Any,
    bucket: str,
    pmcid: str,
    version: int,
    xml: bytes,
    media: Mapping[str, bytes],
    *,
    prefix: str = "",
    license_code: str | None = "CC BY",
    is_retracted: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Upload one article version; returns its version prefix. ``metadata`` overrides/adds JSON fields."""
    stem = f"{pmcid}.{version}"
    version_prefix = f"{prefix}{stem}/"
    url = f"s3://{bucket}/{version_prefix}"
    record: dict[str, Any] = {
        "pmcid": pmcid,
        "version": version,
        "is_pmc_openaccess": True,
        "is_manuscript": False,
        "is_historical_ocr": False,
        "is_retracted": is_retracted,
        "license_code": license_code,
        "xml_url": f"{url}{stem}.xml?md5={_md5(xml)}",
        "media_urls": [f"{url}{name}?md5={_md5(data)}" for name, data in sorted(media.items())],
    }
    record.update(metadata or {})
    client.put_object(Bucket=bucket, Key=f"{version_prefix}{stem}.xml", Body=xml)
    client.put_object(Bucket=bucket, Key=f"{version_prefix}{stem}.json", Body=json.dumps(record).encode())
    client.put_object(Bucket=bucket, Key=f"{prefix}metadata/{stem}.json", Body=json.dumps(record).encode())
    for name, data in media.items():
        client.put_object(Bucket=bucket, Key=f"{version_prefix}{name}", Body=data)
    return version_prefix


def media_bytes(article: Article) -> dict[str, bytes]:
    """Every readable media file of an article, by name (unreadable ones are left out)."""
    files = {}
    for name in article.media:
        try:
            with article.open_media(name) as handle:
                files[name] = handle.read()
        except MediaError:
            continue
    return files


def mirror_source(source: Source, client: Any, bucket: str, *, prefix: str = "", version: int = 1) -> list[str]:
    """Write every readable article of ``source`` that has XML and a PMCID (license read from the XML).

    Returns the PMCIDs written.
    """
    written = []
    for article in map(with_xml_metadata, source.articles()):
        if article.xml is None or not article.meta.pmcid.startswith("PMC"):
            continue
        write_article(
            client,
            bucket,
            article.meta.pmcid,
            article.meta.version or version,
            article.xml,
            media_bytes(article),
            prefix=prefix,
            license_code=article.meta.license,
            is_retracted=article.meta.is_retracted,
        )
        written.append(article.meta.pmcid)
    return written


@pytest.fixture(name="write_article")
def write_article_fixture():
    """``write_article`` (this module) for tests."""
    return write_article


@pytest.fixture(scope="session")
def pmc_bucket(s3_endpoint, s3_client, shared_fixtures: Path) -> PmcBucket:
    """The real fixture articles (XML + PMCID) in PMC's new S3 layout, plus an older version of PMC7112410."""
    create_public_bucket(s3_client, PMC_BUCKET)
    pmcids = mirror_source(FolderSource(shared_fixtures / "pmc"), s3_client, PMC_BUCKET, version=2)
    old = next(FolderSource(shared_fixtures / "pmc" / "packages" / "oa_package_tarballs").articles())
    write_article(s3_client, PMC_BUCKET, old.meta.pmcid, 1, b"<article>old version</article>", media_bytes(old))
    return PmcBucket(endpoint=s3_endpoint, bucket=PMC_BUCKET, pmcids=sorted(set(pmcids)))


@pytest.fixture
def empty_bucket(s3_client) -> str:
    """A fresh, empty, publicly readable bucket on the session's server."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    create_public_bucket(s3_client, name)
    return name


@pytest.fixture
def s3_env(s3_endpoint: str, s3_credentials: None, monkeypatch: pytest.MonkeyPatch) -> str:
    """The project's S3 client pointed at the local server, with dummy credentials; the endpoint."""
    monkeypatch.setenv("BIOMEDCLIP_S3_ENDPOINT", s3_endpoint)
    return s3_endpoint
