"""Shard specs: how every stage that reads corpus shards (train, evaluate, index, tokenizer) names them.

A spec is one string or several; each string may join entries with ``::``. An entry is a brace pattern
(``train-{000000..000099}.tar``), a local glob, a folder (its ``*.tar``), a file, or a URL (``s3://``,
``http(s)://``), kept as is for the reader to stream.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable

from braceexpand import braceexpand


class ShardSpecError(FileNotFoundError, ValueError):
    """A shard spec that names no shard, or local shards that do not exist."""


def expand_shards(specs: str | Iterable[str]) -> list[str]:
    """The shard paths and URLs a spec names, in order, without duplicates.

    Raises:
        ShardSpecError: an entry matches nothing, or a named local shard is missing.
    """
    urls: list[str] = []
    for spec in [specs] if isinstance(specs, str) else specs:
        for entry in filter(None, (part.strip() for part in str(spec).split("::"))):
            for item in braceexpand(entry):
                if "://" in item:
                    urls.append(item)
                elif os.path.isdir(item):
                    urls.extend(sorted(glob.glob(os.path.join(item, "*.tar"))))
                elif any(ch in item for ch in "*?["):
                    matches = sorted(glob.glob(item))
                    if not matches:
                        raise ShardSpecError(f"no shards match {item!r}")
                    urls.extend(matches)
                else:
                    urls.append(item)
    if not urls:
        raise ShardSpecError(f"no shards match {specs!r}")
    missing = [u for u in urls if "://" not in u and not os.path.isfile(u)]
    if missing:
        raise ShardSpecError(f"{len(missing)} shard(s) not found, e.g. {missing[0]}")
    return list(dict.fromkeys(urls))
