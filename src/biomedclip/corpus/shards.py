"""WebDataset shard writer: ``{split}-NNNNNN.tar`` with ``<key>.jpg``, ``<key>.txt``, ``<key>.json`` members.

Tar headers are fixed (mtime 0, uid/gid 0, mode 0644), so the same samples give byte-identical shards.
Each shard is written under a temporary name and renamed when complete: a reader never sees a partial shard.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


class ShardWriter:
    """Write samples of one split into numbered shards of at most ``max_samples`` samples."""

    def __init__(self, directory: Path, split: str, max_samples: int = 10_000) -> None:
        self.directory = Path(directory)
        self.split = split
        self.max_samples = max_samples
        self.paths: list[Path] = []
        self._tar: tarfile.TarFile | None = None
        self._tmp: Path | None = None
        self._count = 0
        self.directory.mkdir(parents=True, exist_ok=True)

    def write(self, key: str, jpeg: bytes, caption: str, record: dict[str, Any]) -> None:
        """Append one sample; ``key`` must be unique and contain no dot."""
        if self._tar is None or self._count >= self.max_samples:
            self._roll()
        assert self._tar is not None
        _add(self._tar, f"{key}.jpg", jpeg)
        _add(self._tar, f"{key}.txt", caption.encode())
        _add(self._tar, f"{key}.json", json.dumps(record, sort_keys=True, ensure_ascii=False).encode())
        self._count += 1

    def _roll(self) -> None:
        self._finish()
        path = self.directory / f"{self.split}-{len(self.paths):06d}.tar"
        self._tmp = path.with_suffix(".tar.tmp")
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 - spans calls
        self.paths.append(path)
        self._count = 0

    def _finish(self) -> None:
        if self._tar is not None and self._tmp is not None:
            self._tar.close()
            os.replace(self._tmp, self.paths[-1])
            self._tar = None

    def close(self) -> list[Path]:
        """Finish the last shard; returns the shard paths written."""
        self._finish()
        return self.paths

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
