"""Which corpus an index was built from, and whether its shards are still that corpus.

When a shard is indexed, its size, modification time and SHA-256 are recorded in the index's ``meta.json``, and
each figure's record holds the SHA-256 of its image bytes. A shard whose size differs, or whose modification time
differs and whose SHA-256 then differs too, changed since it was indexed (a rebuilt or damaged corpus): the
offsets the index holds no longer point at its figures. ``index build`` re-embeds such an index, the service
refuses to start on it, and every image is checked against its recorded SHA-256 before it is served. Shards
named by URL (``s3://``, ``https://``) are not checked at start; their images are still checked when served.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from biomedclip.serve.index import FigureIndex
from biomedclip.serve.shards import shard_location
from biomedclip.shards import is_url


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def shard_identity(location: str) -> dict[str, Any] | None:
    """``{"bytes", "mtime_ns", "sha256"}`` of a local shard; None for a URL (not checked at start)."""
    if is_url(location):
        return None
    stat = os.stat(location)
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": file_sha256(location)}


def shard_change(location: str, recorded: dict[str, Any] | None) -> str | None:
    """Why the shard at ``location`` is not the one ``recorded`` describes, or None when it is (or is a URL).

    Hashes the file only when its size matches and its modification time does not (a copied corpus).
    """
    if is_url(location):
        return None
    if recorded is None:
        return "indexed without a recorded size and SHA-256 (an older index)"
    try:
        stat = os.stat(location)
    except OSError:
        return "missing"
    if stat.st_size != recorded["bytes"]:
        return f"{recorded['bytes']} bytes when indexed, {stat.st_size} now"
    if stat.st_mtime_ns != recorded["mtime_ns"] and file_sha256(location) != recorded["sha256"]:
        return "its bytes changed since it was indexed"
    return None


def changed_shards(index: FigureIndex) -> dict[str, str]:
    """The index's shards that are no longer what was indexed: shard name -> why."""
    changes = {}
    for name in index.shards:
        why = shard_change(shard_location(index.folder, name), index.identities.get(name))
        if why is not None:
            changes[name] = why
    return changes


def describe_changes(changes: dict[str, str], limit: int = 3) -> str:
    """``"a.tar (missing), b.tar (...) and 4 more"``, for one-line messages."""
    shown = [f"{name} ({why})" for name, why in list(changes.items())[:limit]]
    more = len(changes) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")
