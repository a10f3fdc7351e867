"""Glyph extraction: ink masks of a grey image region, their glyph-sized connected components, and the fixed-size
bitmap the label model reads. The label reader and the model's training-data generator both go through these
functions, so the model is trained on exactly what it sees at run time."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

GLYPH_SIZE = 24
"""Side of the square bitmap a glyph is drawn into for the model."""
_GLYPH_FIT = 20
"""The glyph's longer side in that bitmap (a 2-pixel margin keeps the 3x3 convolutions off the border)."""
_MIN_CONTRAST = 40.0
"""A region whose grey levels span less than this holds no readable ink."""
STRONG_DARK = 80.0
STRONG_LIGHT = 200.0
_STRONG_MARGIN = 25.0
_EIGHT = np.ones((3, 3), dtype=bool)


class Component:
    """One connected blob of ink: its box in region pixels (x1/y1 exclusive), its polarity, its pixel count, and
    its pixels (cut from the label image only when asked for)."""

    __slots__ = ("_area", "_index", "_pixels", "height", "light", "width", "x0", "x1", "y0", "y1")

    def __init__(self, x0: int, y0: int, x1: int, y1: int, pixels: np.ndarray, light: bool, index: int = 0) -> None:
        self.x0, self.y0, self.x1, self.y1 = x0, y0, x1, y1
        self.height, self.width = y1 - y0, x1 - x0
        self.light = light
        self._pixels, self._index = pixels, index
        self._area = -1

    @property
    def mask(self) -> np.ndarray:
        """The component's pixels in its box (bool); ``pixels`` is either that mask or a label crop."""
        return self._pixels if self._index == 0 else self._pixels == self._index

    @property
    def area(self) -> int:
        """The component's pixel count (counted when first asked for: most components never are)."""
        if self._area < 0:
            self._area = int(np.count_nonzero(self.mask))
        return self._area


def otsu_threshold(gray: np.ndarray) -> float | None:
    """Otsu's grey-level threshold of ``gray`` (uint8), or None when the region has too little contrast."""
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    nonzero = np.flatnonzero(hist)
    if nonzero.size == 0 or nonzero[-1] - nonzero[0] < _MIN_CONTRAST:
        return None
    weight0 = np.cumsum(hist)
    weight1 = weight0[-1] - weight0
    mass0 = np.cumsum(hist * levels)
    mean0 = mass0 / np.maximum(weight0, 1)
    mean1 = (mass0[-1] - mass0) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(np.argmax(between[:-1])) + 0.5


def ink_masks(gray: np.ndarray) -> list[tuple[np.ndarray, bool]]:
    """Ink masks of a uint8 region as ``(mask, light)`` pairs (none if flat): dark-on-light and light-on-dark at
    Otsu's threshold, then, where they differ from it, at the strong-ink levels ``STRONG_DARK``/``STRONG_LIGHT``
    (black letters over a mid-grey micrograph merge with it at Otsu's level but stand alone at these)."""
    threshold = otsu_threshold(gray)
    if threshold is None:
        return []
    masks = [(gray < threshold, False), (gray > threshold, True)]
    if threshold - STRONG_DARK > _STRONG_MARGIN:
        masks.append((gray < STRONG_DARK, False))
    if STRONG_LIGHT - threshold > _STRONG_MARGIN:
        masks.append((gray > STRONG_LIGHT, True))
    return masks


def components(mask: np.ndarray, light: bool, min_height: int, max_height: int) -> list[Component]:
    """The 8-connected components of ``mask`` whose height lies in [min_height, max_height] and that are not
    far wider than tall (ruled lines, merged words)."""
    labels, _ = ndimage.label(mask, structure=_EIGHT)
    found = []
    for index, slices in enumerate(ndimage.find_objects(labels), start=1):
        if slices is None:
            continue
        ys, xs = slices
        height, width = ys.stop - ys.start, xs.stop - xs.start
        if not min_height <= height <= max_height or width > 2 * height:
            continue
        found.append(Component(xs.start, ys.start, xs.stop, ys.stop, labels[slices], light, index))
    return found


def merged(parts: list[Component]) -> Component:
    """One component made of several (a letter and its dot, say): the union of their pixels in their joint box."""
    if len(parts) == 1:
        return parts[0]
    x0, y0 = min(p.x0 for p in parts), min(p.y0 for p in parts)
    x1, y1 = max(p.x1 for p in parts), max(p.y1 for p in parts)
    mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for p in parts:
        mask[p.y0 - y0 : p.y1 - y0, p.x0 - x0 : p.x1 - x0] |= p.mask
    return Component(x0, y0, x1, y1, mask, parts[0].light)


def glyph_bitmap(mask: np.ndarray) -> np.ndarray:
    """A component's pixels scaled (aspect kept) into a centred ``GLYPH_SIZE`` square, float32 ink in [0, 1]."""
    height, width = mask.shape
    scale = _GLYPH_FIT / max(height, width, 1)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize((new_w, new_h), Image.Resampling.BILINEAR)
    out = np.zeros((GLYPH_SIZE, GLYPH_SIZE), dtype=np.float32)
    top, left = (GLYPH_SIZE - new_h) // 2, (GLYPH_SIZE - new_w) // 2
    out[top : top + new_h, left : left + new_w] = np.asarray(small, dtype=np.float32) / 255.0
    return out
