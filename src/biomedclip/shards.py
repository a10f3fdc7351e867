"""The WebDataset shard contract: every stage that writes or reads corpus shards goes through this module.

A shard is a plain tar ``{split}-NNNNNN.tar`` whose members ``<key>.jpg``, ``<key>.txt`` (caption) and
``<key>.json`` (the figure record) sit next to each other. The key/extension rule is webdataset's: the key is
the member name up to the first dot of its base name, the extension (lower-cased) is the rest. A shard folder
holds ``sizes.json`` (``{"train-000000.tar": 123, ...}``, the manifest open_clip's trainer reads), so readers
know sample counts without reading the shards.

Here: shard specs (:func:`expand_shards`), opening a URL by scheme (:func:`open_url`: local path, ``s3://``,
``http(s)://``), the one sample iterator (:func:`iter_samples`), random reads (:func:`read_member`), the one
writer (:class:`ShardWriter`), the image extensions (:data:`IMAGE_EXTENSIONS`), the figure record schema
(:data:`FIELDS` and the views derived from it) and the ``sizes.json`` manifest. Importing it needs the standard
library only (braceexpand, pyarrow and boto3 load when used).
"""

from __future__ import annotations

import functools
import glob
import io
import json
import os
import re
import tarfile
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from biomedclip.durable import fsync_path
from biomedclip.errors import InputError, RunError

if TYPE_CHECKING:
    import pyarrow as pa

# Member extensions that hold the image, in the order a reader prefers them (also the image files a source reads).
IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "tif", "tiff", "gif", "bmp", "webp")
SIZES_FILE = "sizes.json"
URL_SCHEMES = ("s3://", "http://", "https://", "file://")
RELEASE_POINTER = "RELEASE.json"
"""In an ``s3://`` corpus OUT: written last by each build, ``{"release": "releases/<id>", "files": {name: {bytes,
sha256}}}``; readers take the shards and catalog below that release (:func:`follow_release`). An OUT without it,
or with the older flat manifest, keeps its files directly under OUT."""
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's base_plus_ext

# The figure record: every field any stage stores, with its Arrow type, in catalog column order.
FIELDS: dict[str, str] = {
    "key": "string",
    "article": "string",  # the article's key: its PMCID, else the source's fallback (DOI, publisher id, file name)
    "pmcid": "string",
    "version": "int64",
    "fig_id": "string",
    "label": "string",
    "caption": "string",
    "graphic": "string",
    "graphics": "list<string>",
    "image_path": "string",
    "source": "string",
    "license": "string",
    "journal": "string",
    "year": "int64",
    "pmid": "string",
    "doi": "string",
    "split": "string",
    "status": "string",
    "reason": "string",
    "detail": "string",
    "duplicate_of": "string",
    "width": "int64",
    "height": "int64",
    "orig_width": "int64",
    "orig_height": "int64",
    "sha256": "string",
    "phash": "string",
    "thumb": "string",
    "pixel_sha256": "string",
    "caption_tokens": "int64",
    "shard": "string",
    "class_name": "string",  # the class folder of a figure from a labelled image folder, else null
    "license_group": "string",  # commercial | noncommercial | other (``corpus.licenses.license_group``)
    "inline_references": "list<reference>",  # body paragraphs citing the figure (``corpus.references``)
    "offset": "int64",  # where the image member's data starts in its shard (index only)
    "size": "int64",  # the image member's length in bytes (index only)
    "image_sha256": "string",  # the SHA-256 of the image member's bytes, checked before they are served (index only)
}
# ``<key>.json`` in a shard: the DESIGN.md record plus provenance and the class of labelled images.
SHARD_RECORD_FIELDS: tuple[str, ...] = (
    "pmcid", "version", "fig_id", "label", "caption", "graphic", "graphics", "image_path", "source", "license",
    "journal", "year", "pmid", "doi", "split", "status", "reason", "class_name", "license_group",
    "inline_references",
)  # fmt: skip
# ``catalog.parquet``: one row per figure, accepted or rejected.
CATALOG_FIELDS: tuple[str, ...] = tuple(name for name in FIELDS if name not in ("offset", "size", "image_sha256"))
# The figure index's record rows: what search results show, a panel's lineage, and where the image lies.
INDEX_FIELDS: tuple[str, ...] = (
    "key", "pmcid", "fig_id", "label", "caption", "license", "journal", "year", "split", "class_name", "parent",
    "box", "panel_label", "subcaption", "shard", "offset", "size", "image_sha256",
)  # fmt: skip
# A panel sample's lineage (``corpus build --unit panel|both``), in the panel catalog and records only, so that
# figure catalogs and records keep their columns: the parent figure's key, the panel's box in the parent's
# original pixels (x0, y0, x1, y1; x1/y1 exclusive), the letter read on it, its own subcaption and how its text
# was aligned (``label``, ``order``, ``position``; ``none``: the shared caption only, its subcaption unknown;
# ``figure``: a single-panel figure kept whole; null: the splitter failed on the figure).
PANEL_FIELDS: dict[str, str] = {
    "parent": "string",
    "box": "list<int64>",
    "panel_label": "string",
    "subcaption": "string",
    "alignment": "string",
}
PANEL_CATALOG_FIELDS: tuple[str, ...] = (*CATALOG_FIELDS, *PANEL_FIELDS)
PANEL_RECORD_FIELDS: tuple[str, ...] = (*SHARD_RECORD_FIELDS, *PANEL_FIELDS)


