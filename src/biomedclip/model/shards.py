"""Captions from WebDataset shards (the ``<key>.txt`` members), for training a vocabulary."""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path


def iter_captions(shards: Iterable[Path]) -> Iterator[str]:
    """Yield the non-empty text of every ``.txt`` member, shard by shard, streaming."""
    for shard in shards:
        try:
            with tarfile.open(shard, mode="r|*") as tar:
                for member in tar:
                    if member.isfile() and member.name.endswith(".txt"):
                        handle = tar.extractfile(member)
                        text = handle.read().decode("utf-8", errors="replace").strip() if handle else ""
                        if text:
                            yield text
        except tarfile.TarError as err:
            raise ValueError(f"{shard}: not a readable tar shard ({err})") from err
