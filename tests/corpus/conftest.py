"""Corpus test fixtures: a real S3-compatible server on loopback (moto) filled with the real PMC fixtures."""

from __future__ import annotations

import json
import logging
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from biomedclip.corpus.sources import FolderSource
from biomedclip.corpus.sources.s3_layout import media_bytes, mirror_source, write_article

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
