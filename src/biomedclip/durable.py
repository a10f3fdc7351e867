"""Durable writes: flush a file's data, or a folder's entries (which makes the renames inside it durable)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a folder."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    """fsync a file and its folder entry."""
    fsync_path(path)
    fsync_path(Path(path).parent)
