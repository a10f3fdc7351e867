"""The corner rule of the label reader: a letter marks the panel whose top-left corner it stands at, even when a
detected box reaches over it (a cut right of a gutter letter), unless that breaks the figure's reading order."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from biomedclip.panels.label_model.generate import HELD_OUT_FONTS, font_paths
from biomedclip.panels.labels import CORNER_REACH, Reading, _corner_owner, _order_agreement, read_labels

PANEL_W, PANEL_H, GUTTER = 220, 180, 40


@pytest.fixture(scope="module")
def held_out_font() -> Path:
    fonts = [p for p in font_paths(include_held_out=True) if p.name in HELD_OUT_FONTS]
    assert fonts
    return fonts[0]


def _grid(letters: list[str], font: Path, columns: int, at_right: bool = False) -> tuple[Image.Image, list]:
    """Line-chart panels in a grid with ``GUTTER`` px between them; each letter is drawn in the gutter just left
    of its panel's top-left corner (or inside its top-right corner). Returns the figure and the true boxes."""
    rows = -(-len(letters) // columns)
    figure = Image.new("RGB", (GUTTER + columns * (PANEL_W + GUTTER), GUTTER + rows * (PANEL_H + GUTTER)), "white")
    draw = ImageDraw.Draw(figure)
    face = ImageFont.truetype(str(font), 24)
    boxes = []
    for i, letter in enumerate(letters):
        x0, y0 = GUTTER + (i % columns) * (PANEL_W + GUTTER), GUTTER + (i // columns) * (PANEL_H + GUTTER)
        draw.line([(x0 + 40, y0 + 30), (x0 + 40, y0 + 170), (x0 + 210, y0 + 170)], fill="black", width=2)
        draw.line([(x0 + 42, y0 + 160), (x0 + 110, y0 + 90), (x0 + 200, y0 + 60)], fill="black", width=2)
        where = (x0 + PANEL_W - 24, y0 + 2) if at_right else (x0 - 17, y0 - 4)
        draw.text(where, letter, font=face, fill="black", stroke_width=1, stroke_fill="black")
        boxes.append((x0, y0, x0 + PANEL_W, y0 + PANEL_H))
    return figure, boxes


def _read(figure: Image.Image, boxes: list) -> list[str | None]:
    return [label for label, _ in read_labels(figure, boxes)]


def test_gutter_letters_read_on_the_left_box_go_to_the_panel_they_head(held_out_font):
    """Left-column boxes cut right of the right column's letters (as a detector cutting at the wrong edge of a
    gutter does) still give every panel its own letter, not its right neighbour's."""
    figure, boxes = _grid(["A", "B", "C", "D"], held_out_font, columns=2)
    assert _read(figure, boxes) == ["A", "B", "C", "D"]  # the true boxes
    cut = [(b[0], b[1], b[2] + GUTTER, b[3]) if i % 2 == 0 else (b[0] + 10, *b[1:]) for i, b in enumerate(boxes)]
    assert _read(figure, cut) == ["A", "B", "C", "D"]


def test_letters_at_a_panels_top_right_stay_with_it(held_out_font):
    """A figure printing its letters inside each panel's top-right corner keeps them: handing them to the next
    panel would break the sequence's reading order."""
    figure, boxes = _grid(["A", "B", "C"], held_out_font, columns=3, at_right=True)
    assert _read(figure, boxes) == ["A", "B", "C"]


def test_corner_owner_takes_the_nearest_corner_within_reach():
    """Hand-computed: boxes 100 px wide, so the reach is 20 px around each top-left corner."""
    boxes = [(0, 0, 100, 100), (110, 0, 210, 100), (0, 120, 100, 220)]
    assert CORNER_REACH == 0.2
    assert _corner_owner((95, 2, 100, 10), boxes, 0) == 1  # 15 px left of box 1's corner, 95 from box 0's
    assert _corner_owner((90, 2, 96, 10), boxes, 0) == 1  # 20 px: exactly on the reach
    assert _corner_owner((89, 2, 95, 10), boxes, 0) == 0  # 21 px: out of reach
    assert _corner_owner((5, 2, 12, 10), boxes, 0) == 0  # at its own corner
    assert _corner_owner((2, 110, 9, 118), boxes, 0) == 2  # in the gutter above box 2
    assert _corner_owner((150, 50, 160, 60), boxes, 1) == 1  # inside a box, far from any other corner


def test_order_agreement_counts_pairs_in_and_against_reading_order():
    boxes = [(0, 0, 10, 10), (20, 0, 30, 10), (0, 20, 10, 30)]
    letters = [Reading("A", 1, True), Reading("B", 1, True), Reading("C", 1, True)]
    assert _order_agreement(letters, boxes) == 3
    swapped = [letters[1], letters[0], letters[2]]
    assert _order_agreement(swapped, boxes) == 1  # B before A: -1; A before C, B before C: +2
    assert _order_agreement([letters[0], None, Reading("A", 1, True)], boxes) == 0  # a repeat counts nothing


def test_known_letters_are_not_read_again_and_join_the_sequence(held_out_font, monkeypatch):
    """With the first two boxes' letters given, only the third box is read, and its letter still comes out in the
    figure's sequence; the given letters come back as they were given, fully sure."""
    import biomedclip.panels.labels as labels

    figure, boxes = _grid(["A", "B", "C"], held_out_font, columns=3)
    read = []
    original = labels._read_box
    monkeypatch.setattr(labels, "_read_box", lambda gray, box, *rest: read.append(box) or original(gray, box, *rest))
    assert read_labels(figure, boxes, known=["A", "B", None]) == [
        ("A", 1.0),
        ("B", 1.0),
        ("C", pytest.approx(1.0, abs=0.5)),
    ]
    assert read == [boxes[2]]


def _photo_figure(shared: Path, font: Path, letters: list[str]) -> tuple[Image.Image, list]:
    """Real chest radiographs side by side, each with a white letter in its bottom-left corner (as clinical
    figures print them), nothing along their tops."""
    photos = sorted((shared / "images" / "chest_xray").rglob("*.png"))[: len(letters)]
    side = 240
    figure = Image.new("RGB", (len(letters) * (side + 10) - 10, side), "white")
    draw = ImageDraw.Draw(figure)
    face = ImageFont.truetype(str(font), 28)
    boxes = []
    for i, (photo, letter) in enumerate(zip(photos, letters, strict=True)):
        x0 = i * (side + 10)
        with Image.open(photo) as image:
            figure.paste(image.convert("RGB").resize((side, side)), (x0, 0))
        draw.text((x0 + 10, side - 42), letter, font=face, fill="white", stroke_width=1, stroke_fill="white")
        boxes.append((x0, 0, x0 + side, side))
    return figure, boxes


def test_a_photos_bottom_corner_letter_is_read_when_the_caption_names_it(held_out_font, shared_fixtures):
    """Letters at the bottom-left of radiographs are read for the letters the caption names (through
    ``split_figure``, its own letters), never without such letters to look for (a radiograph's corner also holds
    side markers such as L and R)."""
    from biomedclip.panels.pipeline import split_figure

    figure, boxes = _photo_figure(shared_fixtures, held_out_font, ["A", "B"])
    assert [label for label, _ in read_labels(figure, boxes, allowed=frozenset("AB"))] == ["A", "B"]
    assert not {"A", "B"} & set(_read(figure, boxes))  # without letters to look for, the bottoms are not read
    found = split_figure(figure, "Chest radiographs. (A) Before treatment. (B) After treatment.")
    assert [(p.label, p.subcaption) for p in found.panels] == [("A", "Before treatment."), ("B", "After treatment.")]
