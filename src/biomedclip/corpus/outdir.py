"""Where a build writes: a local folder or ``s3://bucket/prefix``, behind the few operations the build needs.

Every write is atomic: a local file is written under a temporary name beside its destination (never in
``$TMPDIR``, which may be another file system), fsynced and renamed (and its folder fsynced); an S3 object
appears whole when its PUT completes. The S3 endpoint comes from
``BIOMEDCLIP_S3_ENDPOINT``, else boto3's own ``AWS_ENDPOINT_URL``; credentials are boto3's usual ones.
The object is picklable (workers receive it and open their own client).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from biomedclip.durable import fsync_path

SCRATCH_PREFIX = ".tmp-"
"""Folders named so hold files being written; listings skip them and a build removes stale ones."""


def replace_file(tmp: Path, path: Path) -> None:
    """Rename a complete ``tmp`` onto ``path`` durably (fsync the data, rename, fsync the folder).

    ``tmp`` should lie beside ``path``; if it lies on another file system (the rename fails with ``EXDEV``),
    it is first copied to a temporary name beside ``path``, so the final step is still an atomic rename.
    """
    fsync_path(tmp)
    try:
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        near = path.with_name(f"{SCRATCH_PREFIX}{path.name}.{os.getpid()}")
        shutil.copyfile(tmp, near)
        fsync_path(near)
        os.replace(near, path)
        os.unlink(tmp)
    fsync_path(path.parent)


class OutDir:
    """A local folder or an S3 prefix; paths below it are ``/``-separated relative names."""

    def __init__(self, location: str | Path) -> None:
        text = str(location)
        if text.startswith("s3:/") and not text.startswith("s3://"):  # an s3:// URL that went through Path()
            text = "s3://" + text[4:]
        self.url = text.rstrip("/")
        self.is_s3 = text.startswith("s3://")
        if self.is_s3:
            bucket, _, prefix = text[5:].partition("/")
            self.bucket, self.prefix = bucket, prefix.strip("/")
            self.root: Path | None = None
        else:
            self.root = Path(text)
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    def __str__(self) -> str:
        return self.url

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            endpoint = os.environ.get("BIOMEDCLIP_S3_ENDPOINT") or None
            self._client = boto3.client("s3", endpoint_url=endpoint)
        return self._client

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def local(self, name: str) -> Path:
        """The local path of ``name`` (local OUT only)."""
        assert self.root is not None
        return self.root / name

    @contextmanager
    def scratch(self, name: str) -> Iterator[Path]:
        """A temporary folder for files that ``put_file`` will move to ``name``: beside it (same file system,
        so the move is a rename) for a local OUT, in ``$TMPDIR`` for S3; removed afterwards."""
        if self.is_s3:
            with tempfile.TemporaryDirectory(prefix="biomedclip-") as tmp:
                yield Path(tmp)
            return
        parent = self.local(name).parent
        parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=parent))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def remove_scratch(self, folder: str) -> None:
        """Delete scratch folders below ``folder`` left by a killed writer (call while holding the build lock)."""
        if self.is_s3 or not self.local(folder).is_dir():
            return
        for stale in sorted(self.local(folder).rglob(f"{SCRATCH_PREFIX}*")):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)

    def put_file(self, name: str, source: Path) -> None:
        """Move the complete local file ``source`` to ``name`` atomically (S3: upload, then delete ``source``)."""
        if self.is_s3:
            self.client.upload_file(str(source), self.bucket, self._key(name))
            source.unlink()
            return
        path = self.local(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(source, path)

    def create_object(self, name: str, data: bytes) -> bool:
        """S3 OUT: create object ``name`` holding ``data`` only if it does not exist (a conditional PUT,
        ``If-None-Match: *``, atomic on S3); False when it exists already."""
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data, IfNoneMatch="*")
        except ClientError as error:
            if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):  # exists, or racing
                return False
            raise
        return True

    def read_bytes(self, name: str) -> bytes:
        if self.is_s3:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()
        return self.local(name).read_bytes()

    def read_range(self, name: str, offset: int, size: int) -> bytes:
        """``size`` bytes of ``name`` from ``offset``."""
        if self.is_s3:
            byte_range = f"bytes={offset}-{offset + size - 1}"
            return self.client.get_object(Bucket=self.bucket, Key=self._key(name), Range=byte_range)["Body"].read()
        with open(self.local(name), "rb") as fh:
            fh.seek(offset)
            return fh.read(size)

    def list(self, folder: str, suffix: str = "") -> Iterator[str]:
        """Names of the files below ``folder`` ending with ``suffix``, sorted."""
        if self.is_s3:
            paginator = self.client.get_paginator("list_objects_v2")
            start = len(self.prefix) + 1 if self.prefix else 0
            names = []
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(folder.rstrip("/") + "/")):
                names += [obj["Key"][start:] for obj in page.get("Contents", []) if obj["Key"].endswith(suffix)]
            yield from sorted(names)
            return
        root = self.local(folder)
        if root.is_dir():
            yield from sorted(
                str(p.relative_to(self.root))
                for p in root.rglob(f"*{suffix}")
                if p.is_file()
                and ".tmp" not in p.name
                and not any(part.startswith(SCRATCH_PREFIX) for part in p.relative_to(root).parts)
            )

    def delete(self, name: str) -> None:
        if self.is_s3:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name))
        else:
            self.local(name).unlink(missing_ok=True)
