import pytest
from PIL import Image

from biomedclip.panels.align import Joined, align
from biomedclip.panels.pipeline import split_figure
from biomedclip.panels.subcaptions import Subcaptions, split_caption

CAPTION = "Effects of drug X. (A) Western blot of lysates. (B) Quantification of band intensity. (C) Survival curves."
TWO_BY_TWO = [(0, 0, 50, 50), (50, 0, 100, 50), (0, 50, 50, 100), (50, 50, 100, 100)]


def test_read_letters_join_by_label_case_insensitively_in_any_order():
    joined = align([(0, 0, 10, 10), (10, 0, 20, 10), (20, 0, 30, 10)], ["c", "a", "B"], split_caption(CAPTION))
    assert joined == [
        Joined("Survival curves.", "label"),
        Joined("Western blot of lysates.", "label"),
        Joined("Quantification of band intensity.", "label"),
    ]


def test_unreadable_letters_join_in_reading_order_when_counts_agree():
    joined = align(TWO_BY_TWO[:3], [None, None, None], split_caption(CAPTION))
    assert [j.alignment for j in joined] == ["order", "order", "order"]
    assert joined[2].subcaption == "Survival curves."


def test_one_unreadable_letter_is_filled_between_its_read_neighbours():
    joined = align(TWO_BY_TWO[:3], ["A", None, "C"], split_caption(CAPTION))
    assert joined[1] == Joined("Quantification of band intensity.", "order")


def test_fill_that_would_break_letter_order_is_refused():
    # B read on the first panel leaves A and C for panels 2 and 3: B, A, C would run backwards, so no fill.
    joined = align(TWO_BY_TWO[:3], ["B", None, None], split_caption(CAPTION))
    assert joined[0] == Joined("Quantification of band intensity.", "label")
    assert [j.alignment for j in joined[1:]] == ["none", "none"]
    assert all(j.subcaption is None for j in joined[1:])


def test_count_mismatch_keeps_shared_caption_only_and_drops_no_panel():
    joined = align(TWO_BY_TWO, [None] * 4, split_caption(CAPTION))
    assert joined == [Joined(None, "none")] * 4


def test_a_letter_the_caption_does_not_name_counts_as_unreadable():
    joined = align(TWO_BY_TWO[:3], ["A", "X", None], split_caption(CAPTION))
    assert [j.alignment for j in joined] == ["label", "order", "order"]
    assert joined[1].subcaption == "Quantification of band intensity."
    two_labels = split_caption("Title. (A) Western blot. (B) Quantification.")
    assert [j.alignment for j in align(TWO_BY_TWO[:3], ["A", "X", None], two_labels)] == ["label", "none", "none"]


def test_left_right_words_join_by_box_position():
    sub = split_caption("Expression of active (left) and silent (right) genes after release.")
    joined = align([(0, 0, 40, 40), (60, 0, 100, 40), (0, 50, 40, 90), (60, 50, 100, 90)], [None] * 4, sub)
    assert [j.alignment for j in joined] == ["position"] * 4
    assert "active" in joined[0].subcaption and "silent" not in joined[0].subcaption
    assert "silent" in joined[3].subcaption and "active" not in joined[3].subcaption


def test_boxes_and_labels_must_pair():
    with pytest.raises(ValueError):
        align(TWO_BY_TWO, [None], Subcaptions(None, {}))


def _fixed(boxes_scores, letters):
    return (lambda image: boxes_scores), (lambda image, boxes: [(letter, 0.9) for letter in letters])


def test_split_figure_joins_injected_detector_and_reader():
    detector, reader = _fixed([((0, 0, 50, 100), 0.8), ((50, 0, 100, 100), 0.7)], ["a", "b"])
    figure = split_figure(Image.new("RGB", (100, 100), "white"), CAPTION, detector=detector, reader=reader)
    assert figure.compound is True
    assert figure.shared_caption == "Effects of drug X."
    assert [(p.box, p.label, p.subcaption, p.score, p.alignment) for p in figure.panels] == [
        ((0, 0, 50, 100), "a", "Western blot of lysates.", 0.8, "label"),
        ((50, 0, 100, 100), "b", "Quantification of band intensity.", 0.7, "label"),
    ]


def test_split_figure_single_panel_gets_whole_caption():
    detector, reader = _fixed([((0, 0, 100, 80), 0.9)], [None])
    figure = split_figure(Image.new("RGB", (100, 80)), "A chest CT scan.", detector=detector, reader=reader)
    assert figure.as_dict() == {
        "compound": False,
        "shared_caption": None,
        "panels": [
            {
                "box": [0, 0, 100, 80],
                "label": None,
                "subcaption": "A chest CT scan.",
                "score": 0.9,
                "alignment": "whole",
            }
        ],
    }


def test_split_figure_single_file_of_a_multi_file_figure_takes_its_own_part():
    detector, reader = _fixed([((0, 0, 100, 80), 0.9)], ["C"])
    figure = split_figure(Image.new("RGB", (100, 80)), CAPTION, detector=detector, reader=reader)
    assert (figure.compound, figure.shared_caption) == (False, "Effects of drug X.")
    assert figure.panels[0].subcaption == "Survival curves."


def test_split_figure_without_caption_or_boxes():
    detector, reader = _fixed([], [None])
    figure = split_figure(Image.new("RGB", (30, 20)), None, detector=detector, reader=reader)
    assert figure.compound is False and figure.shared_caption is None
    assert figure.panels[0].box == (0, 0, 30, 20) and figure.panels[0].subcaption is None


def test_two_word_positions_need_both_sides():
    sub = Subcaptions(None, {}, {"upper left": "Axial CT.", "lower right": "Coronal CT.", "middle": "Ignored."})
    joined = align(TWO_BY_TWO, [None] * 4, sub)
    assert [j.subcaption for j in joined] == ["Axial CT.", None, None, "Coronal CT."]
    assert [j.alignment for j in joined] == ["position", "none", "none", "position"]


def test_positions_inside_a_lettered_caption_do_not_join_panels():
    sub = split_caption("(A) Blots with anti-Myc (top) and anti-actin (bottom). (B) Quantification. (C) Survival.")
    joined = align(TWO_BY_TWO, [None, "B", "C", None], sub)
    assert [j.alignment for j in joined] == ["none", "label", "label", "none"]
