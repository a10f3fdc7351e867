"""Dedup: exact and perceptual duplicates, deterministic kept figure, clusters."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from biomedclip.corpus.dedup import DedupConfig, Fingerprint, find_duplicates
from biomedclip.corpus.images import process_image

JPG = "pmc/packages/extracted/PMC10487465/PMC10487465/ijms-24-13282-g00{}.jpg"


def _fingerprint(key: str, data: bytes) -> Fingerprint:
    image = process_image(data)
    return Fingerprint(key, image.sha256, image.phash)


def _variant(data: bytes) -> bytes:
    """The same figure re-encoded smaller and slightly brighter: a near duplicate, not an exact one."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img = ImageEnhance.Brightness(img.resize((img.width // 2, img.height // 2))).enhance(1.05)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=70)
    return buf.getvalue()


def test_exact_and_near_duplicates_on_real_figures(shared_fixtures: Path) -> None:
    one = (shared_fixtures / JPG.format(1)).read_bytes()
    two = (shared_fixtures / JPG.format(2)).read_bytes()
    three = (shared_fixtures / JPG.format(3)).read_bytes()
    figures = [
        _fingerprint("PMC2_f1", one),
        _fingerprint("PMC1_f9", one),  # exact copy in another article
        _fingerprint("PMC3_f2", _variant(two)),
        _fingerprint("PMC1_f2", two),
        _fingerprint("PMC1_f3", three),
    ]
    clusters = find_duplicates(figures)
    assert [(c.kept, c.duplicates, c.kind) for c in clusters] == [
        ("PMC1_f2", ("PMC3_f2",), "near"),
        ("PMC1_f9", ("PMC2_f1",), "exact"),
    ]
    random.Random(0).shuffle(figures)
    assert find_duplicates(figures) == clusters  # the kept figure does not depend on order


def test_distance_threshold_and_transitive_clusters() -> None:
    base = 0x0F0F0F0F0F0F0F0F
    hashes = {"a": base, "b": base ^ 0b111, "c": base ^ 0b111 ^ (0b111 << 20), "d": ~base & (2**64 - 1)}
    figures = [Fingerprint(k, k, f"{v:016x}") for k, v in hashes.items()]
    clusters = find_duplicates(figures, DedupConfig(max_distance=4))
    assert [(c.kept, c.duplicates) for c in clusters] == [("a", ("b", "c"))]  # c joins through b (6 bits from a)
    assert find_duplicates(figures, DedupConfig(max_distance=2)) == []


def test_distinct_random_images_are_not_merged() -> None:
    rng = np.random.default_rng(1)
    figures = []
    for i in range(40):
        img = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        figures.append(_fingerprint(f"k{i:02d}", buf.getvalue()))
    assert find_duplicates(figures) == []
