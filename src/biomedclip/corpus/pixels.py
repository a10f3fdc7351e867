"""Pixel fingerprints that confirm a perceptual-hash match: a tiny grey thumbnail per image and a distance.

A 64-bit perceptual hash says two images *may* be copies; medical images of one modality (chest X-rays, MRI
slices, blood smears) often lie within a few bits of each other while being different images. A candidate
pair is therefore confirmed on pixels: each image keeps a ``THUMB_SIDE`` x ``THUMB_SIDE`` grey thumbnail
(``THUMB_BYTES`` bytes, computed once in phase 1 after trimming a uniform border, so a padded copy gives the
same thumbnail), and two images are copies when the distance of their thumbnails is at most
``MAX_PIXEL_DISTANCE``.

The distance is the root-mean-square difference of the two thumbnails after removing each one's mean and
dividing by its standard deviation (at least ``MIN_STD`` grey levels, so two near-blank panels compare as
flat, not as amplified noise). For images with contrast it equals ``sqrt(2 - 2 r)``, ``r`` their Pearson
correlation, so it ignores brightness and contrast changes (re-compression, grey conversion); it is 0 for
identical thumbnails and about 1.4 for unrelated ones. Size and threshold were chosen by measurement
(``benchmarks/dedup_pixels.py``): distinct real images of one modality vs planted transformed copies.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

THUMB_SIDE = 8
THUMB_BYTES = THUMB_SIDE * THUMB_SIDE
MAX_PIXEL_DISTANCE = 0.25
MIN_STD = 4.0
BORDER_TOLERANCE = 24  # grey levels from the border colour that still count as border (JPEG ringing)


def content(image: Image.Image) -> Image.Image:
    """``image`` without its uniform border (a padded copy and its original give the same content); the whole
    image when it is all border."""
    grey = np.asarray(image.convert("L"))
    edge = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(edge))
    inside = np.abs(grey.astype(np.int16) - background) > BORDER_TOLERANCE
    rows = np.flatnonzero(inside.mean(axis=1) > 0.01)
    cols = np.flatnonzero(inside.mean(axis=0) > 0.01)
    if not len(rows) or not len(cols):
        return image
    return image.crop((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))


def thumbnail(image: Image.Image, side: int = THUMB_SIDE) -> bytes:
    """The ``side`` x ``side`` grey thumbnail of ``image``'s ``content`` (``image`` already trimmed is kept)."""
    return content(image).convert("L").resize((side, side), Image.Resampling.BOX).tobytes()


def normalised(thumbs: np.ndarray) -> np.ndarray:
    """Rows of ``thumbs`` (uint8, one thumbnail per row) centred and scaled: float32, see the module docstring."""
    x = thumbs.astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    std = np.sqrt((x * x).mean(axis=1, keepdims=True))
    return x / np.maximum(std, MIN_STD)


def pair_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of each row of ``a`` to the same row of ``b`` (both ``normalised``)."""
    return np.sqrt(np.mean((a - b) ** 2, axis=1))


def block_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of every row of ``a`` to every row of ``b`` (both ``normalised``), a ``len(a) x len(b)`` matrix."""
    sq = (a * a).mean(axis=1)[:, None] + (b * b).mean(axis=1)[None, :] - 2.0 * (a @ b.T) / a.shape[1]
    return np.sqrt(np.maximum(sq, 0.0))


def distance(a: bytes, b: bytes) -> float:
    """The distance of two thumbnails (``thumbnail`` bytes)."""
    rows = normalised(np.frombuffer(a + b, np.uint8).reshape(2, -1))
    return float(pair_distances(rows[:1], rows[1:])[0])


def parse_thumbs(hexes: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Thumbnails stored as hex (the catalog's ``thumb``; None: none) as uint8 rows, and which are present."""
    present = np.array([h is not None for h in hexes], bool)
    rows = np.zeros((len(hexes), THUMB_BYTES), np.uint8)
    for i in np.flatnonzero(present):
        if len(hexes[i]) != 2 * THUMB_BYTES:
            raise ValueError(f"a thumbnail has {2 * THUMB_BYTES} hex digits, got {len(hexes[i])}")
        rows[i] = np.frombuffer(bytes.fromhex(hexes[i]), np.uint8)
    return rows, present
