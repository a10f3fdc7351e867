"""Zero-shot classification: prompt-ensembled text classifiers and their evaluation on image embeddings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from biomedclip.evaluate.embeddings import embed_texts
from biomedclip.evaluate.prompts import PromptSet


def build_zeroshot_classifier(
    model: Any,
    tokenizer: Callable[[list[str]], torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str],
    *,
    batch_size: int = 256,
    device: str | None = None,
) -> np.ndarray:
    """One unit vector per class: the renormalised mean of the normalised embeddings of every filled template.

    Returns:
        (C, D) float32, row ``c`` for ``classnames[c]``.
    """
    prompt_set = PromptSet(tuple(classnames), tuple(templates))  # validates the templates
    prompts = [prompt for classname in prompt_set.classnames for prompt in prompt_set.prompts(classname)]
    embeddings = embed_texts(model, tokenizer, prompts, batch_size=batch_size, device=device)
    per_class = embeddings.reshape(len(classnames), len(templates), -1).mean(axis=1)
    return (per_class / np.linalg.norm(per_class, axis=1, keepdims=True)).astype(np.float32)


def zeroshot_logits(image_embeddings: np.ndarray, classifier: np.ndarray, logit_scale: float = 100.0) -> np.ndarray:
    """(N, C) scaled cosine similarities between normalised images and class vectors."""
    return logit_scale * np.asarray(image_embeddings, dtype=np.float32) @ np.asarray(classifier, dtype=np.float32).T


def zeroshot_probabilities(
    image_embeddings: np.ndarray, classifier: np.ndarray, logit_scale: float = 100.0
) -> np.ndarray:
    """(N, C) softmax over classes of :func:`zeroshot_logits`."""
    logits = zeroshot_logits(image_embeddings, classifier, logit_scale)
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


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