def arrow_schema(names: Iterable[str]) -> pa.Schema:
    """The pyarrow schema of ``names`` (fields of :data:`FIELDS` or :data:`PANEL_FIELDS`), in that order."""
    import pyarrow as pa

    reference = pa.struct(
        [("paragraph", pa.string()), ("sentences", pa.list_(pa.string())), ("section", pa.string()),
         ("panels", pa.list_(pa.string())), ("kind", pa.string())]
    )  # fmt: skip
    types = {"string": pa.string(), "int64": pa.int64(), "list<string>": pa.list_(pa.string()),
             "list<int64>": pa.list_(pa.int64()), "list<reference>": pa.list_(reference)}  # fmt: skip
    known = {**FIELDS, **PANEL_FIELDS}
    return pa.schema([(name, types[known[name]]) for name in names])


def shard_record(row: dict[str, Any], names: Iterable[str] = SHARD_RECORD_FIELDS) -> dict[str, Any]:
    """The ``<key>.json`` record of a row: the fields ``names`` (a figure's by default), missing ones null."""
    return {name: row.get(name) for name in names}


class ShardSpecError(InputError, FileNotFoundError):
    """A shard spec that names no shard, or local shards that do not exist."""


class ShardError(RunError, ValueError):
    """A shard that cannot be read (missing, not a tar, truncated, unreachable); the message names it."""


def is_url(spec: str | os.PathLike) -> bool:
    """True for ``s3://``, ``http(s)://`` and ``file://`` addresses."""
    return str(spec).startswith(URL_SCHEMES)


def expand_shards(specs: str | Iterable[str]) -> list[str]:
    """The shard paths and URLs a spec names, in order, without duplicates.

    A spec is one string or several; each string may join entries with ``::``. An entry is a brace pattern
    (``train-{000000..000099}.tar``), a local glob, a folder (its ``*.tar``), a file, or a URL (``s3://``,
    ``http(s)://``), kept as is for the reader to stream (``s3://`` shards of a corpus OUT: those of its current
    release, :func:`follow_release`).

    Raises:
        ShardSpecError: an entry matches nothing, or a named local shard is missing.
    """
    from braceexpand import braceexpand

    urls: list[str] = []
    for spec in [specs] if isinstance(specs, str) else specs:
        for entry in filter(None, (part.strip() for part in str(spec).split("::"))):
            for item in braceexpand(entry):
                if is_url(item) and not item.startswith("file://"):
                    urls.append(item)
                    continue
                item = item.removeprefix("file://")
                if os.path.isdir(item):
                    found = sorted(glob.glob(os.path.join(item, "*.tar")))
                    if not found:
                        raise ShardSpecError(f"no *.tar shards in folder {item}")
                    urls.extend(found)
                elif any(ch in item for ch in "*?["):
                    matches = sorted(glob.glob(item))
                    if not matches:
                        raise ShardSpecError(f"no shards match {item!r}")
                    urls.extend(matches)
                else:
                    urls.append(item)
    if not urls:
        raise ShardSpecError(f"no shards match {specs!r}")
    missing = [u for u in urls if not is_url(u) and not os.path.isfile(u)]
    if missing:
        raise ShardSpecError(f"{len(missing)} shard(s) not found, e.g. {missing[0]}")
    return follow_release(list(dict.fromkeys(urls)))


