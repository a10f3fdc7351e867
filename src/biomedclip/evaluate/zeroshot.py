"""Zero-shot evaluation on image embeddings; the prompt-ensembled classifiers are built by
:mod:`biomedclip.model.inference` (re-exported here)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from biomedclip.model.inference import build_zeroshot_classifier, zeroshot_logits, zeroshot_probabilities

__all__ = ["build_zeroshot_classifier", "evaluate_zeroshot", "zeroshot_logits", "zeroshot_probabilities"]


def evaluate_zeroshot(
    image_embeddings: np.ndarray, labels: np.ndarray, classifier: np.ndarray, classnames: Sequence[str]
) -> dict:
    """Classification metrics of the arg-max class (AUROC on the cosine margin for binary tasks)."""
    from biomedclip.evaluate.metrics import classification_metrics  # scikit-learn: an eval-only dependency

    if classifier.shape[0] != len(classnames):
        raise ValueError(f"classifier has {classifier.shape[0]} rows for {len(classnames)} class names")
    metrics = classification_metrics(labels, zeroshot_logits(image_embeddings, classifier, 1.0))
    metrics["classnames"] = list(classnames)
    return metrics
