"""Captions from WebDataset shards (the ``<key>.txt`` members), for training a vocabulary."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from biomedclip.shards import iter_samples


def iter_captions(shards: Iterable[str | Path]) -> Iterator[str]:
    """Yield the non-empty caption of every sample, shard by shard, streaming (other members are not read).

    Raises:
        biomedclip.shards.ShardError: a shard cannot be read (the message names it).
    """
    for shard in shards:
        for sample in iter_samples(str(shard), read=lambda ext: ext == "txt"):
            text = (sample.text() or "").strip()
            if text:
                yield text
