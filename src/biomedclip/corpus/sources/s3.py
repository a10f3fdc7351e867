"""PMC Open Access on S3 (``s3://pmc-oa-opendata``), new layout. The one module that knows the bucket's shapes.

What this adapter relies on, and where it was checked (November 2026):

* Bucket ``pmc-oa-opendata``, region us-east-1, world-readable without credentials (``aws s3 ls
  s3://pmc-oa-opendata --no-sign-request``): PMC's "Accessing PMC Article Datasets Using Amazon Web Services"
  page and the bucket's README.txt. Requests are unsigned unless ``signed=True``.
* Legacy prefixes were moved under ``deprecated/`` on 2026-04-13 and are removed in August 2026 (PMC OA
  service and Cloud Service notices). The new layout has one prefix per article *version*,
  ``PMC<id>.<version>/``, holding ``PMC<id>.<version>.xml`` (JATS), ``PMC<id>.<version>.json`` (metadata),
  the plain text, the PDF and the media files.
* Metadata JSON keys (seen in public clients of the bucket): ``pmcid``, ``version``, ``pmid``, ``doi``,
  ``is_pmc_openaccess``, ``is_manuscript``, ``is_historical_ocr``, ``is_retracted``, ``license_code``
  (``CC BY``, ``CC BY-SA``, ``CC0``, ``CC BY-NC``, ...), ``xml_url``, ``text_url``, ``pdf_url``,
  ``media_urls`` (a list); every URL looks like ``s3://pmc-oa-opendata/PMC123.2/PMC123.2.xml?md5=<hex>``.

Not confirmed, so handled both ways: some clients read the metadata at ``metadata/PMC<id>.<version>.json``
rather than inside the version prefix (we try the version prefix first, then that key); ``media_urls`` may be
missing (we then list the version prefix and take every object but the XML, JSON, text and PDF). URLs may be
``s3://`` or ``https://`` and may name another bucket (a mirror): only their file name and ``md5`` are used,
and the object is read from the version prefix in the bucket of the source spec. The CSV inventory is not
used: listing prefixes is always current. Media in sub-folders of a version prefix are not expected.

Integrity: every object is read whole and checked against its length and md5 (the URL's ``md5``, else a
single-part ETag), with botocore's retries for transport errors plus our own retries with backoff for short
reads and md5 mismatches; a download that still fails is never used (the article or media becomes an error).
A zero-byte XML is an article error (``empty_object``); a zero-byte media file is returned as it is (empty),
like the local sources do, and rejected by the image stage.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import groupby
from typing import IO, Any
from urllib.parse import parse_qs, urlparse

from biomedclip.corpus.records import Article, ArticleMeta, MediaError
from biomedclip.corpus.sources.selection import Selection

VERSION_PREFIX = re.compile(r"(PMC\d+)\.(\d+)/$")
NOT_MEDIA_SUFFIXES = (".xml", ".json", ".txt", ".pdf")
MAX_OBJECT_BYTES = 512 * 1024 * 1024


class S3ObjectError(Exception):
    """An object that could not be read whole and intact; ``str`` starts with the reason code."""


@dataclass(frozen=True)
class ObjectRef:
    key: str
    md5: str | None = None


def url_ref(url: str, version_prefix: str) -> ObjectRef:
    """The object of a metadata URL (``s3://`` or ``https://``, ``?md5=<hex>``) inside ``version_prefix``."""
    parsed = urlparse(url)
    md5 = parse_qs(parsed.query).get("md5", [None])[0]
    return ObjectRef(version_prefix + parsed.path.rsplit("/", 1)[-1], md5)


@dataclass
class S3Source:
    """Latest version of every article under ``s3://bucket/prefix`` (new PMC layout), as ``Article`` objects.

    Picklable: the boto3 client is created lazily in each process.
    """

    bucket: str
    prefix: str = ""
    selection: Selection = field(default_factory=Selection)
    endpoint_url: str | None = None
    signed: bool = False
    attempts: int = 3
    backoff_s: float = 0.5
    _client: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    @property
    def client(self) -> Any:
        if self._client is None:
            from biomedclip.shards import s3_client

            self._client = s3_client(self.endpoint_url, signed=self.signed, region="us-east-1")
        return self._client

    def _list_prefixes(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                yield common["Prefix"]

    def latest_versions(self) -> Iterator[tuple[str, int, str]]:
        """``(pmcid, version, version_prefix)`` of each article's latest version, in listing order.

        S3 lists keys in byte order, so all versions of one PMCID are adjacent (``PMC12.`` < ``PMC123``): the
        listing is grouped on the fly without holding it in memory.
        """
        if self.selection.pmcids is not None:
            prefixes = (
                p for pmcid in sorted(self.selection.pmcids) for p in self._list_prefixes(f"{self.prefix}{pmcid}.")
            )
        else:
            prefixes = self._list_prefixes(self.prefix)
        parsed = ((m.group(1), int(m.group(2)), p) for p in prefixes if (m := VERSION_PREFIX.search(p)))
        for _, versions in groupby(parsed, key=lambda item: item[0]):
            yield max(versions, key=lambda item: item[1])

    def read(self, ref: ObjectRef) -> bytes:
        """The whole object, checked against its length and md5; raises ``S3ObjectError``."""
        from botocore.exceptions import BotoCoreError, ClientError

        problem = ""
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=ref.key)
                length = response.get("ContentLength")
                if length is not None and length > MAX_OBJECT_BYTES:
                    raise S3ObjectError(f"oversized_object: {ref.key} ({length} bytes)")
                data = response["Body"].read()
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code", "")
                if code in ("NoSuchKey", "404", "NotFound"):
                    raise S3ObjectError(f"missing_object: {ref.key}") from error
                if code in ("AccessDenied", "403"):
                    raise S3ObjectError(f"access_denied: {ref.key}") from error
                problem = f"s3_error: {ref.key}: {error}"
                continue
            except BotoCoreError as error:
                problem = f"s3_error: {ref.key}: {error}"
                continue
            if length is not None and len(data) != length:
                problem = f"short_read: {ref.key} ({len(data)} of {length} bytes)"
                continue
            expected = ref.md5 or _simple_etag(response.get("ETag"))
            if expected and hashlib.md5(data, usedforsecurity=False).hexdigest() != expected.lower():
                problem = f"md5_mismatch: {ref.key}"
                continue
            return data
        raise S3ObjectError(problem)

    def _metadata(self, version_prefix: str, stem: str) -> dict[str, Any]:
        try:
            raw = self.read(ObjectRef(f"{version_prefix}{stem}.json"))
        except S3ObjectError as error:
            if not str(error).startswith("missing_object"):
                raise
            raw = self.read(ObjectRef(f"{self.prefix}metadata/{stem}.json"))
        try:
            metadata = json.loads(raw)
        except ValueError as error:
            raise S3ObjectError(f"bad_metadata: {stem}.json: {error}") from error
        if not isinstance(metadata, dict):
            raise S3ObjectError(f"bad_metadata: {stem}.json is not an object")
        return metadata

    def _media(self, version_prefix: str, metadata: dict[str, Any]) -> dict[str, ObjectRef]:
        urls = metadata.get("media_urls")
        if isinstance(urls, list):
            refs = [url_ref(str(url), version_prefix) for url in urls]
        else:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=version_prefix)
            keys = (item["Key"] for page in pages for item in page.get("Contents", []))
            refs = [ObjectRef(key) for key in keys if not key.lower().endswith(NOT_MEDIA_SUFFIXES)]
        return {ref.key.removeprefix(version_prefix): ref for ref in refs}

    def open_media(self, refs: dict[str, ObjectRef], name: str) -> IO[bytes]:
        """A verified media file of an article, or ``MediaError``."""
        ref = refs.get(name)
        if ref is None:
            raise MediaError(f"missing media file {name!r}")
        try:
            return io.BytesIO(self.read(ref))
        except S3ObjectError as error:
            raise MediaError(str(error)) from error

    def article(self, pmcid: str, version: int, version_prefix: str) -> Article | None:
        """One article version; None when the selection excludes it, ``error`` set when it cannot be read."""
        stem = f"{pmcid}.{version}"
        source = f"s3://{self.bucket}/{version_prefix}"
        try:
            metadata = self._metadata(version_prefix, stem)
        except S3ObjectError as error:
            meta = ArticleMeta(pmcid=pmcid, version=version)
            return Article(source, meta, None, [], partial(self.open_media, {}), error=str(error))
        meta = ArticleMeta(
            pmcid=pmcid,
            version=version,
            license=metadata.get("license_code"),
            is_retracted=bool(metadata.get("is_retracted")),
            extra={k: metadata.get(k) for k in ("pmid", "doi", "is_pmc_openaccess", "is_manuscript") if k in metadata},
        )
        if not self.selection.admits(meta):
            return None
        xml_url = metadata.get("xml_url") or f"{stem}.xml"
        xml_ref = url_ref(str(xml_url), version_prefix)
        refs = self._media(version_prefix, metadata)
        opener = partial(self.open_media, refs)
        try:
            xml = self.read(xml_ref)
        except S3ObjectError as error:
            return Article(source, meta, None, sorted(refs), opener, error=str(error))
        if not xml:
            return Article(source, meta, None, sorted(refs), opener, error=f"empty_object: {xml_ref.key}")
        return Article(source, meta, xml, sorted(refs), opener)

    def articles(self) -> Iterator[Article]:
        count = 0
        for pmcid, version, version_prefix in self.latest_versions():
            if self.selection.limit is not None and count >= self.selection.limit:
                return
            article = self.article(pmcid, version, version_prefix)
            if article is not None:
                count += 1
                yield article


def _simple_etag(etag: str | None) -> str | None:
    """The md5 in a single-part upload's ETag; None for multipart ETags (``<hex>-<parts>``)."""
    value = (etag or "").strip('"')
    return value if re.fullmatch(r"[0-9a-fA-F]{32}", value) else None
