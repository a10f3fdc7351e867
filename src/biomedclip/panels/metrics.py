"""The ``panels eval`` metrics: predicted panels of figures scored against hand-checked ground truth.

Both sides are ``FigurePanels`` keyed by figure id (boxes ``(x0, y0, x1, y1)``, x1/y1 exclusive). A figure of the
truth that has no prediction has no panels and a wrong compound flag; predictions for figures not in the truth
are ignored (and counted). The metrics, each with the number ``n`` it averages over:

- ``compound_accuracy``: the predicted ``compound`` flag equals the truth's, over all truth figures (a figure
  without a prediction counts as wrong).
- ``ap50``: COCO-style average precision at IoU 0.5 over every true panel of every figure. Predictions of all
  figures are ranked by score (ties keep file order: figure order, then panel order); within a figure each
  prediction in that order takes the unmatched true panel it overlaps most, if the IoU is at least 0.5. Precision
  is made non-increasing and read at the 101 recall points 0, 0.01, …, 1 (COCO's interpolation). ``n`` = true
  panels; no prediction at all scores 0.
- ``imageclef_accuracy``: per compound truth figure, panels matched one-to-one at IoU >= 0.5 divided by
  max(#predicted, #true), averaged over compound truth figures. The matching is a maximum one: as many pairs as
  possible, then the largest total IoU (an exact assignment, not a greedy pass).
- ``label_accuracy``: over true panels with a label, the share whose matched predicted panel (same matching)
  has the same label, compared without case, surrounding brackets or full stops ("(A)" = "a"); an unmatched
  true panel counts as wrong.
- ``alignment_f1``: MedICaT-style; per true panel with text, the token F1 between the true shared caption plus
  own subcaption and the matched predicted panel's shared caption plus own subcaption; unmatched = 0; the mean.
  Tokens are lower-cased runs of letters and digits (``\\w+``), counted as a multiset.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from biomedclip.panels.types import Box, FigurePanels

IOU_THRESHOLD = 0.5
RECALL_POINTS = [i / 100 for i in range(101)]


@dataclass(frozen=True)
class Metric:
    """A metric's value (None when there is nothing to average over) and how many items it averages."""

    value: float | None
    n: int


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes with exclusive x1/y1 (a box's area is (x1 - x0) * (y1 - y0))."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0, width) * max(0, height)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def tokens(text: str | None) -> list[str]:
    """Lower-cased word tokens of a text (None is empty)."""
    return re.findall(r"\w+", (text or "").lower())


def token_f1(truth: str | None, predicted: str | None) -> float:
    """Token F1 of a predicted text against the true one; two empty texts agree (1.0), one empty scores 0."""
    true_tokens, predicted_tokens = tokens(truth), tokens(predicted)
    if not true_tokens and not predicted_tokens:
        return 1.0
    common = sum((Counter(true_tokens) & Counter(predicted_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted_tokens), common / len(true_tokens)
    return 2 * precision * recall / (precision + recall)


def match_panels(true_boxes: list[Box], predicted_boxes: list[Box]) -> dict[int, int]:
    """A maximum one-to-one matching at IoU >= 0.5 (most pairs, then largest total IoU): true -> predicted index."""
    if not true_boxes or not predicted_boxes:
        return {}
    ious = [[box_iou(t, p) for p in predicted_boxes] for t in true_boxes]
    big = len(true_boxes) + len(predicted_boxes) + 1
    weight = [[big + iou if iou >= IOU_THRESHOLD else 0.0 for iou in row] for row in ious]
    pairs = _max_weight_assignment(weight)
    return {t: p for t, p in pairs if ious[t][p] >= IOU_THRESHOLD}


def _max_weight_assignment(weight: list[list[float]]) -> list[tuple[int, int]]:
    """Rows paired with columns to maximise the total weight (Hungarian method, rows <= columns by transposing)."""
    transposed = len(weight) > len(weight[0])
    if transposed:
        weight = [list(column) for column in zip(*weight, strict=True)]
    rows, cols = len(weight), len(weight[0])
    cost = [[-w for w in row] for row in weight]
    u, v = [0.0] * (rows + 1), [0.0] * (cols + 1)
    owner, way = [0] * (cols + 1), [0] * (cols + 1)
    for row in range(1, rows + 1):
        owner[0], column = row, 0
        slack, used = [float("inf")] * (cols + 1), [False] * (cols + 1)
        while True:
            used[column] = True
            current_row, delta, next_column = owner[column], float("inf"), 0
            for j in range(1, cols + 1):
                if not used[j]:
                    reduced = cost[current_row - 1][j - 1] - u[current_row] - v[j]
                    if reduced < slack[j]:
                        slack[j], way[j] = reduced, column
                    if slack[j] < delta:
                        delta, next_column = slack[j], j
            for j in range(cols + 1):
                if used[j]:
                    u[owner[j]] += delta
                    v[j] -= delta
                else:
                    slack[j] -= delta
            column = next_column
            if owner[column] == 0:
                break
        while column:
            previous = way[column]
            owner[column] = owner[previous]
            column = previous
    pairs = [(owner[j] - 1, j - 1) for j in range(1, cols + 1) if owner[j]]
    return [(c, r) for r, c in pairs] if transposed else pairs


def average_precision_50(truth: dict[str, FigurePanels], predictions: dict[str, FigurePanels]) -> Metric:
    """COCO-style AP at IoU 0.5 with 101-point interpolation (see the module docstring)."""
    total = sum(len(figure.panels) for figure in truth.values())
    ranked = [
        (-panel.score, order, figure_id, panel.box)
        for order, (figure_id, panel) in enumerate(
            (figure_id, panel)
            for figure_id, figure in predictions.items()
            if figure_id in truth
            for panel in figure.panels
        )
    ]
    ranked.sort(key=lambda item: (item[0], item[1]))
    taken: dict[str, set[int]] = {figure_id: set() for figure_id in truth}
    hits = []
    for _, _, figure_id, box in ranked:
        true_boxes = [panel.box for panel in truth[figure_id].panels]
        best, best_iou = None, IOU_THRESHOLD
        for index, true_box in enumerate(true_boxes):
            iou = box_iou(box, true_box)
            if index not in taken[figure_id] and iou >= best_iou:
                best, best_iou = index, iou
        if best is not None:
            taken[figure_id].add(best)
        hits.append(best is not None)
    if total == 0:
        return Metric(None, 0)
    precision, recall, true_positives = [], [], 0
    for rank, hit in enumerate(hits, start=1):
        true_positives += hit
        precision.append(true_positives / rank)
        recall.append(true_positives / total)
    for index in range(len(precision) - 2, -1, -1):
        precision[index] = max(precision[index], precision[index + 1])
    sampled = []
    for point in RECALL_POINTS:
        reached = next((i for i, r in enumerate(recall) if r >= point), None)
        sampled.append(precision[reached] if reached is not None else 0.0)
    return Metric(sum(sampled) / len(sampled), total)


def _normal_label(label: str | None) -> str | None:
    if label is None:
        return None
    cleaned = label.strip().strip("()[].").strip().lower()
    return cleaned or None


def _text(shared: str | None, own: str | None) -> str:
    return " ".join(part for part in (shared, own) if part)


def evaluate(truth: dict[str, FigurePanels], predictions: dict[str, FigurePanels]) -> dict[str, Metric]:
    """Every ``panels eval`` metric, plus ``missing_predictions`` and ``unknown_predictions`` as counts."""
    empty = FigurePanels(False, None, [])
    compound_right, imageclef, label_hits, alignment = [], [], [], []
    for figure_id, true in truth.items():
        predicted = predictions.get(figure_id, empty)
        compound_right.append(figure_id in predictions and predicted.compound == true.compound)
        matched = match_panels([p.box for p in true.panels], [p.box for p in predicted.panels])
        if true.compound:
            imageclef.append(len(matched) / max(len(predicted.panels), len(true.panels), 1))
        for index, panel in enumerate(true.panels):
            other = predicted.panels[matched[index]] if index in matched else None
            if _normal_label(panel.label) is not None:
                label_hits.append(other is not None and _normal_label(other.label) == _normal_label(panel.label))
            true_text = _text(true.shared_caption, panel.subcaption)
            if tokens(true_text):
                alignment.append(
                    token_f1(true_text, _text(predicted.shared_caption, other.subcaption)) if other else 0.0
                )
    return {
        "compound_accuracy": _mean(compound_right),
        "ap50": average_precision_50(truth, predictions),
        "imageclef_accuracy": _mean(imageclef),
        "label_accuracy": _mean(label_hits),
        "alignment_f1": _mean(alignment),
        "missing_predictions": Metric(None, sum(figure_id not in predictions for figure_id in truth)),
        "unknown_predictions": Metric(None, sum(figure_id not in truth for figure_id in predictions)),
    }


def _mean(values: list[float] | list[bool]) -> Metric:
    return Metric(sum(values) / len(values) if values else None, len(values))


def _caption_key(panel: dict[str, Any]) -> str | None:
    """The label the caption uses for a ground-truth panel: ``caption_label`` where given, else ``label``."""
    key = panel.get("caption_label", panel.get("label"))
    return _normal_label(key) if isinstance(key, str) else None


def subcaption_metrics(truth_rows: list[dict[str, Any]], predicted: dict[str, dict[str, str]]) -> dict[str, Metric]:
    """Scores of ``panels subcaptions`` output against ground-truth rows, over compound figures.

    ``subcaption_f1``: per true panel with a caption label and a subcaption, the token F1 between its subcaption
    and the predicted text of that label (labels compared as in ``label_accuracy``; a missing label or figure
    scores 0); the mean. ``label_set_accuracy``: per figure with such panels, whether the predicted labels with
    text are exactly the true caption labels.
    """
    scores: list[float] = []
    exact: list[bool] = []
    for row in truth_rows:
        described = [p for p in row.get("panels") or [] if _caption_key(p) and p.get("subcaption")]
        if not row.get("compound") or not described:
            continue
        found = {_normal_label(k): v for k, v in (predicted.get(str(row["id"])) or {}).items() if v}
        scores += [token_f1(p["subcaption"], found.get(_caption_key(p))) for p in described]
        exact.append(set(found) == {_caption_key(p) for p in described})
    return {"subcaption_f1": _mean(scores), "label_set_accuracy": _mean(exact)}
