"""Read figures out of the corpus's WebDataset shards, remembering where each image lies in its tar.

A shard is a plain tar whose members ``<key>.jpg``, ``<key>.txt`` and ``<key>.json`` sit next to each other
(the DESIGN.md contract). Reading it with :mod:`tarfile` in stream mode gives each member's data offset, so the
search service can later serve a figure's image by seeking straight to it, without unpacking the shard.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
# webdataset's convention: the key is the member name up to the first dot of its basename.
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


class ShardError(ValueError):
    """A shard that cannot be read (missing, not a tar, truncated)."""


@dataclass
class ShardFigure:
    """One sample of a shard: its figure record, caption, and where its image bytes are."""

    key: str
    shard: str
    offset: int
    size: int
    image: bytes
    record: dict[str, Any] = field(default_factory=dict)
    caption: str = ""


def _finish(key: str, parts: dict[str, Any], shard: str) -> ShardFigure | None:
    image_ext = next((ext for ext in IMAGE_EXTENSIONS if ext in parts), None)
    if image_ext is None:
        return None
    offset, size, data = parts[image_ext]
    record: dict[str, Any] = {}
    if "json" in parts:
        try:
            record = json.loads(parts["json"][2])
        except ValueError:
            record = {}
    caption = parts["txt"][2].decode("utf-8", errors="replace") if "txt" in parts else ""
    caption = caption or str(record.get("caption", ""))
    return ShardFigure(key=key, shard=shard, offset=offset, size=size, image=data, record=record, caption=caption)


def iter_shard(path: str | Path) -> Iterator[ShardFigure]:
    """Yield every sample with an image from one shard, in tar order.

    Raises:
        ShardError: the file is missing, is not a tar, or is truncated.
    """
    shard = str(Path(path).resolve())
    current: str | None = None
    parts: dict[str, Any] = {}
    try:
        with tarfile.open(shard, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                match = _KEY_EXT.match(member.name)
                if match is None:
                    continue
                key, ext = match.group(1), match.group(2).lower()
                if key != current:
                    if current is not None and (figure := _finish(current, parts, shard)) is not None:
                        yield figure
                    current, parts = key, {}
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                parts[ext] = (member.offset_data, member.size, data)
    except (OSError, tarfile.TarError) as error:
        raise ShardError(f"cannot read shard {shard}: {error}") from error
    if current is not None and (figure := _finish(current, parts, shard)) is not None:
        yield figure


def read_image_bytes(shard: str | Path, offset: int, size: int) -> bytes:
    """Return ``size`` bytes at ``offset`` of a shard: one figure's image, as stored.

    Raises:
        ShardError: the shard is missing or shorter than the record says.
    """
    try:
        with open(shard, "rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
    except OSError as error:
        raise ShardError(f"cannot read shard {shard}: {error}") from error
    if len(data) != size:
        raise ShardError(f"shard {shard} is shorter than expected (wanted {size} bytes at {offset})")
    return data
