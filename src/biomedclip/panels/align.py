"""Join detected panels to the caption's subcaptions, saying for each panel how it was joined.

The rule, in order: a panel whose read letter matches a caption label (case-insensitive; "A1" falls back to "A")
gets that label's text (``"label"``); when the remaining panels have no readable letter (none, or one the
caption does not name: a misreading) and the caption's remaining labels agree with them in number, they are
joined in reading order, provided the letters then still increase along the reading order (``"order"``); a
caption that names its panels by position only ("left", "top"; no letters) gives each panel the words for its
side (``"position"``); any other panel keeps the shared caption only (``"none"``). No panel is dropped, and no text
is given where the join would be a guess against the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

from biomedclip.panels.subcaptions import Subcaptions
from biomedclip.panels.types import Box

_SIDES = {
    "left": ("x", 0),
    "right": ("x", 1),
    "top": ("y", 0),
    "upper": ("y", 0),
    "bottom": ("y", 1),
    "lower": ("y", 1),
}


@dataclass(frozen=True)
class Joined:
    """One panel's own text (None: shared caption only) and how it was joined."""

    subcaption: str | None
    alignment: str


def align(boxes: list[Box], labels: list[str | None], subcaptions: Subcaptions) -> list[Joined]:
    """Join each panel (boxes in reading order, with its read letter or None) to its subcaption."""
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
    joined: list[Joined | None] = [None] * len(boxes)
    used: set[str] = set()
    for index, label in enumerate(labels):
        text = subcaptions.text_for(label) if label else None
        if text is not None:
            joined[index] = Joined(text, "label")
            used.add(label.lower())
    _join_in_order(joined, labels, subcaptions, used)
    _join_by_position(joined, boxes, subcaptions)
    return [j if j is not None else Joined(None, "none") for j in joined]


def _caption_order(name: str) -> tuple[int, int, str]:
    return (ord(name[0].lower()), int(name[1:]) if name[1:].isdigit() else -1, name)


def _join_in_order(
    joined: list[Joined | None], labels: list[str | None], subcaptions: Subcaptions, used: set[str]
) -> None:
    free_panels = [i for i, j in enumerate(joined) if j is None]
    free_labels = sorted((n for n, t in subcaptions.parts.items() if t and n.lower() not in used), key=_caption_order)
    if not free_panels or len(free_panels) != len(free_labels):
        return
    letters = [label.lower() if label and joined[i] else None for i, label in enumerate(labels)]
    for index, name in zip(free_panels, free_labels, strict=True):
        letters[index] = name.lower()
    ordered = [_caption_order(letter) for letter in letters if letter is not None]
    if ordered != sorted(ordered) or len(set(ordered)) != len(ordered):
        return
    for index, name in zip(free_panels, free_labels, strict=True):
        joined[index] = Joined(subcaptions.parts[name], "order")


def _join_by_position(joined: list[Joined | None], boxes: list[Box], subcaptions: Subcaptions) -> None:
    """Panels left unjoined get the text of every position word that fits their box ("left", "upper right")."""
    sides = {key: text for key, text in subcaptions.positions.items() if text and _fits(key.split(), None)}
    if not sides or len(boxes) < 2 or any(subcaptions.parts.values()):  # with letters, "(top)" is inside a panel
        return
    centres = {"x": [(b[0] + b[2]) / 2 for b in boxes], "y": [(b[1] + b[3]) / 2 for b in boxes]}
    middles = {axis: (min(values) + max(values)) / 2 for axis, values in centres.items()}
    spread = {axis: max(values) - min(values) >= 1 for axis, values in centres.items()}
    for index, j in enumerate(joined):
        if j is not None:
            continue
        where = {axis: centres[axis][index] - middles[axis] if spread[axis] else 0.0 for axis in centres}
        texts = [text for key, text in sides.items() if _fits(key.split(), where)]
        if texts:
            joined[index] = Joined(" ".join(texts), "position")


def _fits(words: list[str], where: dict[str, float] | None) -> bool:
    """Whether every word is a side ("left", "top"…) and, given a box's offset from the middle, the box is on it."""
    if not words or any(word not in _SIDES for word in words):
        return False
    if where is None:
        return True
    return all((where[axis] < 0) if end == 0 else (where[axis] > 0) for axis, end in (_SIDES[w] for w in words))
