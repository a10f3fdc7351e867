"""Linear probe against direct scikit-learn fits on features with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from biomedclip.evaluate.linear_probe import LinearProbeConfig, linear_probe, probe_once, stratified_subset


def _clusters(n: int, seed: int, noise: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centers = np.eye(3, 10) * 2
    return centers[labels] + noise * rng.normal(size=(n, 10)), labels


def test_stratified_subset_sizes() -> None:
    labels = np.array([0] * 150 + [1] * 40 + [2] * 3)
    subset = stratified_subset(labels, 0.1, seed=3)
    assert np.bincount(labels[subset]).tolist() == [15, 4, 1]
    assert np.array_equal(subset, stratified_subset(labels, 0.1, seed=3))
    assert stratified_subset(labels, 1.0, seed=0).tolist() == list(range(193))
    with pytest.raises(ValueError, match="fraction"):
        stratified_subset(labels, 0.0, seed=0)


def test_probe_once_matches_an_independent_sweep() -> None:
    train, val, test = _clusters(300, 0), _clusters(100, 1), _clusters(200, 2)
    config = LinearProbeConfig(c_grid=(1e-3, 1e-1, 10.0))
    result = probe_once(train, val, test, 3, config)
    accuracies = {c: LogisticRegression(C=c, max_iter=1000).fit(*train).score(*val) for c in config.c_grid}
    best = max(config.c_grid, key=lambda c: (accuracies[c], -c))
    assert result["C"] == best
    want = LogisticRegression(C=best, max_iter=1000).fit(*train).score(*test)
    assert result["accuracy"] == pytest.approx(want)
    assert result["accuracy"] > 0.8


def test_linear_probe_fractions_seeds_and_held_out_validation() -> None:
    (x, y), (tx, ty) = _clusters(400, 0), _clusters(200, 5)
    config = LinearProbeConfig(fractions=(0.05, 1.0), seeds=(0, 1), c_grid=(0.1, 1.0))
    result = linear_probe(x, y, tx, ty, 3, config=config)
    assert [(r["fraction"], r["seed"]) for r in result["runs"]] == [(0.05, 0), (0.05, 1), (1.0, 0), (1.0, 1)]
    full_runs = [r for r in result["runs"] if r["fraction"] == 1.0]
    assert [r["n_train"] for r in full_runs] == [320, 320]  # 20% held out for the C sweep
    accuracies = [r["accuracy"] for r in full_runs]
    assert result["summary"]["1.0"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert result["summary"]["1.0"]["accuracy"]["std"] == pytest.approx(np.std(accuracies))
    assert "auroc" not in result["summary"]["1.0"]  # three classes
    assert result["summary"]["1.0"]["accuracy"]["mean"] >= result["summary"]["0.05"]["accuracy"]["mean"] - 0.05
