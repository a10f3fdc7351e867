"""A tiny CNN over ``GLYPH_SIZE`` glyph bitmaps, run with NumPy (no torch at run time).

Layers: conv3x3(1->8) relu maxpool2, conv3x3(8->16) relu maxpool2, dense(16*6*6->64) relu, dense(64->classes).
``train.py`` defines the same network in torch and writes its weights to ``weights.npz`` (plain arrays, no pickle).
"""

from __future__ import annotations

import string
from functools import lru_cache
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController

OTHER = "?"
"""The class of everything that is not a letter, a digit or a bracket (symbols, fragments, texture)."""
CLASSES: tuple[str, ...] = (
    *string.ascii_uppercase,
    *string.ascii_lowercase,
    *string.digits,
    "(",
    ")",
    OTHER,
)
WEIGHTS_PATH = Path(__file__).with_name("weights.npz")
_LAYERS = ("conv1", "conv2", "fc1", "fc2")


def _conv3x3_relu_pool(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """'Same' 3x3 convolution, ReLU and 2x2 max-pooling of an (N, H, W, C) batch, channels last so that the
    product's rows are already the output's layout (no transposed copies). The patch matrix is gathered as its
    transpose, whose rows are long runs of the image (a gather with 3-wide rows costs twice as much), and handed to
    the product transposed (BLAS packs either layout alike: the same sums in the same order, checked bit for bit
    against the row-major gather). The bias and ReLU follow the pooling: both are monotonic, so the result is the
    same, bit for bit, at a quarter of the work."""
    n, h, w, c = x.shape
    padded = np.zeros((n, h + 2, w + 2, c), np.float32)
    padded[:, 1:-1, 1:-1] = x
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))  # N, H, W, C, 3, 3
    patches = windows.transpose(3, 4, 5, 0, 1, 2).reshape(c * 9, n * h * w)
    out = patches.T @ weight.reshape(weight.shape[0], -1).T
    out = out.reshape(n, h // 2, 2, w // 2, 2, -1)
    pooled = np.maximum(
        np.maximum(out[:, :, 0, :, 0], out[:, :, 0, :, 1]), np.maximum(out[:, :, 1, :, 0], out[:, :, 1, :, 1])
    )
    pooled += bias
    return np.maximum(pooled, 0.0, out=pooled)


class GlyphClassifier:
    """Class probabilities for glyph bitmaps, from the arrays ``train.py`` exports."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        classes = tuple(str(c) for c in arrays["classes"])
        if classes != CLASSES:
            raise ValueError(f"weights were trained for classes {''.join(classes)!r}, not {''.join(CLASSES)!r}")
        self.params = {
            f"{layer}.{kind}": arrays[f"{layer}.{kind}"].astype(np.float32)
            for layer in _LAYERS
            for kind in ("weight", "bias")
        }

    def probabilities(self, bitmaps: np.ndarray) -> np.ndarray:
        """Softmax over ``CLASSES`` for an (N, GLYPH_SIZE, GLYPH_SIZE) batch of bitmaps in [0, 1], on one BLAS
        thread: the products are small, so more threads only spin (2.6x the CPU of a panel build, measured)."""
        with _blas().limit(limits=1, user_api="blas"):
            return self._forward(bitmaps)

    def _forward(self, bitmaps: np.ndarray) -> np.ndarray:
        p = self.params
        x = bitmaps.astype(np.float32)[:, :, :, None]
        x = _conv3x3_relu_pool(x, p["conv1.weight"], p["conv1.bias"])
        x = _conv3x3_relu_pool(x, p["conv2.weight"], p["conv2.bias"])
        x = x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # flattened channels first, as torch's weights expect
        x = np.maximum(x @ p["fc1.weight"].T + p["fc1.bias"], 0.0)
        logits = x @ p["fc2.weight"].T + p["fc2.bias"]
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


@lru_cache(maxsize=1)
def _blas() -> ThreadpoolController:
    """The process's thread-pool controller (finding the loaded BLAS libraries takes milliseconds: once)."""
    return ThreadpoolController()


@lru_cache(maxsize=4)
def load_classifier(path: Path = WEIGHTS_PATH) -> GlyphClassifier:
    """The classifier stored at ``path`` (the shipped ``weights.npz`` by default), loaded once."""
    with np.load(path, allow_pickle=False) as arrays:
        return GlyphClassifier(dict(arrays))
