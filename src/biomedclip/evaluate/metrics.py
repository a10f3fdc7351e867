"""Classification metrics shared by zero-shot, linear probe and VQA (thin, documented wrappers over scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, roc_auc_score


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> dict:
    """Accuracy, balanced accuracy, macro-F1, AUROC (binary tasks) and the confusion matrix.

    Args:
        labels: (N,) integer class indices in ``[0, C)``.
        scores: (N, C) class scores (logits or probabilities); the prediction is the arg-max.

    Returns:
        A JSON-ready dict. ``auroc`` uses the positive class (index 1) score minus the negative one, so logits
        and probabilities give the same value; it is ``None`` for multi-class tasks or a one-class label set.
    """
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != labels.shape[0]:
        raise ValueError(f"scores must be (N, C) with N={labels.shape[0]}, got {scores.shape}")
    num_classes = scores.shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    predictions = scores.argmax(axis=1)
    class_ids = np.arange(num_classes)
    auroc = None
    if num_classes == 2 and len(np.unique(labels)) == 2:
        auroc = float(roc_auc_score(labels, scores[:, 1] - scores[:, 0]))
    return {
        "n": int(labels.size),
        "accuracy": float(np.mean(predictions == labels)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, labels=class_ids, average="macro", zero_division=0)),
        "auroc": auroc,
        "confusion_matrix": confusion_matrix(labels, predictions, labels=class_ids).tolist(),
    }


# A run is "at chance" when its balanced accuracy is within this margin of 1/C, what a classifier that ignores
# the image (one class for everything, or a random guess) gets in expectation.
CHANCE_MARGIN = 0.02


def at_chance(balanced_accuracy: float, num_classes: int) -> bool:
    """True when ``balanced_accuracy`` is at most ``1/num_classes + CHANCE_MARGIN``."""
    return balanced_accuracy <= 1 / num_classes + CHANCE_MARGIN + 1e-12


def one_class_warning(confusion: list[list[int]], classnames: list[str] | tuple[str, ...]) -> str | None:
    """A warning when every image was predicted as the same class (a collapsed model), else ``None``."""
    predicted = np.asarray(confusion).sum(axis=0)
    total = int(predicted.sum())
    if len(classnames) < 2 or total < 2 or int(predicted.max()) != total:
        return None
    name = classnames[int(predicted.argmax())]
    return f"every one of the {total} images was predicted as {name!r}: the model has collapsed or ignores the image"
