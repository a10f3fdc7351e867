"""Linear probe: the ELEVATER protocol against scikit-learn and a brute-force grid search; the logistic probe."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from biomedclip.evaluate.linear_probe import (
    LinearProbeConfig,
    balanced_val_cut,
    head_logits,
    linear_probe,
    per_class_cap,
    probe_once,
    search,
    standardize,
    stratified_subset,
    train_heads,
    wd_grid,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small matrices: one torch thread is much faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _clusters(n: int, seed: int, noise: float = 0.7, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centers = np.eye(3, 10) * 2
    return centers[labels] + noise * rng.normal(size=(n, 10)) + offset, labels


def test_stratified_subset_sizes() -> None:
    labels = np.array([0] * 150 + [1] * 40 + [2] * 3)
    subset = stratified_subset(labels, 0.1, seed=3)
    assert np.bincount(labels[subset]).tolist() == [15, 4, 1]
    assert np.array_equal(subset, stratified_subset(labels, 0.1, seed=3))
    assert stratified_subset(labels, 1.0, seed=0).tolist() == list(range(193))
    assert np.bincount(labels[stratified_subset(labels, 0.01, seed=0, minimum=2)]).tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match="fraction"):
        stratified_subset(labels, 0.0, seed=0)


def test_balanced_val_cut_takes_a_fifth_of_every_class() -> None:
    labels = np.array([0] * 150 + [1] * 40 + [2] * 3 + [3] * 1 + [4] * 5)
    train, val = balanced_val_cut(labels, 0.2, seed=0)
    assert np.bincount(labels[val], minlength=5).tolist() == [30, 8, 1, 0, 1]  # ceil(20%), one always left
    assert np.bincount(labels[train], minlength=5).tolist() == [120, 32, 2, 1, 4]
    assert np.intersect1d(train, val).size == 0 and train.size + val.size == labels.size
    assert not np.array_equal(val, balanced_val_cut(labels, 0.2, seed=1)[1])


@pytest.mark.parametrize(("lr", "wd"), [(0.01, 1e-3), (0.05, 1e-2)])
def test_sgd_head_reaches_scikit_learns_logistic_regression(lr: float, wd: float) -> None:
    # SGD on mean CE + wd/2 |W|^2 (bias free) has the optimum of LogisticRegression(C = 1 / (wd * n)).
    (x, y), (tx, ty) = _clusters(300, 0, noise=1.2, offset=5.0), _clusters(300, 1, noise=1.2, offset=5.0)
    fit, test = standardize(x, tx)
    weights, biases = train_heads(fit, torch.from_numpy(y), 3, [lr], [wd], LinearProbeConfig(), seed=0)
    ours = head_logits(weights, biases, test)[0].argmax(-1).numpy()
    reference = LogisticRegression(C=1 / (wd * len(y)), max_iter=10_000, tol=1e-10).fit(fit.numpy(), y)
    theirs = reference.predict(test.numpy())
    # Stated tolerance: test accuracy within 1 point, predictions agree on >= 97% of the images.
    assert abs(np.mean(ours == ty) - np.mean(theirs == ty)) <= 0.01
    assert np.mean(ours == theirs) >= 0.97
    centred = reference.coef_.T - reference.coef_.T.mean(1, keepdims=True)  # softmax weights up to a shift
    assert np.abs(weights[0].numpy() - weights[0].numpy().mean(1, keepdims=True) - centred).max() < 0.1


def test_epoch_averaged_head_stays_near_the_optimum_at_a_large_learning_rate() -> None:
    # Heavy-tailed features, weak signal: at lr 0.1 the last SGD iterate wanders (0.60-0.65 test accuracy from one
    # epoch to the next here); the epoch mean of the iterates stays near scikit-learn's optimum every epoch.
    def draw(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, 2, n)
        features = rng.standard_t(3, size=(n, 128))
        features[:, :4] += 0.8 * labels[:, None]
        return features, labels

    (x, y), (tx, ty) = draw(2000, 0), draw(1000, 1)
    fit, test = standardize(x, tx)
    optimum = LogisticRegression(C=1 / (1e-6 * len(y)), max_iter=10_000).fit(fit.numpy(), y).score(test.numpy(), ty)
    accuracies = []

    def record(epoch: int, weights: torch.Tensor, biases: torch.Tensor) -> None:
        accuracies.append(float((head_logits(weights, biases, test)[0].argmax(-1).numpy() == ty).mean()))

    last = train_heads(fit, torch.from_numpy(y), 2, [0.1], [1e-6], LinearProbeConfig(), 0, epochs=11, on_epoch=record)
    assert len(accuracies) == 11 and min(accuracies[3:]) >= optimum - 0.035
    assert accuracies[-1] == float((head_logits(*last, test)[0].argmax(-1).numpy() == ty).mean())


def test_refit_runs_the_best_validation_epoch_of_the_chosen_point() -> None:
    (x, y), (tx, ty) = _clusters(300, 0, noise=1.5), _clusters(100, 5, noise=1.5)
    config = LinearProbeConfig(fractions=(1.0,), seeds=(0,), lrs=(0.1,), wd_points=13, epochs=15)
    (run,) = linear_probe(x, y, tx, ty, 3, config=config)["runs"]
    # Independently: the chosen point's validation accuracy per epoch on the same cut; the first maximum.
    fit_idx, val_idx = balanced_val_cut(y, 0.2, seed=0)
    fit, val = standardize(x[fit_idx], x[val_idx])
    curve = []

    def record(epoch: int, weights: torch.Tensor, biases: torch.Tensor) -> None:
        curve.append(float((head_logits(weights, biases, val)[0].argmax(-1).numpy() == y[val_idx]).mean()))

    train_heads(fit, torch.from_numpy(y[fit_idx]), 3, [run["lr"]], [run["wd"]], config, 0, on_epoch=record)
    assert run["epochs"] == int(np.argmax(curve)) + 1 and run["val_accuracy"] == pytest.approx(max(curve))
    # The final head is the refit on all 300 images for exactly that many epochs.
    all_fit, test = standardize(x, tx)
    head = train_heads(all_fit, torch.from_numpy(y), 3, [run["lr"]], [run["wd"]], config, 0, epochs=run["epochs"])
    assert run["accuracy"] == pytest.approx(float((head_logits(*head, test)[0].argmax(-1).numpy() == ty).mean()))


def test_search_finds_the_brute_force_optimum_of_a_crafted_score() -> None:
    config = LinearProbeConfig()
    grid = wd_grid(config)
    assert grid.size == 97 and grid[0] == pytest.approx(1e-6) and grid[-1] == pytest.approx(1e6)

    def crafted(lr: float, wd: float) -> float:  # unimodal, best at lr 1e-3, wd 10**1.25 (grid index 58)
        return -((math.log10(wd) - 1.25) ** 2) - (math.log10(lr) + 3) ** 2

    calls = []

    def score(points):
        calls.append(len(points))
        return [crafted(lr, wd) for lr, wd in points]

    lr, wd, best, scored = search(score, config.lrs, grid, config.wd_coarse)
    brute = max(((a, float(b)) for a in config.lrs for b in grid), key=lambda p: crafted(*p))
    assert (lr, wd) == brute and wd == pytest.approx(10**1.25) and best == pytest.approx(0.0)
    assert calls[0] == 6 * 7 and len(calls) == 5 and scored == sum(calls) <= 6 * (7 + 8)


def test_search_keeps_the_first_of_equal_scores() -> None:
    lr, wd, best, _ = search(lambda points: [0.5] * len(points), (0.1, 0.01), wd_grid(LinearProbeConfig()), 7)
    assert (lr, best) == (0.1, 0.5) and wd == pytest.approx(1e-6)


def test_elevater_protocol_fractions_seeds_validation_and_refit() -> None:
    (x, y), (tx, ty) = _clusters(400, 0), _clusters(200, 5)
    config = LinearProbeConfig(fractions=(0.05, 1.0), seeds=(0, 1), lrs=(0.01, 0.1), wd_points=13, epochs=20)
    result = linear_probe(x, y, tx, ty, 3, config=config)
    assert [(r["fraction"], r["seed"]) for r in result["runs"]] == [(0.05, 0), (0.05, 1), (1.0, 0), (1.0, 1)]
    counts = np.bincount(y)
    for run in result["runs"]:
        sizes = [max(2, math.ceil(run["fraction"] * c)) for c in counts]  # two per class at least
        assert run["n_train"] == sum(sizes)  # the final fit uses the whole subset: train + validation cut
        assert run["n_val"] == sum(min(math.ceil(0.2 * s), s - 1) for s in sizes)
        assert run["lr"] in config.lrs and run["n"] == 200
    full = [r["accuracy"] for r in result["runs"] if r["fraction"] == 1.0]
    assert result["summary"]["1.0"]["accuracy"]["mean"] == pytest.approx(np.mean(full))
    assert result["summary"]["1.0"]["accuracy"]["std"] == pytest.approx(np.std(full))
    assert min(full) > 0.8 and "auroc" not in result["summary"]["1.0"]
    assert result["config"]["protocol"] == "elevater"


def test_a_one_percent_subset_of_a_small_set_still_has_a_validation_cut() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 5)), np.arange(20) % 2
    run = linear_probe(x, y, x, y, 2, config=LinearProbeConfig(fractions=(0.05,), seeds=(0,), epochs=2))["runs"][0]
    assert run["n_train"] == 4 and run["n_val"] == 2 and 0 <= run["val_accuracy"] <= 1
    with pytest.raises(ValueError, match="single training image"):
        linear_probe(x[:2], y[:2], x, y, 2, config=LinearProbeConfig(fractions=(1.0,), seeds=(0,), epochs=1))


def test_search_cap_draws_at_most_n_per_class_and_refits_on_all() -> None:
    x, y = _clusters(400, 0)
    config = LinearProbeConfig(
        fractions=(1.0,), seeds=(0,), lrs=(0.1,), wd_points=13, epochs=3, search_max_per_class=20
    )
    (run,) = linear_probe(x, y, x[:50], y[:50], 3, config=config)["runs"]
    assert run["n_search"] == 60 and run["n_val"] == 3 * 4 and run["n_train"] == 400
    assert per_class_cap(np.array([0] * 5 + [1] * 50), 10, seed=0).size == 15


def test_logistic_protocol_matches_an_independent_sweep() -> None:
    train, val, test = _clusters(300, 0), _clusters(100, 1), _clusters(200, 2)
    config = LinearProbeConfig(protocol="logistic", c_grid=(1e-3, 1e-1, 10.0))
    result = probe_once(train, val, test, 3, config)
    accuracies = {c: LogisticRegression(C=c, max_iter=1000).fit(*train).score(*val) for c in config.c_grid}
    best = max(config.c_grid, key=lambda c: (accuracies[c], -c))
    assert result["C"] == best
    assert result["accuracy"] == pytest.approx(LogisticRegression(C=best, max_iter=1000).fit(*train).score(*test))
    (x, y), (tx, ty) = _clusters(400, 0), _clusters(200, 5)
    config = LinearProbeConfig(protocol="logistic", fractions=(1.0,), seeds=(0,), c_grid=(0.1, 1.0))
    assert linear_probe(x, y, tx, ty, 3, config=config)["runs"][0]["n_train"] == 320  # 20% held out for C
    with pytest.raises(ValueError, match="protocol"):
        LinearProbeConfig(protocol="svm")


def test_the_probe_reports_the_spread_over_seeds_and_flags_seeds_at_chance() -> None:
    """Features that carry no label information put every seed at chance; informative ones put none there."""
    (x, y), (tx, ty) = _clusters(300, 0), _clusters(150, 5)
    config = LinearProbeConfig(fractions=(1.0,), seeds=(0, 1, 2), lrs=(0.1,), wd_points=13, epochs=5)
    good = linear_probe(x, y, tx, ty, 3, config=config)
    stats = good["summary"]["1.0"]
    per_seed = [r["balanced_accuracy"] for r in good["runs"]]
    assert stats["balanced_accuracy"]["min"] == min(per_seed) and stats["balanced_accuracy"]["max"] == max(per_seed)
    assert good["seeds_at_chance"] == {"1.0": []} and good["warnings"] == []
    noise = np.random.default_rng(9).normal(size=x.shape)  # independent of the labels
    bad = linear_probe(noise, y, np.zeros_like(tx), ty, 3, config=config)  # constant test features: one class
    assert bad["seeds_at_chance"] == {"1.0": [0, 1, 2]}
    (warning,) = bad["warnings"]
    assert warning.startswith("1 of the labels: seed(s) 0, 1, 2 at chance (balanced accuracy <= 1/3 + 0.02)")


def test_chance_and_one_class_thresholds() -> None:
    from biomedclip.evaluate.metrics import at_chance, one_class_warning

    assert at_chance(0.52, 2) and not at_chance(0.5201, 2)  # exactly 1/2 + 0.02 is chance
    assert at_chance(0.25, 4) and not at_chance(0.28, 4)
    assert one_class_warning([[3, 0], [5, 0]], ["a", "b"]) == (
        "every one of the 8 images was predicted as 'a': the model has collapsed or ignores the image"
    )
    assert one_class_warning([[3, 0], [4, 1]], ["a", "b"]) is None
    assert one_class_warning([[1]], ["a"]) is None and one_class_warning([[1, 0], [0, 0]], ["a", "b"]) is None
