"""Embed the figures of corpus shards and add them to a figure index, one shard at a time.

Building is incremental and resumable: the index folder lists the shards it holds (with the size and SHA-256 each
had, see :mod:`biomedclip.serve.identity`), is saved after every shard, and a later build with more shards embeds
only the new ones. When a shard it holds changed since it was indexed (a rebuilt corpus), the whole index is
built again, from the shards given and those it held that are still there. A figure whose image cannot be
decoded is skipped and counted, never fatal.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from biomedclip.api import Embedder
from biomedclip.serve.identity import changed_shards, shard_identity
from biomedclip.serve.index import FigureIndex, FigureIndexError, IndexConfig
from biomedclip.serve.shards import shard_location, shard_name
from biomedclip.serve.vector_shards import embed_shard_figures
from biomedclip.shards import is_url


@dataclass
class BuildReport:
    """What one build did: shards added or skipped (already indexed), figures added and skipped (bad image)."""

    shards_added: list[str] = field(default_factory=list)
    shards_skipped: list[str] = field(default_factory=list)
    figures_added: int = 0
    figures_skipped: int = 0
    total: int = 0
    kind: str = ""
    changed: dict[str, str] = field(default_factory=dict)  # held shards that changed (name -> why): rebuilt


def build_index(
    embedder: Embedder,
    shards: Sequence[str],
    out: str | Path,
    *,
    config: IndexConfig | None = None,
    rebuild: bool = False,
    batch_size: int = 64,
    on_shard: Callable[[str, int], None] | None = None,
) -> BuildReport:
    """Add the figures of ``shards`` to the index at ``out`` (created when absent), saving after each shard.

    Args:
        embedder: the model that embeds the figures (its name is recorded; a different model is refused).
        shards: shard paths; those already in the index (unchanged) are skipped. The index names them relative to
            ``out``.
        out: the index folder.
        config: index settings for a new index (an existing index keeps its own).
        rebuild: start a new index even if ``out`` holds one.
        batch_size: images per forward pass.
        on_shard: called with (shard, figures added) after each shard, for progress display.
    """
    out = Path(out)
    report = BuildReport()
    if (out / "meta.json").is_file() and not rebuild:
        index = FigureIndex.load(out)
        if index.model and index.model != embedder.name:
            raise FigureIndexError(
                f"{out} was built with model {index.model!r}, not {embedder.name!r}; use a new folder or rebuild"
            )
        report.changed = changed_shards(index)
        if report.changed:  # its offsets point into other bytes now: start again, keeping what it covered
            given = {shard_location(out, shard_name(out, shard)) for shard in shards}
            previous = [shard_location(out, name) for name in index.shards]
            kept = [location for location in previous if is_url(location) or os.path.exists(location)]
            shards = [*shards, *(location for location in kept if location not in given)]
            index = FigureIndex(index.dim, index.config)
        else:  # same bytes; copied shards get their new times recorded, so the service's start check stays a stat
            for name, recorded in index.identities.items():
                location = shard_location(out, name)
                if not is_url(location):
                    recorded["mtime_ns"] = os.stat(location).st_mtime_ns
    else:
        index = FigureIndex(embedder.dim, config)  # saving it replaces any older records in ``out``
    index.model = embedder.name
    held = {shard_location(out, name) for name in index.shards}
    for shard in shards:
        name = shard_name(out, shard)
        if shard_location(out, name) in held:
            report.shards_skipped.append(shard)
            continue
        embedded = embed_shard_figures(embedder, shard, name, batch_size=batch_size)
        vectors, records, skipped = embedded.vectors, embedded.records, len(embedded.skipped)
        identity = shard_identity(shard)
        index.add(vectors, records)
        index.shards.append(name)
        if identity is not None:
            index.identities[name] = identity
        held.add(shard_location(out, name))
        index.save(out)
        report.shards_added.append(shard)
        report.figures_added += len(records)
        report.figures_skipped += skipped
        if on_shard is not None:
            on_shard(shard, len(records))
    if not report.shards_added:  # a new or emptied index is written even when no shard was added
        index.save(out)
    report.total, report.kind = len(index), index.kind
    return report
