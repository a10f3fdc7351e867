"""Linear probe on frozen features: logistic regression, C chosen on a validation split, 1%/10%/100% labels.

Protocol (as the paper): for each label fraction and seed, draw a stratified subset of the training labels
(at least one example per class), pick the inverse regularisation strength ``C`` with the best validation
accuracy, refit on the subset with that ``C`` and score the evaluation split. Results are mean and std over seeds.
When no validation split exists, a stratified 20% of the training split (seed 0) is held out once for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from biomedclip.evaluate.metrics import classification_metrics

SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")


@dataclass(frozen=True)
class LinearProbeConfig:
    """Label fractions, seeds and the ``C`` grid of the sweep (defaults follow the paper's protocol)."""

    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    c_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
    max_iter: int = 1000
    val_fraction: float = 0.2


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of ``ceil(fraction * n_c)`` (at least 1) random examples of every class ``c``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        chosen.append(rng.choice(members, size=max(1, int(np.ceil(fraction * members.size))), replace=False))
    return np.sort(np.concatenate(chosen))


def _fit(x: np.ndarray, y: np.ndarray, c: float, max_iter: int) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=max_iter).fit(x, y)


def _scores(model: LogisticRegression, x: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, num_classes) probabilities; classes absent from the fit keep probability 0."""
    probabilities = np.zeros((x.shape[0], num_classes))
    probabilities[:, model.classes_] = model.predict_proba(x)
    return probabilities


def probe_once(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    config: LinearProbeConfig,
) -> dict:
    """Sweep ``C`` on ``val``, refit on ``train`` with the best one, and return the metrics on ``test``."""
    (x, y), (vx, vy), (tx, ty) = train, val, test
    if np.unique(y).size < 2:
        raise ValueError("the training subset holds a single class: a linear probe needs at least two")
    val_accuracy = {c: float(np.mean(_fit(x, y, c, config.max_iter).predict(vx) == vy)) for c in config.c_grid}
    best_c = max(config.c_grid, key=lambda c: (val_accuracy[c], -c))
    metrics = classification_metrics(ty, _scores(_fit(x, y, best_c, config.max_iter), tx, num_classes))
    return metrics | {"C": best_c, "val_accuracy": val_accuracy[best_c], "n_train": int(y.size)}


def linear_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    *,
    val_features: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    config: LinearProbeConfig | None = None,
) -> dict:
    """Run the probe for every (fraction, seed) and summarise as ``{fraction: {metric: {mean, std}}, runs}``."""
    config = config or LinearProbeConfig()
    train_labels = np.asarray(train_labels)
    if val_features is None or val_labels is None:
        train_idx, val_idx = train_test_split(
            np.arange(train_labels.size), test_size=config.val_fraction, random_state=0, stratify=train_labels
        )
        val_features, val_labels = train_features[val_idx], train_labels[val_idx]
        train_features, train_labels = train_features[train_idx], train_labels[train_idx]
    val = (val_features, np.asarray(val_labels))
    test = (test_features, np.asarray(test_labels))
    runs, summary = [], {}
    for fraction in config.fractions:
        per_seed = []
        for seed in config.seeds:
            subset = stratified_subset(train_labels, fraction, seed)
            result = probe_once((train_features[subset], train_labels[subset]), val, test, num_classes, config)
            per_seed.append(result)
            runs.append({"fraction": fraction, "seed": seed, **result})
        summary[str(fraction)] = {
            name: {
                "mean": float(np.mean([r[name] for r in per_seed])),
                "std": float(np.std([r[name] for r in per_seed])),
            }
            for name in SUMMARY_METRICS
            if all(r[name] is not None for r in per_seed)
        }
    return {"summary": summary, "runs": runs, "config": asdict(config)}
