"""panels eval metrics against hand-computed cases and a brute-force matching."""

import itertools
import random

import pytest

from biomedclip.panels.metrics import average_precision_50, box_iou, evaluate, match_panels, token_f1
from biomedclip.panels.types import FigurePanels, Panel


def test_box_iou_with_exclusive_ends():
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching boxes share no pixel
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 20)) == 0.5
    assert box_iou((0, 0, 0, 10), (0, 0, 0, 10)) == 0.0


def test_token_f1_counts_tokens_as_a_multiset():
    assert token_f1("The red cat", "red dog") == pytest.approx(0.4)  # p 1/2, r 1/3
    assert token_f1("a a b", "a b b") == pytest.approx(2 / 3)
    assert token_f1("Red, CAT!", "red cat") == 1.0
    assert token_f1(None, "") == 1.0
    assert token_f1("text", None) == 0.0 and token_f1(None, "text") == 0.0


def test_matching_prefers_more_pairs_over_the_single_best_overlap():
    true = [(0, 0, 10, 10), (0, 0, 10, 12)]
    predicted = [(0, 0, 10, 11), (0, 4, 10, 14)]  # p0 overlaps t1 best (0.917); only p1 can take t1 (0.571)
    assert match_panels(true, predicted) == {0: 0, 1: 1}


def test_matching_accepts_iou_exactly_half_and_refuses_less():
    assert match_panels([(0, 0, 10, 10)], [(0, 0, 10, 20)]) == {0: 0}
    assert match_panels([(0, 0, 10, 10)], [(0, 0, 10, 21)]) == {}
    assert match_panels([], [(0, 0, 1, 1)]) == {} and match_panels([(0, 0, 1, 1)], []) == {}


def _brute_force(true, predicted):
    best = (0, 0.0)
    k = min(len(true), len(predicted))
    for columns in itertools.permutations(range(len(predicted)), k):
        ious = [box_iou(true[t], predicted[p]) for t, p in zip(range(k), columns, strict=True)]
        valid = [iou for iou in ious if iou >= 0.5]
        best = max(best, (len(valid), sum(valid)))
    if len(true) > len(predicted):
        for rows in itertools.permutations(range(len(true)), k):
            ious = [box_iou(true[t], predicted[p]) for t, p in zip(rows, range(k), strict=True)]
            valid = [iou for iou in ious if iou >= 0.5]
            best = max(best, (len(valid), sum(valid)))
    return best


def test_matching_equals_brute_force_on_random_boxes():
    rng = random.Random(7)

    def box():
        x, y = rng.randrange(0, 30), rng.randrange(0, 30)
        return (x, y, x + rng.randrange(5, 20), y + rng.randrange(5, 20))

    for _ in range(200):
        true = [box() for _ in range(rng.randrange(1, 5))]
        predicted = [box() for _ in range(rng.randrange(1, 5))]
        matched = match_panels(true, predicted)
        assert len(set(matched.values())) == len(matched)
        count, total = _brute_force(true, predicted)
        assert len(matched) == count
        assert sum(box_iou(true[t], predicted[p]) for t, p in matched.items()) == pytest.approx(total)


def _figure(boxes, scores=None, compound=True):
    scores = scores or [1.0] * len(boxes)
    return FigurePanels(compound, None, [Panel(b, score=s) for b, s in zip(boxes, scores, strict=True)])


def test_ap50_hand_computed_101_point():
    truth = {"f1": _figure([(0, 0, 10, 10), (20, 0, 30, 10)]), "f2": _figure([(0, 0, 10, 10)], compound=False)}
    predictions = {
        "f1": _figure([(0, 0, 10, 10), (50, 50, 60, 60)], [0.9, 0.8]),
        "f2": _figure([(0, 0, 10, 10)], [0.7], compound=False),
    }
    # ranks: TP (p 1, r 1/3), FP (p 1/2), TP (p 2/3, r 2/3): recall points 0..0.33 at 1, 0.34..0.66 at 2/3
    ap = average_precision_50(truth, predictions)
    assert ap.n == 3 and ap.value == pytest.approx((34 + 33 * 2 / 3) / 101)


def test_ap50_ties_keep_file_order():
    truth = {"f": _figure([(0, 0, 10, 10)])}
    false_first = {"f": _figure([(40, 40, 50, 50), (0, 0, 10, 10)], [0.5, 0.5])}
    true_first = {"f": _figure([(0, 0, 10, 10), (40, 40, 50, 50)], [0.5, 0.5])}
    assert average_precision_50(truth, false_first).value == pytest.approx(0.5)
    assert average_precision_50(truth, true_first).value == pytest.approx(1.0)