def follow_release(urls: list[str]) -> list[str]:
    """``urls`` with each ``s3://B/OUT/shards/NAME`` of a corpus OUT that names a release (its ``RELEASE.json``)
    turned into ``s3://B/OUT/<release>/shards/NAME``, so a reader takes the shards of one complete release whatever
    a build is uploading meanwhile; other URLs as they are. One GET per OUT.

    Raises:
        ShardError: the pointer of an OUT exists but cannot be read or parsed.
    """
    releases: dict[str, str] = {}
    followed = []
    for url in urls:
        parent, _, name = url.rpartition("/")
        out, _, folder = parent.rpartition("/")
        if not url.startswith("s3://") or folder != "shards" or out.count("/") < 2:
            followed.append(url)
            continue
        if out not in releases:
            releases[out] = current_release(out)
        followed.append(f"{out}/{releases[out]}/shards/{name}" if releases[out] else url)
    return followed


def current_release(out_url: str) -> str:
    """The release folder (``releases/<id>``) an ``s3://`` corpus OUT's pointer names; "" when OUT has no pointer
    or an older one (its files lie directly under OUT)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = _split_s3(out_url.rstrip("/"))
    key = f"{prefix}/{RELEASE_POINTER}" if prefix else RELEASE_POINTER
    try:
        data = s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except (ClientError, BotoCoreError) as error:
        status = getattr(error, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status in (403, 404):  # no pointer (or none we may read): the flat layout
            return ""
        raise ShardError(f"cannot read the release pointer {out_url}/{RELEASE_POINTER}: {error}") from error
    try:
        pointer = json.loads(data)
    except ValueError as error:
        raise ShardError(f"{out_url}/{RELEASE_POINTER} is not JSON: {error}") from error
    release = pointer.get("release", "") if isinstance(pointer, dict) else ""
    return release if isinstance(release, str) else ""


# --- opening by scheme ------------------------------------------------------------------------------------


@functools.cache
def _cached_client(
    endpoint_url: str | None, signed: bool | None, region: str | None, max_attempts: int, pid: int
) -> Any:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    if signed is None:
        signed = boto3.Session().get_credentials() is not None
    config = Config(
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        **({} if signed else {"signature_version": UNSIGNED}),
    )
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


def s3_client(
    endpoint_url: str | None = None, *, signed: bool | None = None, region: str | None = None, max_attempts: int = 8
) -> Any:
    """The one S3 client set-up: endpoint ``endpoint_url``, else ``BIOMEDCLIP_S3_ENDPOINT``, else boto3's default
    (AWS, or ``AWS_ENDPOINT_URL``); botocore's standard retries (``max_attempts`` per request); unsigned requests
    when ``signed`` is False, or when it is None and no AWS credentials are configured. One client per process
    and settings.
    """
    endpoint = endpoint_url or os.environ.get("BIOMEDCLIP_S3_ENDPOINT") or None
    return _cached_client(endpoint, signed, region, max_attempts, os.getpid())


def _split_s3(url: str) -> tuple[str, str]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return bucket, key


def open_url(url: str, *, endpoint_url: str | None = None, byte_range: tuple[int, int] | None = None) -> IO[bytes]:
    """A binary stream of a local path, ``file://``, ``s3://bucket/key`` or ``http(s)://`` address.

    ``byte_range`` ``(offset, size)`` reads only that part (a ranged GET for remote addresses).

    Raises:
        ShardError: the address cannot be opened (missing file, HTTP or S3 error), naming it.
    """
    try:
        if url.startswith("s3://"):
            bucket, key = _split_s3(url)
            extra = {"Range": f"bytes={byte_range[0]}-{sum(byte_range) - 1}"} if byte_range else {}
            return s3_client(endpoint_url).get_object(Bucket=bucket, Key=key, **extra)["Body"]
        if url.startswith(("http://", "https://")):
            headers = {"Range": f"bytes={byte_range[0]}-{sum(byte_range) - 1}"} if byte_range else {}
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
            if byte_range and response.status == 200:  # a server that ignores Range sends the whole file
                _discard(response, byte_range[0])
            return response
        handle = open(url.removeprefix("file://"), "rb")  # noqa: SIM115 - the caller closes it
        if byte_range:
            handle.seek(byte_range[0])
        return handle
    except Exception as error:  # boto3, urllib and the OS each raise their own kinds
        raise ShardError(f"cannot open {url}: {error}") from error


def _discard(stream: IO[bytes], count: int, chunk: int = 1 << 20) -> None:
    while count > 0:
        data = stream.read(min(chunk, count))
        if not data:
            return
        count -= len(data)


def read_member(url: str, offset: int, size: int, *, endpoint_url: str | None = None) -> bytes:
    """``size`` bytes at ``offset`` of a shard (one member's data, e.g. an image, as :class:`Sample` spans give).

    Raises:
        ShardError: the shard cannot be read or is shorter than asked.
    """
    if size == 0:
        return b""
    with open_url(url, endpoint_url=endpoint_url, byte_range=(offset, size)) as stream:
        try:
            data = stream.read(size)
        except Exception as error:
            raise ShardError(f"cannot read shard {url}: {error}") from error
    if len(data) != size:
        raise ShardError(f"shard {url} is shorter than expected (wanted {size} bytes at {offset})")
    return data


# --- reading ----------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One sample of a shard: its key, the bytes of the members read, and where every member's data lies.

    ``spans`` maps each extension to ``(offset, size)`` in the shard (for :func:`read_member`); it is empty for
    compressed shards, whose offsets do not address the file.
    """

    key: str
    url: str
    data: dict[str, bytes] = field(default_factory=dict)
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)

    def image_extension(self, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> str | None:
        """The first of ``extensions`` this sample has a member for."""
        present = self.spans or self.data
        return next((ext for ext in extensions if ext in present), None)

    def image_span(self, reader: str) -> tuple[str, tuple[int, int]] | None:
        """The extension and ``(offset, size)`` of the sample's image, None without one.

        Raises:
            ShardError: the shard is compressed (no offsets); ``reader`` names who needs them in the message.
        """
        ext = self.image_extension()
        if ext is None:
            return None
        if ext not in self.spans:
            raise ShardError(f"shard {self.url} is compressed: {reader} reads images by offset, from plain .tar shards")
        return ext, self.spans[ext]

    def text(self, extension: str = "txt") -> str | None:
        """The caption (UTF-8, invalid bytes replaced), or None without that member."""
        raw = self.data.get(extension)
        return None if raw is None else raw.decode("utf-8", errors="replace")

    def record(self) -> dict[str, Any]:
        """The ``<key>.json`` record ({} when absent or not a JSON object)."""
        try:
            record = json.loads(self.data.get("json", b"{}"))
        except ValueError:
            return {}
        return record if isinstance(record, dict) else {}


def split_name(name: str) -> tuple[str, str] | None:
    """webdataset's split of a member name into (key, lower-cased extension); None without an extension."""
    match = _KEY_EXT.match(name)
    return None if match is None else (match.group(1), match.group(2).lower())


def iter_samples(
    url: str, *, read: Callable[[str], bool] | None = None, endpoint_url: str | None = None
) -> Iterator[Sample]:
    """Every sample of one shard, in tar order, streaming (local, ``s3://`` or ``http(s)://``).

    Members with the same key next to each other form one sample (webdataset's grouping); ``read(ext)``
    decides which members' bytes are read (default: all), the others are skipped but their spans kept.
    Names without an extension and webdataset's ``__*__`` meta members are ignored.

    Raises:
        ShardError: the shard is missing, not a tar, truncated, or repeats a member within a sample.
    """
    current: Sample | None = None
    try:
        with open_url(url, endpoint_url=endpoint_url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            plain = getattr(tar.fileobj, "comptype", "tar") == "tar"
            for member in tar:
                if not member.isreg() or (member.name.startswith("__") and member.name.endswith("__")):
                    continue
                parts = split_name(member.name)
                if parts is None:
                    continue
                key, ext = parts
                if current is None or key != current.key:
                    if current is not None:
                        yield current
                    current = Sample(key, url)
                if ext in current.spans or ext in current.data:
                    raise ShardError(f"shard {url}: member {member.name} appears twice in sample {key}")
                if plain:
                    current.spans[ext] = (member.offset_data, member.size)
                if read is None or read(ext):
                    handle = tar.extractfile(member)
                    current.data[ext] = handle.read() if handle is not None else b""
    except ShardError:
        raise
    except (OSError, EOFError, tarfile.TarError, ValueError) as error:
        raise ShardError(f"cannot read shard {url}: {error}") from error
    except Exception as error:  # network errors from boto3/urllib while streaming
        raise ShardError(f"cannot read shard {url}: {type(error).__name__}: {error}") from error
    if current is not None:
        yield current


# --- the sizes.json manifest ------------------------------------------------------------------------------


def write_sizes(folder: str | Path, sizes: dict[str, int]) -> Path:
    """Write ``folder/sizes.json`` (shard file name -> samples), atomically, keys sorted."""
    path = Path(folder) / SIZES_FILE
    _atomic_write(path, (json.dumps(dict(sorted(sizes.items())), indent=2) + "\n").encode())
    return path


def read_sizes(folder: str) -> dict[str, int]:
    """The ``sizes.json`` of a shard folder (local or remote prefix); {} when there is none or it is unreadable."""
    location = f"{folder.rstrip('/')}/{SIZES_FILE}"
    if not is_url(location) and not os.path.isfile(location):
        return {}
    try:
        with open_url(location) as stream:
            sizes = json.loads(stream.read())
    except (ShardError, ValueError):
        return {}
    if not isinstance(sizes, dict):
        return {}
    return {str(k): int(v) for k, v in sizes.items() if isinstance(v, int) and not isinstance(v, bool)}


def shard_sizes(urls: Iterable[str]) -> dict[str, int | None]:
    """Samples per shard from the ``sizes.json`` beside each shard; None for shards it does not list."""
    manifests: dict[str, dict[str, int]] = {}
    result: dict[str, int | None] = {}
    for url in urls:
        folder, _, name = url.rpartition("/")
        if folder not in manifests:
            manifests[folder] = read_sizes(folder or ".")
        result[url] = manifests[folder].get(name)
    return result


def count_samples(url: str) -> int:
    """Samples in one shard, counted from its tar headers (no member data is read)."""
    return sum(1 for _ in iter_samples(url, read=lambda ext: False))


# --- writing ----------------------------------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


class ShardWriter:
    """Write samples of one split into numbered shards ``{split}-NNNNNN.tar`` of at most ``max_samples``.

    Tar headers are fixed (mtime 0, uid/gid 0, no owner names, mode 0644), so the same samples give
    byte-identical shards. Each shard is written under a temporary name, fsynced and renamed when complete:
    a reader never sees a partial shard. ``sizes`` counts the samples of each shard written.
    """

    def __init__(self, directory: str | Path, split: str, max_samples: int = 10_000) -> None:
        if max_samples < 1:
            raise InputError(f"max_samples must be at least 1, got {max_samples}")
        self.directory = Path(directory)
        self.split = split
        self.max_samples = max_samples
        self.paths: list[Path] = []
        self.sizes: dict[str, int] = {}
        self._file: IO[bytes] | None = None
        self._tar: tarfile.TarFile | None = None
        self._count = 0
        self.directory.mkdir(parents=True, exist_ok=True)

    def write(self, key: str, jpeg: bytes, caption: str, record: dict[str, Any]) -> None:
        """Append one sample; ``key`` must be unique and contain neither a dot nor a slash."""
        if not key or "." in key or "/" in key:
            raise InputError(f"sample key {key!r} must be non-empty without '.' or '/'")
        if self._tar is None or self._count >= self.max_samples:
            self._roll()
        assert self._tar is not None
        _add(self._tar, f"{key}.jpg", jpeg)
        _add(self._tar, f"{key}.txt", caption.encode())
        _add(self._tar, f"{key}.json", json.dumps(record, sort_keys=True, ensure_ascii=False).encode())
        self._count += 1
        self.sizes[self.paths[-1].name] = self._count

    def _roll(self) -> None:
        self._finish()
        path = self.directory / f"{self.split}-{len(self.paths):06d}.tar"
        self._file = open(path.with_name(path.name + ".tmp"), "wb")  # noqa: SIM115 - spans calls
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self.paths.append(path)
        self._count = 0

    def _finish(self) -> None:
        if self._tar is None or self._file is None:
            return
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._file.name, self.paths[-1])
        fsync_path(self.directory)
        self._tar = self._file = None

    def close(self) -> list[Path]:
        """Finish the last shard; returns the shard paths written."""
        self._finish()
        return self.paths

    def abort(self) -> None:
        """Drop the shard being written (its temporary file); finished shards stay."""
        if self._tar is None or self._file is None:
            return
        self._file.close()
        os.unlink(self._file.name)
        self.sizes.pop(self.paths.pop().name, None)
        self._tar = self._file = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
