"""Boundary cases of the classification metrics that mutation testing showed untested (docs/MUTATION.md).

Expected values are worked out by hand from the definitions, not from the code under test.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from biomedclip.evaluate.metrics import classification_metrics


def test_a_class_absent_from_labels_and_predictions_still_counts() -> None:
    """Three classes, class 2 never occurs: the confusion matrix is 3 x 3 and its F1 (0/0) counts as 0, silently."""
    labels = np.array([0, 0, 1, 1])
    scores = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # predicts 0, 1, 1, 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an undefined F1 is a documented 0, not a warning per evaluation
        got = classification_metrics(labels, scores)
    assert got["n"] == 4
    assert got["confusion_matrix"] == [[1, 1, 0], [1, 1, 0], [0, 0, 0]]
    assert got["accuracy"] == 0.5
    assert got["macro_f1"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)  # F1 of classes 0 and 1 is 2*1/(2*1+1+1)
    assert got["auroc"] is None  # three classes


@pytest.mark.filterwarnings("ignore:A single label was found")  # scikit-learn's balanced accuracy, one class seen
def test_auroc_only_for_two_classes_with_both_present() -> None:
    three_classes_two_seen = classification_metrics(np.array([0, 1, 0, 1]), np.eye(3)[[0, 1, 1, 1]])
    assert three_classes_two_seen["auroc"] is None
    one_label_seen = classification_metrics(np.array([1, 1, 1]), np.array([[0.0, 1.0], [0.2, 0.9], [0.0, 1.0]]))
    assert one_label_seen["auroc"] is None and one_label_seen["accuracy"] == 1.0


def test_unsigned_integer_scores_have_a_signed_margin() -> None:
    """Vote counts as uint8: the class-1-minus-class-0 margin must not wrap around (0 - 1 is -1, not 255)."""
    labels = np.array([0, 1, 0, 1])
    votes = np.array([[3, 1], [0, 2], [1, 0], [1, 4]], dtype=np.uint8)  # every margin sorts the labels right
    got = classification_metrics(labels, votes)
    assert got["auroc"] == 1.0 and got["accuracy"] == 1.0
