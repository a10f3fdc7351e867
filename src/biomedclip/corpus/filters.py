"""Figure filters with documented defaults; each returns a reason code or None.

The paper (PMC-15M) kept every figure with a caption; these filters only drop pairs that cannot teach
anything: an empty or placeholder caption, a tiny icon, or an extreme strip.

Defaults and why:
    * ``min_caption_chars=10``: shorter captions are labels ("Figure 1", "Fig. S2") with no content.
    * ``max_caption_chars=20_000``: beyond this the "caption" is a mis-tagged body section (longest genuine
      PMC captions are a few thousand characters); the tokenizer truncates at 256 tokens anyway.
    * placeholder captions: "Click here for additional data file", "Not available", "Graphical abstract" and
      the like carry no description of the image.
    * ``min_side=32``: the original image's shorter side; smaller files are icons, bullets and inline formulas.
    * ``max_aspect=10``: wider/taller than 10:1 are separators, equation strips and multi-row panels that
      a 224x224 center crop would destroy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PLACEHOLDER_CAPTION = re.compile(
    r"^\s*(?:(?:fig(?:ure)?\.?|scheme|plate|graphical abstract|image|photo)\s*[a-z]?\d*[a-z]?[.:]?"
    r"|click here for (?:additional|the) data file\.?|not available\.?|n/?a|no caption\.?|caption\.?"
    r"|graphical abstract\.?|(?:supplementary|additional) (?:figure|file|data)\s*[a-z]?\d*\.?)\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds of the figure filters (see the module docstring for the reasons behind each default).

    Attributes:
        min_caption_chars: captions shorter than this (after whitespace is collapsed) are refused.
        max_caption_chars: longer captions are refused, already while the XML is read.
        reject_placeholder_captions: refuse "Figure 1", "Click here for additional data file" and the like.
        min_side: images whose shorter original side is below this many pixels are refused.
        max_aspect: images longer than this many times their width (or the reverse) are refused.
    """

    min_caption_chars: int = 10
    max_caption_chars: int = 20_000
    reject_placeholder_captions: bool = True
    min_side: int = 32
    max_aspect: float = 10.0

    def __post_init__(self) -> None:
        from biomedclip.errors import InputError

        if min(self.min_caption_chars, self.min_side) < 0 or self.max_caption_chars < self.min_caption_chars:
            raise InputError(f"filter settings out of range (lengths and sides >= 0, max >= min): {self}")
        if self.max_aspect < 1:
            raise InputError(f"max_aspect must be at least 1, not {self.max_aspect}")


def caption_reason(caption: str, config: FilterConfig = FilterConfig()) -> str | None:
    """Why ``caption`` is rejected (``caption_too_short``, ``caption_too_long``, ``placeholder_caption``), or None."""
    text = " ".join(caption.split())
    if config.reject_placeholder_captions and PLACEHOLDER_CAPTION.match(text):
        return "placeholder_caption"
    if len(text) < config.min_caption_chars:
        return "caption_too_short"
    if len(text) > config.max_caption_chars:
        return "caption_too_long"
    return None


def image_reason(width: int, height: int, config: FilterConfig = FilterConfig()) -> str | None:
    """Why an image of the original ``width`` x ``height`` is rejected (``image_too_small``, ``extreme_aspect``)."""
    if min(width, height) < config.min_side:
        return "image_too_small"
    if max(width, height) / min(width, height) > config.max_aspect:
        return "extreme_aspect"
    return None
