"""S3 listing that fails loudly, transient GET failures that are retried, and the daily inventory, on loopback."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pyarrow.parquet as pq
import pytest
from PIL import Image

from biomedclip.corpus.build import build
from biomedclip.corpus.records import SourceListingError, TransientMediaError
from biomedclip.corpus.sources import S3Source, Selection

SLOW_DOWN = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"


def _xml(*graphics: str) -> bytes:
    figs = "".join(
        f'<fig id="f{i}"><caption><p>Micrograph number {i} of the article.</p></caption>'
        f'<graphic xlink:href="{g}"/></fig>'
        for i, g in enumerate(graphics)
    )
    return f'<article xmlns:xlink="http://www.w3.org/1999/xlink"><body>{figs}</body></article>'.encode()


def _jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((96, 80), 40 + seed * 7).convert("RGB").save(out, "JPEG")
    return out.getvalue()


class Proxy:
    """A loopback HTTP proxy in front of the moto server; ``fail(method, path, query)`` says when to answer 503."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlparse(upstream)
        self.fail: Callable[[str, str, dict[str, list[str]]], bool] = lambda method, path, query: False
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                proxy.requests.append((self.command, url.path, query))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.fail(self.command, url.path, query):
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(SLOW_DOWN)
                    return
                connection = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port)
                connection.request(self.command, self.path, body or None, dict(self.headers))
                response = connection.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                connection.close()

            do_GET = do_PUT = do_HEAD = do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def proxy(s3_endpoint) -> Iterator[Proxy]:
    running = Proxy(s3_endpoint)
    yield running
    running.server.shutdown()
    running.server.server_close()


def _source(endpoint: str, bucket: str, **kwargs) -> S3Source:
    return S3Source(bucket, endpoint_url=endpoint, max_attempts=2, backoff_s=0.0, **kwargs)


def test_unreachable_endpoint_is_a_listing_error_naming_the_source(empty_bucket):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # nothing listens once the socket is closed
    source = _source(f"http://127.0.0.1:{closed}", empty_bucket)
    with pytest.raises(SourceListingError, match=rf"cannot list s3://{empty_bucket}/ .*EndpointConnectionError"):
        list(source.articles())


def test_a_prefix_throttled_beyond_the_retries_fails_the_listing(s3_client, empty_bucket, proxy, write_article):
    for pmcid in ("PMC1", "PMC2", "PMC3"):
        write_article(s3_client, empty_bucket, pmcid, 1, _xml(), {})
    proxy.fail = lambda method, path, query: query.get("prefix") == ["PMC2."]
    source = _source(proxy.endpoint, empty_bucket, selection=Selection(pmcids=frozenset({"PMC1", "PMC2", "PMC3"})))
    with pytest.raises(SourceListingError, match=r"prefix 'PMC2\.'.*SlowDown"):
        list(source.articles())
    proxy.fail = lambda method, path, query: query.get("delimiter") == ["/"] and "prefix" not in query
    with pytest.raises(SourceListingError, match="SlowDown"):
        list(_source(proxy.endpoint, empty_bucket).articles())


def test_a_throttled_media_get_is_transient_and_retried_next_run(
    s3_client, empty_bucket, proxy, write_article, tmp_path
):
    media = {f"g{i}.jpg": _jpeg(i) for i in range(3)}
    write_article(s3_client, empty_bucket, "PMC10", 1, _xml("g0", "g1"), {k: media[k] for k in ("g0.jpg", "g1.jpg")})
    write_article(s3_client, empty_bucket, "PMC11", 1, _xml("g2"), {"g2.jpg": media["g2.jpg"]})
    proxy.fail = lambda method, path, query: method == "GET" and path.endswith("/PMC10.1/g1.jpg")
    (article, _) = _source(proxy.endpoint, empty_bucket).articles()
    with pytest.raises(TransientMediaError, match=r"^s3_error: "):
        article.open_media("g1.jpg")
    out = tmp_path / "out"
    first = build([_source(proxy.endpoint, empty_bucket)], out, workers=0)
    rows = {r["key"]: r for r in pq.read_table(out / "catalog.parquet").to_pylist()}
    assert first.accepted == 2 and rows["PMC10_f1"]["reason"] == "s3_error"
    proxy.fail = lambda method, path, query: False  # the fault clears
    second = build([_source(proxy.endpoint, empty_bucket)], out, workers=0)
    assert (second.articles_processed, second.accepted) == (1, 3)  # PMC10 again, PMC11 stays done


