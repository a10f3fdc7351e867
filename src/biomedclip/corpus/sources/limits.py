"""Bounds on what one article may cost a source, before any byte is spent on it; each refusal has a reason code.

Defaults and why:
    * ``max_member_bytes=256 MiB``: one file of a package (a tar or zip member, a file in a folder, an S3 object).
      The largest genuine PMC figure files (uncompressed TIFF) are tens of MiB. Refused: ``member_too_large``.
    * ``max_article_bytes=1 GiB``: all files read for one article together (its XML and the images its figures
      reference; other members are never read). Refused: ``article_too_large`` for the files past the budget.
      Package files, folders and S3 objects all keep to it (a folder: the referenced images, in name order).

The number of figures per article is bounded where the XML is read: ``jats.DEFAULT_MAX_FIGURES``.
"""

from __future__ import annotations

from dataclasses import dataclass

from biomedclip.errors import InputError

MIB = 1024 * 1024


@dataclass(frozen=True)
class SourceLimits:
    """Byte budgets of a source (see the module docstring).

    Attributes:
        max_member_bytes: the largest file of a package, folder or bucket that is read (bytes).
        max_article_bytes: the most bytes read for one article, its XML and referenced images together.
    """

    max_member_bytes: int = 256 * MIB
    max_article_bytes: int = 1024 * MIB

    def __post_init__(self) -> None:
        if self.max_member_bytes < 1 or self.max_article_bytes < 1:
            raise InputError(f"source limits must be positive: {self}")
