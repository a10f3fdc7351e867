"""Captions from WebDataset shards (the ``<key>.txt`` members), for training a vocabulary."""

from __future__ import annotations

import glob
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path


def expand_shards(specs: Iterable[str]) -> list[Path]:
    """Shard paths from files, folders (their ``*.tar``), globs and brace ranges (``train-{000000..000009}.tar``)."""
    from braceexpand import braceexpand

    paths: list[Path] = []
    for spec in specs:
        for pattern in braceexpand(str(spec)):
            path = Path(pattern)
            if path.is_dir():
                paths.extend(sorted(path.glob("*.tar")))
            elif path.is_file():
                paths.append(path)
            else:
                matches = sorted(Path(p) for p in glob.glob(pattern))
                if not matches:
                    raise FileNotFoundError(f"no shards match {pattern}")
                paths.extend(matches)
    return paths


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