def write_inventory(client, bucket: str, date: str, keys: list[str], *, md5: str | None = None) -> None:
    """An S3 inventory like the bucket's (README 5.2): a dated manifest naming one gzipped, header-less CSV."""
    rows = "".join(
        f'"{bucket}","{key}","2026-11-28T01:00:00.000Z","0123456789abcdef0123456789abcdef"\n' for key in keys
    )
    data = gzip.compress(rows.encode())
    data_key = f"inventory-reports/{bucket}/metadata/data/{date}.csv.gz"
    client.put_object(Bucket=bucket, Key=data_key, Body=data)
    manifest = {
        "sourceBucket": bucket,
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, LastModifiedDate, ETag",
        "files": [{"key": data_key, "size": len(data), "MD5checksum": md5 or hashlib.md5(data).hexdigest()}],
    }
    client.put_object(
        Bucket=bucket, Key=f"inventory-reports/{bucket}/metadata/{date}/manifest.json", Body=json.dumps(manifest)
    )


def _metadata_keys(client, bucket: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="metadata/")
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_inventory_lists_latest_versions_with_constant_requests(s3_client, empty_bucket, proxy, write_article):
    for pmcid, version in [("PMC1", 1), ("PMC1", 2), ("PMC3", 1), ("PMC12", 1), ("PMC12", 3), ("PMC120", 1)]:
        write_article(s3_client, empty_bucket, pmcid, version, _xml(), {})
    keys = _metadata_keys(s3_client, empty_bucket)
    write_inventory(s3_client, empty_bucket, "2026-11-27T01-00Z", keys[:2])  # an older, shorter inventory
    write_inventory(s3_client, empty_bucket, "2026-11-28T01-00Z", list(reversed(keys)))
    by_prefixes = sorted(_source(proxy.endpoint, empty_bucket, listing="prefixes").latest_versions())
    proxy.requests.clear()
    by_inventory = list(_source(proxy.endpoint, empty_bucket, listing="inventory").latest_versions())
    assert sorted(by_inventory) == by_prefixes
    assert [(p, v) for p, v, _ in by_inventory] == [("PMC1", 2), ("PMC3", 1), ("PMC12", 3), ("PMC120", 1)]
    assert len(proxy.requests) == 3  # list the dated inventories, the manifest, one CSV: not one per article
    wanted = Selection(pmcids=frozenset({"PMC12"}))
    picked = _source(proxy.endpoint, empty_bucket, listing="inventory", selection=wanted).latest_versions()
    assert [(p, v) for p, v, _ in picked] == [("PMC12", 3)]
    articles = list(_source(proxy.endpoint, empty_bucket).articles())  # auto: the inventory when there is one
    assert [(a.meta.pmcid, a.meta.version) for a in articles] == [("PMC1", 2), ("PMC3", 1), ("PMC12", 3), ("PMC120", 1)]


def test_without_inventory_auto_lists_prefixes_and_inventory_only_fails(s3_client, empty_bucket, write_article):
    write_article(s3_client, empty_bucket, "PMC5", 1, _xml(), {})
    endpoint = s3_client.meta.endpoint_url
    assert [p for p, _, _ in _source(endpoint, empty_bucket).latest_versions()] == ["PMC5"]
    with pytest.raises(SourceListingError, match="no inventory"):
        list(_source(endpoint, empty_bucket, listing="inventory").latest_versions())


def test_a_damaged_inventory_fails_the_listing(s3_client, empty_bucket, write_article):
    write_article(s3_client, empty_bucket, "PMC5", 1, _xml(), {})
    write_inventory(s3_client, empty_bucket, "2026-11-28T01-00Z", _metadata_keys(s3_client, empty_bucket), md5="0" * 32)
    with pytest.raises(SourceListingError, match="md5"):
        list(_source(s3_client.meta.endpoint_url, empty_bucket).latest_versions())
