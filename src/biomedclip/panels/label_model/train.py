"""Train the panel-letter glyph classifier from scratch on rendered glyphs and write ``weights.npz``.

Reproducible: the same seed, sample count and epochs give the same weights (torch on CPU, one thread; two full
runs of the command below wrote byte-identical files). Run from the repository root:

    PYTHONPATH=src .venv/bin/python -m biomedclip.panels.label_model.train --per-class 1000 --epochs 12 --seed 0

which renders 68,000 glyphs and writes src/biomedclip/panels/label_model/weights.npz (float16 arrays, no
pickle, 81 KB). Cost on this machine: 2.7 CPU-minutes in all (user + sys, ``/usr/bin/time``), single-threaded;
15 minutes of wall time while other jobs shared its two cores.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from biomedclip.panels.glyphs import GLYPH_SIZE
from biomedclip.panels.label_model.generate import generate
from biomedclip.panels.label_model.net import CLASSES, WEIGHTS_PATH


def build_network():
    """The torch twin of ``net.GlyphClassifier`` (same layers, same parameter names)."""
    import torch
    from torch import nn

    class GlyphNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
            self.fc1 = nn.Linear(16 * (GLYPH_SIZE // 4) ** 2, 64)
            self.fc2 = nn.Linear(64, len(CLASSES))
            self.drop = nn.Dropout(0.2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
            x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
            x = self.drop(torch.relu(self.fc1(x.flatten(1))))
            return self.fc2(x)

    return GlyphNet()


def train(
    bitmaps: np.ndarray, targets: np.ndarray, epochs: int, seed: int, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Fit the network on uint8 bitmaps and class indices; returns its parameters as float32 arrays."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    model = build_network()
    x = torch.from_numpy(bitmaps.astype(np.float32) / 255.0)[:, None]
    y = torch.from_numpy(targets)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=max(1, steps))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch], label_smoothing=0.05)
            loss.backward()
            optimizer.step()
            schedule.step()
    return {name: value.detach().numpy().copy() for name, value in model.state_dict().items()}


def save_weights(params: dict[str, np.ndarray], path: Path = WEIGHTS_PATH) -> None:
    """Write the parameters (float16) and the class list to ``path`` as a plain ``.npz``."""
    arrays = {name: value.astype(np.float16) for name, value in params.items()}
    np.savez_compressed(path, classes=np.asarray(CLASSES), **arrays)


def main(per_class: int, epochs: int, seed: int, output: Path) -> None:
    """Generate, train and save, reporting the time each step took."""
    started = time.perf_counter()
    bitmaps, targets = generate(per_class, seed)
    generated = time.perf_counter()
    print(f"generated {len(targets)} glyphs in {generated - started:.0f} s", file=sys.stderr)
    save_weights(train(bitmaps, targets, epochs, seed), output)
    print(f"trained {epochs} epochs in {time.perf_counter() - generated:.0f} s -> {output}", file=sys.stderr)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Train the panel-letter glyph classifier from rendered fonts.")
    parser.add_argument("--per-class", type=int, default=1000, help="rendered samples per letter class")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, default=WEIGHTS_PATH)
    args = parser.parse_args()
    main(args.per_class, args.epochs, args.seed, args.output)
