"""PMC Open Access on S3 (``s3://pmc-oa-opendata``), new layout. The one module that knows the bucket's shapes.

What this adapter relies on, and where it was checked (November 2026):

* Bucket ``pmc-oa-opendata``, region us-east-1, world-readable without credentials (``aws s3 ls
  s3://pmc-oa-opendata --no-sign-request``): PMC's "Accessing PMC Article Datasets Using Amazon Web Services"
  page and the bucket's README.txt. Requests are unsigned unless ``signed=True``.
* Legacy prefixes were moved under ``deprecated/`` on 2026-04-13 and are removed in August 2026 (PMC OA
  service and Cloud Service notices). The new layout has one prefix per article *version*,
  ``PMC<id>.<version>/``, holding ``PMC<id>.<version>.xml`` (JATS), ``PMC<id>.<version>.json`` (metadata),
  the plain text, the PDF and the media files; the metadata JSON objects are also collected under
  ``metadata/PMC<id>.<version>.json`` (README.txt, section 4).
* Metadata JSON keys (README.txt): ``pmcid``, ``version``, ``pmid``, ``doi``, ``title``, ``citation``,
  ``is_pmc_openaccess``, ``is_manuscript``, ``is_historical_ocr``, ``is_retracted``, ``license_code`` (Creative
  Commons codes, or ``TDM`` for author manuscripts), ``xml_url``, ``text_url``, ``pdf_url``, ``media_urls``
  (a list); every URL carries ``?md5=<hex>`` of its object.
* The daily inventory (README.txt, section 5.2): ``inventory-reports/pmc-oa-opendata/metadata/<date>/
  manifest.json`` (``<date>`` like ``2026-01-18T01-00Z``, kept 30 days) whose ``files[].key`` name gzipped CSV
  files, one row per metadata object: bucket, key (``metadata/PMC<id>.<version>.json``), last-modified date,
  ETag. So the inventory gives every article *version* (the latest one is chosen from it) without listing 8
  million prefixes; it does **not** hold license or retraction: those stay in each version's metadata JSON,
  which is read once per selected article (it also names the XML and media). The inventory lags the bucket by
  up to a day.

Not confirmed offline, so handled both ways: the manifest's ``fileSchema`` (AWS's inventory manifests name
the columns there; we use it when present, else the README's column order), its per-file ``MD5checksum``
(checked when present), URL-encoded keys in the CSV (AWS's inventory CSV format; decoded, a no-op for PMC's
names); ``media_urls`` may be missing (we then list the version prefix and take every object but the XML,
JSON, text and PDF). URLs may be ``s3://`` or ``https://`` and may name another bucket (a mirror): only their
file name and ``md5`` are used, and the object is read from the version prefix in the bucket of the source
spec. Media in sub-folders of a version prefix are not expected.

Listing (``listing``): ``inventory`` reads the latest inventory; ``prefixes`` lists the bucket (or, with a
PMCID selection, the ``PMC<id>.`` prefixes); ``auto`` uses the inventory when the bucket has one, except for a
selection of at most ``PREFIX_LISTING_MAX_PMCIDS`` PMCIDs, which is cheaper to list. A listing that fails
(endpoint unreachable, a prefix throttled beyond the retries, a damaged inventory) raises
``SourceListingError`` naming the source: a build never goes on with a partial list.

Integrity: every object is read whole and checked against its length and md5 (the URL's ``md5``, else a
single-part ETag), with botocore's retries for transport errors plus our own retries with backoff for short
reads and md5 mismatches. A media file that still fails is never used: a definite verdict (missing object,
access denied, over ``SourceLimits``) is a ``MediaError``; a transient one (throttling, reset connection,
short read, md5 mismatch) is a ``TransientMediaError``, so the article is tried again on the next run.
A zero-byte XML is an article error (``empty_object``); a zero-byte media file is returned as it is (empty),
like the local sources do, and rejected by the image stage.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import time
from array import array
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import groupby
from typing import IO, Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from biomedclip.corpus.records import Article, ArticleMeta, MediaError, SourceListingError, TransientMediaError
from biomedclip.corpus.sources.limits import SourceLimits
from biomedclip.corpus.sources.selection import Selection

VERSION_PREFIX = re.compile(r"(PMC\d+)\.(\d+)/$")
METADATA_KEY = re.compile(r"(?:^|/)metadata/PMC(\d+)\.(\d+)\.json$")
INVENTORY_DATE = re.compile(r"/(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}Z)/$")
README_COLUMNS = "Bucket, Key, LastModifiedDate, ETag"
NOT_MEDIA_SUFFIXES = (".xml", ".json", ".txt", ".pdf")
LISTINGS = ("auto", "inventory", "prefixes")
PREFIX_LISTING_MAX_PMCIDS = 1000
TRANSIENT_REASONS = frozenset({"s3_error", "short_read", "md5_mismatch"})


class S3ObjectError(Exception):
    """An object that could not be read whole and intact; ``str`` starts with the reason code."""

    @property
    def transient(self) -> bool:
        """Whether another try may succeed (throttling, network, short read), as opposed to a verdict."""
        return str(self).split(":", 1)[0] in TRANSIENT_REASONS


class _HashingReader(io.RawIOBase):
    """A read-only stream that passes ``raw`` through and keeps the md5 of what went by."""

    def __init__(self, raw: Any) -> None:
        self.raw, self.md5 = raw, hashlib.md5(usedforsecurity=False)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        self.md5.update(data)
        buffer[: len(data)] = data
        return len(data)


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
    limits: SourceLimits = field(default_factory=SourceLimits)
    listing: str = "auto"
    attempts: int = 3
    backoff_s: float = 0.5
    max_attempts: int = 8  # botocore's own retries per request (throttling, 5xx, connection errors)
    readers: int = 16  # threads fetching metadata and XML ahead of the build
    _client: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.listing not in LISTINGS:
            raise ValueError(f"listing must be one of {LISTINGS}, not {self.listing!r}")

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    @property
    def client(self) -> Any:
        if self._client is None:
            from biomedclip.shards import s3_client

            self._client = s3_client(
                self.endpoint_url, signed=self.signed, region="us-east-1", max_attempts=self.max_attempts
            )
        return self._client

    def _listing_failed(self, what: str, error: Exception) -> SourceListingError:
        return SourceListingError(f"cannot list {self.name} ({what}): {type(error).__name__}: {error}")

    def _list_prefixes(self, prefix: str) -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    yield common["Prefix"]
        except (BotoCoreError, ClientError) as error:
            raise self._listing_failed(f"prefix {prefix!r}", error) from error

    def latest_versions(self) -> Iterator[tuple[str, int, str]]:
        """``(pmcid, version, version_prefix)`` of each article's latest version (see ``listing``).

        Raises ``SourceListingError`` when the listing cannot be completed.
        """
        pmcids = self.selection.pmcids
        few = pmcids is not None and len(pmcids) <= PREFIX_LISTING_MAX_PMCIDS
        if self.listing == "inventory" or (self.listing == "auto" and not few):
            manifest = self.inventory_manifest()
            if manifest is not None:
                yield from self._inventory_versions(manifest)
                return
            if self.listing == "inventory":
                raise SourceListingError(f"cannot list {self.name}: no inventory under {self._inventory_root}")
        yield from self._prefix_versions()

    def _prefix_versions(self) -> Iterator[tuple[str, int, str]]:
        """S3 lists keys in byte order, so all versions of one PMCID are adjacent (``PMC12.`` < ``PMC123``): the
        listing is grouped on the fly without holding it in memory."""
        if self.selection.pmcids is not None:
            prefixes = (
                p for pmcid in sorted(self.selection.pmcids) for p in self._list_prefixes(f"{self.prefix}{pmcid}.")
            )
        else:
            prefixes = self._list_prefixes(self.prefix)
        parsed = ((m.group(1), int(m.group(2)), p) for p in prefixes if (m := VERSION_PREFIX.search(p)))
        for _, versions in groupby(parsed, key=lambda item: item[0]):
            yield max(versions, key=lambda item: item[1])

    @property
    def _inventory_root(self) -> str:
        return f"{self.prefix}inventory-reports/{self.bucket}/metadata/"

    def inventory_manifest(self) -> dict[str, Any] | None:
        """The manifest of the latest daily inventory, or None when the bucket has none."""
        dated = sorted(p for p in self._list_prefixes(self._inventory_root) if INVENTORY_DATE.search(p))
        if not dated:
            return None
        key = f"{dated[-1]}manifest.json"
        try:
            manifest = json.loads(self.read(ObjectRef(key)))
        except (S3ObjectError, ValueError) as error:
            raise self._listing_failed(f"inventory manifest {key}", error) from error
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
            raise SourceListingError(f"cannot list {self.name}: {key} has no 'files' list")
        return manifest

    def _inventory_rows(self, manifest: dict[str, Any]) -> Iterator[str]:
        """The metadata object keys of every inventory file, each file's md5 checked when the manifest has it."""
        from botocore.exceptions import BotoCoreError, ClientError

        columns = [c.strip() for c in str(manifest.get("fileSchema") or README_COLUMNS).split(",")]
        if "Key" not in columns:
            raise SourceListingError(f"cannot list {self.name}: inventory schema {columns} has no Key column")
        key_column = columns.index("Key")
        for entry in manifest["files"]:
            key = str(entry.get("key", ""))
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
                hashing = _HashingReader(body)
                with io.TextIOWrapper(gzip.GzipFile(fileobj=io.BufferedReader(hashing)), encoding="utf-8") as text:
                    for row in csv.reader(text):
                        if len(row) > key_column:
                            yield unquote(row[key_column])
            except (BotoCoreError, ClientError, OSError, EOFError, csv.Error, UnicodeDecodeError) as error:
                raise self._listing_failed(f"inventory file {key}", error) from error
            expected = entry.get("MD5checksum")
            if expected and hashing.md5.hexdigest() != str(expected).lower():
                raise SourceListingError(f"cannot list {self.name}: inventory file {key} fails its md5 check")

    def _inventory_versions(self, manifest: dict[str, Any]) -> Iterator[tuple[str, int, str]]:
        """The latest version of each PMCID the inventory lists (and the selection wants), in PMCID order.

        PMCID numbers and versions are held as two int64 arrays (16 bytes per article version), not as strings.
        """
        numbers, versions = array("q"), array("q")
        wanted = self.selection.pmcids
        for key in self._inventory_rows(manifest):
            match = METADATA_KEY.search(key)
            if match and key.startswith(self.prefix) and (wanted is None or f"PMC{match.group(1)}" in wanted):
                numbers.append(int(match.group(1)))
                versions.append(int(match.group(2)))
        number_array = np.frombuffer(numbers, dtype=np.int64) if numbers else np.zeros(0, dtype=np.int64)
        version_array = np.frombuffer(versions, dtype=np.int64) if versions else np.zeros(0, dtype=np.int64)
        order = np.lexsort((version_array, number_array))
        number_array, version_array = number_array[order], version_array[order]
        last = np.ones(len(number_array), dtype=bool)
        last[:-1] = number_array[1:] != number_array[:-1]
        for number, version in zip(number_array[last].tolist(), version_array[last].tolist(), strict=True):
            yield f"PMC{number}", version, f"{self.prefix}PMC{number}.{version}/"

    def read(self, ref: ObjectRef, max_bytes: int | None = None) -> bytes:
        """The whole object (at most ``max_bytes``, default the member limit), length and md5 checked.

        Raises ``S3ObjectError``.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        max_bytes = self.limits.max_member_bytes if max_bytes is None else max_bytes
        problem = ""
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=ref.key)
                length = response.get("ContentLength")
                if length is not None and length > max_bytes:
                    raise S3ObjectError(f"member_too_large: {ref.key} has {length} bytes (limit {max_bytes})")
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

    def open_media(self, refs: dict[str, ObjectRef], budget: list[int], name: str) -> IO[bytes]:
        """A verified media file of an article; ``budget`` holds the bytes the article may still read.

        Raises ``MediaError`` (``TransientMediaError`` when another run may succeed).
        """
        ref = refs.get(name)
        if ref is None:
            raise MediaError(f"missing_media: no media file {name!r}")
        limit = min(self.limits.max_member_bytes, budget[0])
        try:
            data = self.read(ref, limit)
        except S3ObjectError as error:
            if str(error).startswith("member_too_large") and limit < self.limits.max_member_bytes:
                raise MediaError(f"article_too_large: {ref.key} is past the article's byte budget") from error
            raise (TransientMediaError if error.transient else MediaError)(str(error)) from error
        budget[0] -= len(data)
        return io.BytesIO(data)

    def article(self, pmcid: str, version: int, version_prefix: str) -> Article | None:
        """One article version; None when the selection excludes it, ``error`` set when it cannot be read."""
        from botocore.exceptions import BotoCoreError, ClientError

        stem = f"{pmcid}.{version}"
        source = f"s3://{self.bucket}/{version_prefix}"
        try:
            metadata = self._metadata(version_prefix, stem)
        except S3ObjectError as error:
            meta = ArticleMeta(pmcid=pmcid, version=version)
            return Article(source, meta, None, [], partial(self.open_media, {}, [0]), error=str(error))
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
        try:
            refs = self._media(version_prefix, metadata)
        except (BotoCoreError, ClientError) as error:
            opener = partial(self.open_media, {}, [0])
            return Article(source, meta, None, [], opener, error=f"s3_error: listing {version_prefix}: {error}")
        opener = partial(self.open_media, refs, [self.limits.max_article_bytes])
        try:
            xml = self.read(xml_ref)
        except S3ObjectError as error:
            return Article(source, meta, None, sorted(refs), opener, error=str(error))
        if not xml:
            return Article(source, meta, None, sorted(refs), opener, error=f"empty_object: {xml_ref.key}")
        return Article(source, meta, xml, sorted(refs), opener)

    def articles(self) -> Iterator[Article]:
        """Every selected article, in listing order; ``readers`` threads fetch metadata and XML ahead.

        At PMC scale the two GETs per article dominate the listing side, so they overlap: at most
        ``2 * readers`` articles are in flight or waiting, whatever the bucket's size.
        """
        count, limit = 0, self.selection.limit
        _ = self.client  # created once, before the threads share it (boto3 clients are thread-safe)
        pool = ThreadPoolExecutor(max(1, self.readers), thread_name_prefix="s3-reader")
        window: deque[Future[Article | None]] = deque()
        try:
            versions = self.latest_versions()
            while True:
                while len(window) < 2 * max(1, self.readers) and (item := next(versions, None)) is not None:
                    window.append(pool.submit(self.article, *item))
                if not window or (limit is not None and count >= limit):
                    return
                article = window.popleft().result()
                if article is not None:
                    count += 1
                    yield article
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _simple_etag(etag: str | None) -> str | None:
    """The md5 in a single-part upload's ETag; None for multipart ETags (``<hex>-<parts>``)."""
    value = (etag or "").strip('"')
    return value if re.fullmatch(r"[0-9a-fA-F]{32}", value) else None
