"""Letter-guided grouping in panel detection: the figure's letter sequence read at the pieces' tops decides which
pieces are panels and which are parts of one; hand-made letters and figures with known boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from biomedclip.panels.label_model.generate import HELD_OUT_FONTS, font_paths
from biomedclip.panels.labels import Letter
from biomedclip.panels.layout import (
    _fill_gaps,
    _head_letters,
    _Piece,
    _sequence_heads,
    detect_panels,
    detect_panels_and_letters,
)
from biomedclip.panels.pipeline import split_figure


def _letter(text: str, score: float = 0.9, x: int = 0, y: int = 0) -> Letter:
    return Letter(text, (x, y, x + 10, y + 12), score)


def _texts(heads: list[Letter | None]) -> list[str | None]:
    return [None if h is None else h.text for h in heads]


def test_sequence_from_a_with_a_stray_letter_past_the_run():
    letters = [[_letter("A")], [_letter("T"), _letter("B", 0.6)], [_letter("C")], [_letter("T")]]
    heads, extras = _sequence_heads(letters)
    assert _texts(heads) == ["A", "B", "C", None]  # "T" is far past C: a title's letter, not a panel's
    assert extras == []


def test_one_unread_letter_is_skipped_two_end_the_run():
    heads, _ = _sequence_heads([[_letter("A")], [_letter("C")], [_letter("F")]])
    assert _texts(heads) == ["A", "C", None]  # B missed: C still counts; D and E missed: F is a stray


def test_the_figure_case_wins_and_caseless_shapes_take_it():
    # lower-case figure: "a", "b" are sure; the "C" read as upper is the same shape as "c"; "D" is upper, a stray
    letters = [[_letter("a")], [_letter("b")], [_letter("C", 0.7)], [_letter("D", 0.95)]]
    heads, _ = _sequence_heads(letters)
    assert _texts(heads) == ["a", "b", "c", None]


def test_a_bar_is_the_figures_i_or_l_and_casts_no_case_vote():
    """A plain bar reads as "l" or "I" alike: in an upper-case run it heads as the I after H, in a lower-case
    run as the l after k; several bars read as "l" do not turn an upper-case figure lower-case."""
    upper = [[_letter(c)] for c in "ABCDEFGH"] + [[_letter("l", 0.95)], [_letter("J")]]
    assert _texts(_sequence_heads(upper)[0])[-3:] == ["H", "I", "J"]
    lower = [[_letter(c)] for c in "abcdefghijk"] + [[_letter("I", 0.95)]]
    assert _texts(_sequence_heads(lower)[0])[-2:] == ["k", "l"]
    bars = [[_letter("A", 0.6)], [_letter("l", 0.95)], [_letter("l", 0.95)]]
    assert _texts(_sequence_heads(bars)[0])[0] == "A"


def test_each_letter_goes_to_its_surest_piece_and_a_second_one_is_an_extra():
    letters = [[_letter("A", 0.6)], [_letter("A", 0.9), _letter("B", 0.8, x=200)]]
    heads, extras = _sequence_heads(letters)
    assert _texts(heads) == [None, "A"]
    assert [(i, letter.text) for i, letter in extras] == [(1, "B")]


def test_no_letters_no_heads():
    heads, extras = _sequence_heads([[], [], []])
    assert heads == [None, None, None] and extras == []


def test_gap_filled_when_one_unheaded_piece_lies_between():
    pieces = [_Piece((0, 0, 100, 100), 10), _Piece((110, 0, 210, 100), 10), _Piece((220, 0, 320, 100), 10)]
    filled = _fill_gaps(pieces, [_letter("A"), None, _letter("C")])
    assert _texts(filled) == ["A", "B", "C"]
    assert filled[1].score == 0.0  # inferred, not read


def test_gap_not_filled_when_two_pieces_could_hold_the_letter():
    pieces = [_Piece((i * 110, 0, i * 110 + 100, 100), 10) for i in range(4)]
    filled = _fill_gaps(pieces, [_letter("A"), None, None, _letter("C")])
    assert _texts(filled) == ["A", None, None, "C"]


def test_head_letters_first_line_left_edge_or_a_row_with_another_head():
    text_px = 10.0  # HEAD_TEXT reach 10 px; ROW_LETTER_TEXT reach 20 px from the piece's left edge
    boxes = [(0, 0, 100, 100), (120, 0, 220, 100), (240, 0, 340, 100), (0, 120, 100, 220)]
    first_line = Letter("A", (30, 10, 40, 22), 0.9)  # 10 px below its piece's top: exactly on the reach
    row_edge = Letter("B", (140, 12, 150, 24), 0.9)  # 12 px down, 20 px in: on A's line, exactly on the reach
    row_past = Letter("C", (261, 12, 271, 24), 0.9)  # on A's line but 21 px in: part of a plot
    alone = Letter("D", (15, 150, 25, 162), 0.9)  # 15 px in, 30 px down, on no head's line
    kept = _head_letters([[first_line], [row_edge], [row_past], [alone]], boxes, text_px)
    assert [[t.text for t in found] for found in kept] == [["A"], ["B"], [], []]


@pytest.fixture(scope="module")
def face() -> ImageFont.FreeTypeFont:
    """Letters in a font the glyph model never trained on (matplotlib's cmss10), bold by a stroke."""
    fonts = [p for p in font_paths(include_held_out=True) if p.name in HELD_OUT_FONTS]
    assert fonts, "the held-out font ships with matplotlib and must be found"
    return ImageFont.truetype(str(Path(fonts[0])), 26)


def _bars(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], seed: int) -> None:
    """A framed bar chart filling ``box``: frame, five bars, no letter, no title."""
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = box
    draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=0, width=2)
    for i in range(5):
        top = y0 + int(rng.uniform(0.1, 0.7) * (y1 - y0))
        bx = x0 + 15 + i * (x1 - x0 - 30) // 5
        draw.rectangle([bx, top, bx + (x1 - x0) // 10, y1 - 3], fill=(40, 90, 190))


def _figure(face, lower_letter: str | None) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """Left column: a chart under letter "A" and, 40 px below, a second chart (with ``lower_letter`` or none);
    right column: one tall chart under "B" (or "C" when the lower chart is "B"). Returns the image and the
    letter-anchored chart boxes (letter rows included)."""
    image = Image.new("RGB", (640, 520), "white")
    draw = ImageDraw.Draw(image)
    top_left, bottom_left, right = (10, 10, 300, 240), (10, 280, 300, 510), (350, 10, 630, 510)
    for box, text in ((top_left, "A"), (bottom_left, lower_letter), (right, "C" if lower_letter else "B")):
        if text is not None:
            draw.text((box[0], box[1]), text, font=face, fill=0, stroke_width=1, stroke_fill=0)
        _bars(draw, (box[0] + 30, box[1] + 30, box[2], box[3]), seed=box[1] + box[0])
    return image, [top_left, bottom_left, right]


def _close(found, want, tolerance=6) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(found, want, strict=True))


def test_unlettered_chart_joins_the_lettered_panel_above(face):
    image, (top_left, bottom_left, right) = _figure(face, None)
    boxes = [box for box, _ in detect_panels(image)]
    assert len(boxes) == 2, boxes
    assert _close(boxes[0], (top_left[0], top_left[1], top_left[2], bottom_left[3])), boxes
    assert _close(boxes[1], right), boxes


def test_lettered_chart_stands_as_its_own_panel(face):
    image, expected = _figure(face, "B")
    found = detect_panels_and_letters(image)
    assert len(found) == 3, found
    # reading order: A; then the tall right chart shares a row with the lower-left one, left first: B, C
    for (box, _, letter), index in zip(found, range(3), strict=True):
        assert _close(box, expected[index]), (box, expected[index])
        assert letter == "ABC"[index]


def test_split_figure_labels_come_from_the_shared_letter_pass(face):
    image, _ = _figure(face, None)
    caption = "Two assays. (A) Counts in two conditions. (B) Their ratio."
    figure = split_figure(image, caption)
    assert figure.compound
    assert [p.label for p in figure.panels] == ["A", "B"]
    assert [p.subcaption for p in figure.panels] == ["Counts in two conditions.", "Their ratio."]


def test_caption_letters_all_read_join_a_lettered_looking_piece(face):
    """The lower-left chart carries a stray "H" at its corner: alone it stands as a panel (a letter the model may
    have missed); when the caption names only A and B and both are read, it is part of A."""
    image = Image.new("RGB", (640, 520), "white")
    draw = ImageDraw.Draw(image)
    top_left, bottom_left, right = (10, 10, 300, 240), (10, 280, 300, 510), (350, 10, 630, 510)
    for box, text in ((top_left, "A"), (bottom_left, "H"), (right, "B")):
        draw.text((box[0], box[1]), text, font=face, fill=0, stroke_width=1, stroke_fill=0)
        _bars(draw, (box[0] + 30, box[1] + 30, box[2], box[3]), seed=box[1] + box[0])
    assert len(detect_panels_and_letters(image)) == 3
    joined = detect_panels_and_letters(image, frozenset("AB"))
    assert len(joined) == 2, joined
    assert _close(joined[0][0], (top_left[0], top_left[1], top_left[2], bottom_left[3])) and joined[0][2] == "A"
    assert _close(joined[1][0], right) and joined[1][2] == "B"
    figure = split_figure(image, "Two assays. (A) Counts. (B) Their ratio.")
    assert [p.label for p in figure.panels] == ["A", "B"]


def test_reader_fills_only_panels_without_a_letter_and_never_repeats_one():
    from biomedclip.panels.pipeline import _shared_labels

    boxes = [(0, 0, 10, 10), (10, 0, 20, 10), (20, 0, 30, 10)]
    calls = []

    def reader(image, asked):
        calls.append(asked)
        return [("a", 0.9), ("A", 0.8), ("C", 0.7)]  # the reader's "A" repeats detection's letter for panel 0

    image = Image.new("L", (30, 10), 255)
    assert _shared_labels(image, boxes, ["A", None, None], reader) == ["A", None, "C"]
    assert calls == [boxes]  # read over all boxes at once, so its figure-level sequence logic still applies
    calls.clear()
    assert _shared_labels(image, boxes, ["A", "B", "C"], reader) == ["A", "B", "C"]
    assert calls == []  # every panel has its letter: the reader does not run


def test_glyph_model_runs_on_one_blas_thread(monkeypatch):
    from threadpoolctl import threadpool_info

    from biomedclip.panels.label_model import load_classifier
    from biomedclip.panels.label_model.net import GlyphClassifier

    seen = []
    forward = GlyphClassifier._forward

    def spy(self, bitmaps):
        seen.extend(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")
        return forward(self, bitmaps)

    monkeypatch.setattr(GlyphClassifier, "_forward", spy)
    probs = load_classifier().probabilities(np.zeros((2, 24, 24), np.float32))
    assert probs.shape[0] == 2 and np.allclose(probs.sum(axis=1), 1.0)
    assert seen and set(seen) == {1}


def test_single_figure_letter_is_read_only_when_asked():
    """A figure with one panel and a printed "(B)": read (and given its part of the caption) by default; with
    ``single_labels=False`` (a build keeping only compound figures' panels) the reader never runs."""
    image = Image.new("RGB", (200, 160), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([30, 30, 180, 140], outline="black", width=2)
    calls = []

    def reader(img, boxes):
        calls.append(boxes)
        return [("B", 0.9)]

    caption = "Two images. (A) The first. (B) The second."
    whole = [((0, 0, 200, 160), 0.9)]
    kept = split_figure(image, caption, detector=lambda _: whole, reader=reader)
    assert (kept.compound, kept.panels[0].label, kept.panels[0].subcaption) == (False, "B", "The second.")
    calls.clear()
    skipped = split_figure(image, caption, detector=lambda _: whole, reader=reader, single_labels=False)
    assert calls == []
    assert (skipped.compound, skipped.panels[0].label, skipped.panels[0].subcaption) == (False, None, caption)


def test_uncited_letters_are_read_only_when_asked():
    """A two-panel figure whose caption names no panel letter: the reader does not run and the panels keep no
    label, unless ``uncited_labels`` asks for them or there is no caption at all; a caption that names letters
    has them read and aligned."""
    image = Image.new("RGB", (200, 100), "white")
    calls = []

    def reader(img, boxes):
        calls.append(boxes)
        return [("A", 0.9), ("B", 0.9)]

    two = [((0, 0, 100, 100), 0.9), ((100, 0, 200, 100), 0.9)]
    plain = "Growth of both strains over ten days."
    skipped = split_figure(image, plain, detector=lambda _: two, reader=reader)
    assert calls == []
    assert [(p.label, p.subcaption) for p in skipped.panels] == [(None, None), (None, None)]
    asked = split_figure(image, plain, detector=lambda _: two, reader=reader, uncited_labels=True)
    assert len(calls) == 1 and [p.label for p in asked.panels] == ["A", "B"]
    assert [p.label for p in split_figure(image, None, detector=lambda _: two, reader=reader).panels] == ["A", "B"]
    assert len(calls) == 2
    cited = split_figure(image, "(A) Growth. (B) Decay.", detector=lambda _: two, reader=reader)
    assert len(calls) == 3
    assert [(p.label, p.subcaption) for p in cited.panels] == [("A", "Growth."), ("B", "Decay.")]
    nested = split_figure(image, "(A1) Growth. (A2) Decay.", detector=lambda _: two,
                          reader=lambda img, boxes: [("A1", 0.9), ("A2", 0.9)])  # fmt: skip
    assert [(p.label, p.subcaption) for p in nested.panels] == [("A1", "Growth."), ("A2", "Decay.")]


def test_corpus_splitter_skips_the_reader_for_uncited_letters(monkeypatch, shared_fixtures):
    """The corpus's splitter runs detection's own letter pass but not the label reader when the caption names no
    letter: a real four-panel figure without printed letters (where ``uncited_labels=True`` does call the reader)
    is still split, its panels unlabelled."""
    from biomedclip.corpus.panel_rows import default_splitter
    from biomedclip.panels import labels

    def refuse(*args, **kwargs):
        raise AssertionError("the label reader ran")

    monkeypatch.setattr(labels, "read_labels", refuse)
    caption = "Digital gene expression analysis of cells grown with and without the inducer."
    with Image.open(shared_fixtures / "compound" / "images" / "elife30274_fig2.jpg") as image:
        figure = image.convert("RGB")
    with pytest.raises(AssertionError, match="the label reader ran"):
        split_figure(figure, caption, uncited_labels=True)
    found = default_splitter(keep_single=False)(figure, caption)
    assert found.compound and len(found.panels) == 4
    assert [p.label for p in found.panels] == [None] * 4
