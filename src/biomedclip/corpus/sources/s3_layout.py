"""Write articles in PMC's new S3 layout (see ``s3.py``): to mirror a local corpus to an S3-compatible store,
and to give tests and benchmarks a faithful bucket.

``PMC<id>.<v>/PMC<id>.<v>.xml``, ``PMC<id>.<v>/PMC<id>.<v>.json`` (metadata with ``?md5=`` URLs) and every
media file under the same prefix.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from biomedclip.corpus.records import Article, MediaError, Source
from biomedclip.corpus.sources.local import with_xml_metadata


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
