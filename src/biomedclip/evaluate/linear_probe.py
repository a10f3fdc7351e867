"""Linear probe on frozen features, 1%/10%/100% of the training labels, mean and std over seeds.

Default protocol ``elevater`` (the paper's: ELEVATER, Li et al. 2022, toolkit ``Elevater_Toolkit_IC``):

* for each label fraction and seed, a stratified subset of the training split (at least two images per class,
  the toolkit's rule for 1-shot runs);
* a class-balanced validation cut of that subset: ``ceil(20% of each class)`` (at least one image per class left
  for training), drawn with the run's seed (the toolkit takes the first images of each class);
* features standardised with the fit set's mean and variance (the toolkit's ``BatchNorm1d(affine=False)``
  channel normalisation, here with exact statistics), then a linear layer trained with cross-entropy by SGD
  (momentum 0.9, Nesterov, batch 32, constant learning rate, 100 epochs, zero initialisation), L2 weight
  decay on the weights (not the bias);
* grid search as the toolkit's ``hyperparameter_sweep_lr``: learning rates 1e-6 ... 1e-1 (6 values); for each,
  weight decay on a 97-point log grid over [1e-6, 1e6], first its 7 decade-pair points, then around the best
  index at spans 8, 4, 2, 1 (left and right); a point's score is its best-epoch validation accuracy (the
  toolkit's default; ties keep the earlier epoch), and ties between points keep the earlier point;
* ``search_max_per_class`` (off by default; ``eval paper`` sets 10,000 for PCam, as the toolkit does for
  patch-camelyon at 100%): the search runs on a seeded draw of at most that many images per class;
* final fit on the whole subset (train + validation cut) with the chosen learning rate, weight decay and
  number of epochs (the best validation epoch of the chosen point), then scored on the evaluation split once
  (the toolkit reports the best epoch on the test split; we never select on test). Stopping at the validated
  epoch keeps a large constant learning rate from scoring whatever oscillation its last epoch lands on.

Protocol ``logistic`` (the earlier, cheaper probe): scikit-learn logistic regression, ``C`` picked on the val
split (or a stratified 20% of train) from a 7-value grid, refit on the subset with that ``C``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from biomedclip.evaluate.metrics import CHANCE_MARGIN, at_chance, classification_metrics

SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")
PROTOCOLS = ("elevater", "logistic")
BN_EPS = 1e-5


@dataclass(frozen=True)
class LinearProbeConfig:
    """Protocol, label fractions, seeds and the search settings (defaults = the paper's ELEVATER protocol)."""

    protocol: str = "elevater"
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    val_fraction: float = 0.2
    # elevater
    lrs: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    wd_log_range: tuple[float, float] = (-6.0, 6.0)
    wd_points: int = 97
    wd_coarse: int = 7
    epochs: int = 100
    batch_size: int = 32
    momentum: float = 0.9
    search_max_per_class: int | None = None  # the toolkit searches PCam on a 10,000-per-class draw
    device: str = "cpu"
    # logistic
    c_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
    max_iter: int = 1000

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown linear-probe protocol {self.protocol!r}: use one of {', '.join(PROTOCOLS)}")
        if (self.wd_points - 1) % (self.wd_coarse - 1):
            raise ValueError("wd_points - 1 must be a multiple of wd_coarse - 1 (the coarse points lie on the grid)")


def stratified_subset(labels: np.ndarray, fraction: float, seed: int, minimum: int = 1) -> np.ndarray:
    """Sorted indices of ``ceil(fraction * n_c)`` (at least ``minimum``, at most n_c) random examples of class c."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        size = min(members.size, max(minimum, math.ceil(fraction * members.size)))
        chosen.append(rng.choice(members, size=size, replace=False))
    return np.sort(np.concatenate(chosen))


def per_class_cap(labels: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``cap`` random examples of every class (all of a smaller class)."""
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(members, size=min(cap, members.size), replace=False)
        for members in (np.flatnonzero(labels == cls) for cls in np.unique(labels))
    ]
    return np.sort(np.concatenate(chosen))


