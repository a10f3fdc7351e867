"""The panel contract: what splitting one figure returns (the ``panels detect`` output row, less its ``id``).

Boxes are ``(x0, y0, x1, y1)`` in the original image's pixels, ``x1``/``y1`` exclusive. A single-panel figure is
``compound=False`` with one panel covering the figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Box = tuple[int, int, int, int]


@dataclass
class Panel:
    """One panel: its box, the letter printed on it (if read), its own caption text, and a confidence.

    ``alignment`` says how the subcaption was joined (``biomedclip.panels.align``): ``"label"`` (the read letter
    matches a caption label), ``"order"`` (letters unreadable, caption labels taken in reading order),
    ``"position"`` (the caption's left/right/top/bottom words), ``"none"`` (shared caption only), ``"whole"``
    (a single-panel figure given the whole caption), or None
    where no alignment was made (ground truth, a figure without caption).
    """

    box: Box
    label: str | None = None
    subcaption: str | None = None
    score: float = 1.0
    alignment: str | None = None

    def as_dict(self) -> dict[str, Any]:
        row = {"box": list(self.box), "label": self.label, "subcaption": self.subcaption, "score": self.score}
        if self.alignment is not None:
            row["alignment"] = self.alignment
        return row


@dataclass
class FigurePanels:
    """The panels of one figure and the caption text that applies to all of them."""

    compound: bool
    shared_caption: str | None
    panels: list[Panel] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "compound": self.compound,
            "shared_caption": self.shared_caption,
            "panels": [p.as_dict() for p in self.panels],
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> FigurePanels:
        panels = [
            Panel(
                tuple(int(v) for v in p["box"]),
                p.get("label"),
                p.get("subcaption"),
                float(p.get("score", 1.0)),
                p.get("alignment"),
            )
            for p in row.get("panels") or []
        ]
        return cls(bool(row.get("compound")), row.get("shared_caption"), panels)
