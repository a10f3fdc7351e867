"""Classification metrics against independent numpy computations."""

from __future__ import annotations

import numpy as np
import pytest

from biomedclip.evaluate.metrics import classification_metrics


def _numpy_metrics(labels: np.ndarray, scores: np.ndarray) -> dict:
    predictions = scores.argmax(1)
    classes = range(scores.shape[1])
    recalls, f1s = [], []
    for c in classes:
        tp = np.sum((predictions == c) & (labels == c))
        fp = np.sum((predictions == c) & (labels != c))
        fn = np.sum((predictions != c) & (labels == c))
        if (labels == c).any():
            recalls.append(tp / (tp + fn))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": np.mean(predictions == labels), "balanced_accuracy": np.mean(recalls), "macro_f1": np.mean(f1s)}


def _mann_whitney_auc(labels: np.ndarray, margin: np.ndarray) -> float:
    pos, neg = margin[labels == 1], margin[labels == 0]
    diff = pos[:, None] - neg[None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


@pytest.mark.parametrize("num_classes", [2, 3, 5])
def test_metrics_match_numpy(num_classes: int) -> None:
    rng = np.random.default_rng(num_classes)
    labels = rng.integers(0, num_classes, 400)
    scores = rng.normal(size=(400, num_classes))
    scores[np.arange(400), labels] += 0.8  # better than chance, not perfect
    got = classification_metrics(labels, scores)
    want = _numpy_metrics(labels, scores)
    for name, value in want.items():
        assert got[name] == pytest.approx(value)
    matrix = np.array(got["confusion_matrix"])
    assert matrix.sum() == 400 and np.trace(matrix) == np.sum(scores.argmax(1) == labels)
    if num_classes == 2:
        assert got["auroc"] == pytest.approx(_mann_whitney_auc(labels, scores[:, 1] - scores[:, 0]))
    else:
        assert got["auroc"] is None


def test_perfect_and_inverted_predictions() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    perfect = np.eye(2)[labels]
    assert classification_metrics(labels, perfect)["accuracy"] == 1.0
    assert classification_metrics(labels, perfect)["auroc"] == 1.0
    inverted = classification_metrics(labels, 1 - perfect)
    assert inverted["accuracy"] == 0.0 and inverted["auroc"] == 0.0 and inverted["macro_f1"] == 0.0


def test_bad_shapes_and_labels_raise() -> None:
    with pytest.raises(ValueError, match="scores must be"):
        classification_metrics(np.array([0, 1]), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="labels must lie"):
        classification_metrics(np.array([0, 2]), np.zeros((2, 2)))