def balanced_val_cut(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)`` positions: ``ceil(fraction * n_c)`` of every class to val, at least one left in train."""
    rng = np.random.default_rng(seed)
    val = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        size = min(math.ceil(fraction * members.size), members.size - 1)
        val.append(rng.choice(members, size=size, replace=False))
    val_idx = np.sort(np.concatenate(val)).astype(np.int64)
    return np.setdiff1d(np.arange(labels.size), val_idx), val_idx


# ------------------------------------------------------------------------------------------------- ELEVATER


def wd_grid(config: LinearProbeConfig) -> np.ndarray:
    """The weight-decay grid: ``wd_points`` log-spaced values over ``10**wd_log_range``."""
    return np.logspace(*config.wd_log_range, num=config.wd_points)


def standardize(fit: np.ndarray, *others: np.ndarray) -> list[torch.Tensor]:
    """``fit`` and ``others`` standardised with ``fit``'s per-feature mean and variance (BatchNorm, no affine)."""
    fit64 = np.asarray(fit, dtype=np.float64)
    mean, scale = fit64.mean(0), np.sqrt(fit64.var(0) + BN_EPS)
    return [torch.from_numpy(((np.asarray(x, np.float64) - mean) / scale).astype(np.float32)) for x in (fit, *others)]


@torch.no_grad()
def train_heads(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    lrs: Sequence[float],
    wds: Sequence[float],
    config: LinearProbeConfig,
    seed: int,
    epochs: int | None = None,
    on_epoch: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train one linear head per ``(lrs[k], wds[k])`` at once (same batches): SGD, Nesterov momentum, CE loss.

    The head of an epoch is the mean of its iterates (Polyak-Ruppert averaging over the epoch's steps): with a
    constant learning rate the last iterate wanders around the optimum (a PneumoniaMNIST probe at lr 0.1 scored
    0.44-0.90 on test from one epoch to the next), the epoch mean sits close to it.

    Args:
        epochs: how many epochs (default ``config.epochs``).
        on_epoch: called with ``(epoch, weights, biases)``, the epoch's averaged head, after each epoch (1-based).

    Returns:
        The last epoch's averaged head: ``(weights (K, D, C), biases (K, C))``.
    """
    device = torch.device(config.device)
    x, y = x.to(device), y.to(device)
    onehot = torch.nn.functional.one_hot(y, num_classes).float()
    weights = torch.zeros(len(lrs), x.shape[1], num_classes, device=device)
    biases = torch.zeros(len(lrs), 1, num_classes, device=device)
    lr = torch.tensor(lrs, dtype=torch.float32, device=device).view(-1, 1, 1)
    wd = torch.tensor(wds, dtype=torch.float32, device=device).view(-1, 1, 1)
    momenta = [torch.zeros_like(weights), torch.zeros_like(biases)]
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(1, (config.epochs if epochs is None else epochs) + 1):
        mean_weights, mean_biases = torch.zeros_like(weights), torch.zeros_like(biases)
        batches = torch.randperm(len(y), generator=generator).split(config.batch_size)
        for batch in batches:
            batch = batch.to(device)
            inputs = x[batch]
            # Gradient of the batch-mean cross-entropy, written out: (softmax - one-hot) / B.
            error = (torch.softmax(torch.matmul(inputs, weights) + biases, dim=-1) - onehot[batch]) / len(batch)
            grads = (torch.matmul(inputs.T, error) + wd * weights, error.sum(1, keepdim=True))
            for parameter, grad, momentum in zip((weights, biases), grads, momenta, strict=True):
                momentum.mul_(config.momentum).add_(grad)
                parameter.sub_(lr * (grad + config.momentum * momentum))
            mean_weights.add_(weights, alpha=1 / len(batches))
            mean_biases.add_(biases, alpha=1 / len(batches))
        if on_epoch is not None:
            on_epoch(epoch, mean_weights, mean_biases.squeeze(1))
    return mean_weights.cpu(), mean_biases.cpu().squeeze(1)


def head_logits(weights: torch.Tensor, biases: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(K, N, C) logits of every head on ``x``."""
    return torch.matmul(x, weights) + biases[:, None, :]


def search(
    score: Callable[[list[tuple[float, float]]], list[float]], lrs: Sequence[float], grid: np.ndarray, coarse: int
) -> tuple[float, float, float, int]:
    """The toolkit's coarse-to-fine search; ``score`` rates a list of ``(lr, wd)`` points in one call.

    Returns:
        ``(lr, wd, best score, number of points scored)``.
    """
    step = (len(grid) - 1) // (coarse - 1)
    seen: dict[tuple[int, int], float] = {}

    def rate(points: list[tuple[int, int]]) -> None:
        todo = [p for p in dict.fromkeys(points) if p not in seen]
        if todo:
            seen.update(zip(todo, score([(lrs[i], float(grid[j])) for i, j in todo]), strict=True))

    def best_of(i: int, indices: list[int], start: tuple[int, float]) -> tuple[int, float]:
        peak = start
        for j in indices:
            if seen[(i, j)] > peak[1]:
                peak = (j, seen[(i, j)])
        return peak

    coarse_idx = list(range(0, len(grid), step))
    rate([(i, j) for i in range(len(lrs)) for j in coarse_idx])
    peaks = [best_of(i, coarse_idx, (coarse_idx[0], -math.inf)) for i in range(len(lrs))]
    span = step // 2
    while span > 0:
        sides = [[j for j in (max(p - span, 0), min(p + span, len(grid) - 1)) if j != p] for p, _ in peaks]
        rate([(i, j) for i, side in enumerate(sides) for j in side])
        peaks = [best_of(i, sides[i], peaks[i]) for i in range(len(lrs))]
        span //= 2
    best_lr = max(range(len(lrs)), key=lambda i: (peaks[i][1], -i))
    return lrs[best_lr], float(grid[peaks[best_lr][0]]), peaks[best_lr][1], len(seen)


def elevater_once(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    config: LinearProbeConfig,
    seed: int,
) -> dict:
    """Search (lr, wd, epochs) on a class-balanced validation cut of ``train``, refit on all of it, score ``test``."""
    (x, y), (tx, ty) = train, test
    if np.unique(y).size < 2:
        raise ValueError("the training subset holds a single class: a linear probe needs at least two")
    searched_on = np.arange(y.size)
    if config.search_max_per_class is not None:
        searched_on = per_class_cap(y, config.search_max_per_class, seed)
    fit_idx, val_idx = (searched_on[i] for i in balanced_val_cut(y[searched_on], config.val_fraction, seed))
    if val_idx.size == 0:
        raise ValueError("every class has a single training image: no validation cut for the search is possible")
    fx, vx = standardize(x[fit_idx], x[val_idx])
    fy, vy = torch.from_numpy(y[fit_idx]).long(), torch.from_numpy(y[val_idx]).long()

    best_epoch: dict[tuple[float, float], int] = {}

    def score(points: list[tuple[float, float]]) -> list[float]:
        lrs, wds = zip(*points, strict=True)
        best = torch.full((len(points),), -1.0)
        epoch_of = torch.zeros(len(points), dtype=torch.long)

        def keep_best(epoch: int, weights: torch.Tensor, biases: torch.Tensor) -> None:
            accuracy = (head_logits(weights, biases, vx.to(weights.device)).argmax(-1).cpu() == vy).float().mean(1)
            better = accuracy > best  # strictly: ties keep the earlier epoch
            best[better], epoch_of[better] = accuracy[better], epoch

        train_heads(fx, fy, num_classes, lrs, wds, config, seed, on_epoch=keep_best)
        best_epoch.update(zip(points, epoch_of.tolist(), strict=True))
        return best.tolist()

    lr, wd, val_accuracy, searched = search(score, config.lrs, wd_grid(config), config.wd_coarse)
    epochs = best_epoch[(lr, wd)]
    ax, tx_std = standardize(x, tx)
    weights, biases = train_heads(ax, torch.from_numpy(y).long(), num_classes, [lr], [wd], config, seed, epochs)
    metrics = classification_metrics(ty, head_logits(weights, biases, tx_std)[0].numpy())
    return metrics | {
        "lr": lr,
        "wd": wd,
        "epochs": epochs,
        "val_accuracy": val_accuracy,
        "searched": searched,
        "n_train": int(y.size),
        "n_val": int(val_idx.size),
        "n_search": int(searched_on.size),
    }


# ------------------------------------------------------------------------------------------------- logistic


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
    """Logistic protocol: sweep ``C`` on ``val``, refit on ``train`` with the best one, metrics on ``test``."""
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
    """Run the probe for every (fraction, seed) and summarise as ``{fraction: {metric: {mean, std}}, runs}``.

    ``val_*`` is used by the ``logistic`` protocol only (ELEVATER always cuts its validation set from train).
    """
    config = config or LinearProbeConfig()
    train_features, train_labels = np.asarray(train_features), np.asarray(train_labels)
    test = (np.asarray(test_features), np.asarray(test_labels))
    if config.protocol == "logistic" and (val_features is None or val_labels is None):
        train_idx, val_idx = train_test_split(
            np.arange(train_labels.size), test_size=config.val_fraction, random_state=0, stratify=train_labels
        )
        val_features, val_labels = train_features[val_idx], train_labels[val_idx]
        train_features, train_labels = train_features[train_idx], train_labels[train_idx]
    runs, summary, chance = [], {}, {}
    for fraction in config.fractions:
        per_seed = []
        for seed in config.seeds:
            # ELEVATER keeps two images per class at least (its 1-shot rule), so the validation cut holds one.
            subset = stratified_subset(train_labels, fraction, seed, minimum=2 if config.protocol == "elevater" else 1)
            train = (train_features[subset], train_labels[subset])
            if config.protocol == "elevater":
                result = elevater_once(train, test, num_classes, config, seed)
            else:
                result = probe_once(train, (val_features, np.asarray(val_labels)), test, num_classes, config)
            per_seed.append(result)
            runs.append({"fraction": fraction, "seed": seed, **result})
        summary[str(fraction)] = {
            name: {
                "mean": float(np.mean([r[name] for r in per_seed])),
                "std": float(np.std([r[name] for r in per_seed])),
                "min": float(np.min([r[name] for r in per_seed])),
                "max": float(np.max([r[name] for r in per_seed])),
            }
            for name in SUMMARY_METRICS
            if all(r[name] is not None for r in per_seed)
        }
        runs_at_chance = [at_chance(r["balanced_accuracy"], num_classes) for r in per_seed]
        chance[str(fraction)] = [seed for seed, low in zip(config.seeds, runs_at_chance, strict=True) if low]
    warnings = probe_warnings(summary, chance, num_classes)
    return {"summary": summary, "runs": runs, "config": asdict(config), "seeds_at_chance": chance, "warnings": warnings}


def probe_warnings(summary: dict, chance: dict[str, list[int]], num_classes: int) -> list[str]:
    """One warning per label fraction where some seed's balanced accuracy fell to chance (see ``at_chance``)."""
    warnings = []
    for fraction, seeds in chance.items():
        if seeds:
            spread = summary[fraction]["balanced_accuracy"]
            warnings.append(
                f"{float(fraction):g} of the labels: seed(s) {', '.join(map(str, seeds))} at chance (balanced accuracy "
                f"<= 1/{num_classes} + {CHANCE_MARGIN}); balanced accuracy over seeds {spread['min']:.3f}-"
                f"{spread['max']:.3f}, mean {spread['mean']:.3f} ± {spread['std']:.3f}"
            )
    return warnings
