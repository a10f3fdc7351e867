"""biomedclip: an open, reproducible implementation of BiomedCLIP.

Stages (each reads only the previous stage's files): ``corpus`` (PMC articles to WebDataset shards),
``model`` (open_clip-compatible BiomedCLIP), ``train`` (torchrun trainer), ``evaluate`` (the paper's suite)
and ``serve`` (figure search index and HTTP service).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def __getattr__(name: str) -> Any:
    """Import ``biomedclip.load`` (and torch with it) only when it is first used."""
    if name == "load":
        from biomedclip.api import load

        return load
    raise AttributeError(f"module 'biomedclip' has no attribute {name!r}")