def test_ap50_duplicates_empty_and_missing():
    truth = {"f": _figure([(0, 0, 10, 10)]), "g": _figure([(0, 0, 10, 10)])}
    duplicate = {"f": _figure([(0, 0, 10, 10), (0, 0, 10, 10)], [0.9, 0.8])}  # g missing, second box is a FP
    # TP (p 1, r 1/2), FP: points 0..0.5 at precision 1
    assert average_precision_50(truth, duplicate).value == pytest.approx(51 / 101)
    assert average_precision_50(truth, {}).value == 0.0
    assert average_precision_50({}, duplicate).value is None


def test_evaluate_hand_computed():
    truth = {
        "f1": FigurePanels(
            True, "Shared words", [Panel((0, 0, 10, 10), "A", "red cat"), Panel((20, 0, 30, 10), "B", "blue dog")]
        ),
        "f2": FigurePanels(False, None, [Panel((0, 0, 10, 10), None, "whole caption here")]),
        "f3": FigurePanels(True, None, [Panel((0, 0, 10, 10), "a", "x"), Panel((20, 0, 30, 10), "b", "y")]),
    }
    predictions = {
        "f1": FigurePanels(
            True,
            "Shared words",
            [
                Panel((0, 0, 10, 10), "(a)", "red cat", 0.9),
                Panel((20, 0, 30, 10), "C", "blue", 0.8),
                Panel((50, 50, 60, 60), None, None, 0.1),
            ],
        ),
        "f2": FigurePanels(True, None, [Panel((0, 0, 10, 10), None, "whole caption", 0.95)]),
        "f9": FigurePanels(False, None, []),
    }
    result = evaluate(truth, predictions)
    assert (result["compound_accuracy"].value, result["compound_accuracy"].n) == (pytest.approx(1 / 3), 3)
    assert (result["imageclef_accuracy"].value, result["imageclef_accuracy"].n) == (pytest.approx(1 / 3), 2)
    assert (result["label_accuracy"].value, result["label_accuracy"].n) == (pytest.approx(1 / 4), 4)
    assert result["alignment_f1"].n == 5
    assert result["alignment_f1"].value == pytest.approx((1 + 6 / 7 + 0.8 + 0 + 0) / 5)
    assert (result["ap50"].value, result["ap50"].n) == (pytest.approx(61 / 101), 5)
    assert result["missing_predictions"].n == 1 and result["unknown_predictions"].n == 1


def test_evaluate_with_no_predictions_at_all():
    truth = {"f": FigurePanels(True, "s", [Panel((0, 0, 10, 10), "A", "t"), Panel((10, 0, 20, 10), "B", "u")])}
    result = evaluate(truth, {})
    assert result["compound_accuracy"].value == 0.0
    assert result["imageclef_accuracy"].value == 0.0
    assert result["label_accuracy"].value == 0.0
    assert result["alignment_f1"].value == 0.0
    assert result["ap50"].value == 0.0


def test_perfect_predictions_score_one(shared_fixtures):
    import json

    rows = [json.loads(line) for line in (shared_fixtures / "compound" / "gt.jsonl").read_text().splitlines()]
    truth = {row["id"]: FigurePanels.from_dict(row) for row in rows}
    result = evaluate(truth, truth)
    for name in ("compound_accuracy", "ap50", "imageclef_accuracy", "label_accuracy", "alignment_f1"):
        assert result[name].value == pytest.approx(1.0), name
    assert result["imageclef_accuracy"].n == 30 and result["compound_accuracy"].n == 35


def test_subcaption_metrics_hand_computed():
    from biomedclip.panels.metrics import subcaption_metrics

    truth = [
        {"id": "f1", "compound": True, "panels": [
            {"label": "A", "caption_label": "A", "subcaption": "red cat"},
            {"label": "B", "caption_label": "C", "subcaption": "blue dog"},  # printed B, caption calls it C
            {"label": "D", "caption_label": None, "subcaption": None},
        ]},
        {"id": "f2", "compound": True, "panels": [
            {"label": "a", "subcaption": "x y"},
            {"label": "b", "subcaption": "z"},
        ]},
        {"id": "f3", "compound": False, "panels": [{"label": None, "subcaption": "whole"}]},
    ]  # fmt: skip
    predicted = {"f1": {"a": "red cat", "C": "blue", "E": ""}, "f2": {"A": "x", "B": "z", "C": "w"}}
    result = subcaption_metrics(truth, predicted)
    # f1: A 1.0, C F1("blue dog", "blue") = 2/3; f2: a F1("x y", "x") = 2/3, b 1.0
    assert result["subcaption_f1"].n == 4
    assert result["subcaption_f1"].value == pytest.approx((1 + 2 / 3 + 2 / 3 + 1) / 4)
    # f1's labels {a, c} are found exactly (E has no text); f2 has an extra C
    assert (result["label_set_accuracy"].value, result["label_set_accuracy"].n) == (0.5, 2)
    assert subcaption_metrics(truth, {})["subcaption_f1"].value == 0.0
