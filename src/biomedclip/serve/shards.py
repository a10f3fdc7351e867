"""The figures of corpus shards as the figure index sees them: record, caption, and where the image lies.

Reading goes through :mod:`biomedclip.shards`; this module adds the index's view: each figure carries its
image's offset and size in the shard, so the service can serve the image by seeking straight to it, and an
index names its shards relative to its own folder, so an index folder can move together with its corpus.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biomedclip.shards import ShardError, is_url, iter_samples, read_member

__all__ = [
    "ShardError",
    "ShardFigure",
    "index_record",
    "iter_shard",
    "read_image_bytes",
    "shard_location",
    "shard_name",
]


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


def iter_shard(path: str | Path, on_no_image: Callable[[str], None] | None = None) -> Iterator[ShardFigure]:
    """Yield every sample with an image from one shard, in tar order (``shard`` is the path as given);
    ``on_no_image(key)`` is called for each sample without one.

    Raises:
        ShardError: the file is missing, is not a tar, is compressed (no offsets) or is truncated.
    """
    shard = str(path)
    for sample in iter_samples(shard):
        image = sample.image_span("the search index")
        if image is None:
            if on_no_image is not None:
                on_no_image(sample.key)
            continue
        ext, (offset, size) = image
        record = sample.record()
        caption = sample.text() or str(record.get("caption", ""))
        yield ShardFigure(sample.key, shard, offset, size, sample.data[ext], record, caption)


def index_record(figure: ShardFigure, shard: str) -> dict[str, Any]:
    """The figure's index record: its shard record with key, caption, ``shard`` (the shard's name in the index or
    vector folder), where the image lies and the SHA-256 of its bytes."""
    return {
        **figure.record,
        "key": figure.key,
        "caption": figure.caption,
        "shard": shard,
        "offset": figure.offset,
        "size": figure.size,
        "image_sha256": hashlib.sha256(figure.image).hexdigest(),
    }


def shard_name(index_folder: str | Path, shard: str) -> str:
    """How an index at ``index_folder`` names ``shard``: relative to the folder (URLs stay as they are)."""
    if is_url(shard):
        return shard
    return Path(os.path.relpath(Path(shard).resolve(), Path(index_folder).resolve())).as_posix()


def shard_location(index_folder: str | Path | None, name: str) -> str:
    """The shard an index's ``name`` refers to (the inverse of :func:`shard_name`; absolute names are kept)."""
    if is_url(name) or index_folder is None:
        return name
    return os.path.normpath(os.path.join(os.path.abspath(index_folder), name))


def read_image_bytes(shard: str | Path, offset: int, size: int) -> bytes:
    """Return ``size`` bytes at ``offset`` of a shard: one figure's image, as stored.

    Raises:
        ShardError: the shard is missing or shorter than the record says.
    """
    return read_member(str(shard), offset, size)
