"""The pixel check that confirms a near duplicate: thumbnails and their distance, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from biomedclip.corpus.pixels import (
    MAX_PIXEL_DISTANCE,
    MIN_STD,
    THUMB_BYTES,
    block_distances,
    content,
    distance,
    normalised,
    pair_distances,
    parse_thumbs,
    thumbnail,
)


def _thumb(values) -> bytes:
    return np.asarray(values, np.uint8).reshape(THUMB_BYTES).tobytes()


def test_distance_is_sqrt_two_minus_two_r_for_images_with_contrast() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, THUMB_BYTES)
    b = np.clip(a + rng.normal(0, 40, THUMB_BYTES), 0, 255).astype(int)
    r = np.corrcoef(a, b)[0, 1]
    assert distance(_thumb(a), _thumb(b)) == pytest.approx(np.sqrt(2 - 2 * r), abs=1e-5)
    assert distance(_thumb(a), _thumb(255 - a)) == pytest.approx(2.0, abs=1e-5)  # r = -1
    brighter = np.clip(a // 2 + 60, 0, 255)  # brightness and contrast change: r = 1 up to rounding
    assert distance(_thumb(a), _thumb(brighter)) < 0.02


def test_flat_thumbnails_compare_as_flat_not_as_amplified_noise() -> None:
    flat = np.full(THUMB_BYTES, 200)
    speck = flat.copy()
    speck[0] = 201  # std 0.12 grey levels, below MIN_STD: divided by MIN_STD, not by its own std
    hand = np.sqrt(np.mean(((speck - speck.mean()) / MIN_STD) ** 2))
    assert distance(_thumb(flat), _thumb(speck)) == pytest.approx(hand, abs=1e-6) and hand < 0.05
    textured = np.tile([0, 255], THUMB_BYTES // 2)
    assert distance(_thumb(flat), _thumb(textured)) == pytest.approx(1.0, abs=1e-6)


def test_block_and_pair_distances_agree_with_distance() -> None:
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 256, (5, THUMB_BYTES)).astype(np.uint8)
    z = normalised(rows)
    matrix = block_distances(z, z)
    for i in range(5):
        for j in range(5):
            assert matrix[i, j] == pytest.approx(distance(rows[i].tobytes(), rows[j].tobytes()), abs=1e-3)
    assert pair_distances(z[:3], z[2:]) == pytest.approx([matrix[0, 2], matrix[1, 3], matrix[2, 4]], abs=1e-4)


def test_a_padded_copy_has_the_same_content_and_nearly_the_same_thumbnail() -> None:
    rng = np.random.default_rng(2)
    image = Image.fromarray(rng.integers(40, 216, (60, 80), dtype=np.uint8)).resize((240, 180))
    for colour in (0, 255):
        framed = Image.new("L", (260, 196), colour)
        framed.paste(image, (10, 8))
        assert content(framed).size == image.size
        assert distance(thumbnail(image), thumbnail(framed)) < 0.05
    blank = Image.new("L", (50, 40), 255)
    assert content(blank).size == (50, 40)  # all border: kept whole


def test_thumbnails_parse_from_hex_and_a_wrong_length_is_an_error() -> None:
    rows, present = parse_thumbs([bytes(range(THUMB_BYTES)).hex(), None])
    assert rows[0].tolist() == list(range(THUMB_BYTES)) and rows[1].tolist() == [0] * THUMB_BYTES
    assert present.tolist() == [True, False]
    with pytest.raises(ValueError, match="hex digits"):
        parse_thumbs(["00ff"])


def test_threshold_is_inclusive() -> None:
    """A pair exactly at the limit is a duplicate (``<=``), just above it is not; no thumbnail: the hash decides."""
    from biomedclip.corpus.dedup import ThumbCheck

    base = np.tile([78, 178], THUMB_BYTES // 2).astype(np.uint8)  # mean 128, std 50
    near = base.copy()
    near[0:4:2] += 60  # two dark pixels brighter: r = 0.97798 (numpy.corrcoef), distance sqrt(2 - 2 r) = 0.20986
    at = distance(base.tobytes(), near.tobytes())
    assert at == pytest.approx(0.20986, abs=1e-4) and at < MAX_PIXEL_DISTANCE
    three = base.copy()
    three[0:6:2] += 60  # three of them: r = 0.96733, distance 0.25561, just above the limit 0.25
    above = distance(base.tobytes(), three.tobytes())
    assert above == pytest.approx(0.25561, abs=1e-4) and above > MAX_PIXEL_DISTANCE
    pair = np.stack([base, near])
    assert ThumbCheck(pair, np.ones(2, bool), at)(np.array([0]), np.array([1])).tolist() == [True]
    assert ThumbCheck(pair, np.ones(2, bool), at - 1e-4)(np.array([0]), np.array([1])).tolist() == [False]
    assert ThumbCheck(pair, np.array([True, False]), 0.0)(np.array([0]), np.array([1])).tolist() == [True]
