"""Synthetic compound figures: deterministic, boxes inside the image and disjoint, labels in order, split honoured."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from biomedclip.panels import synthetic


@pytest.fixture(scope="module")
def sources(shared_fixtures: Path) -> list[Path]:
    found = synthetic.default_sources(shared_fixtures)
    assert len(found) > 20
    return found


def test_same_seed_same_figure(sources):
    a = synthetic.make_figure(random.Random("seed-1"), sources)
    b = synthetic.make_figure(random.Random("seed-1"), sources)
    assert a.boxes == b.boxes and a.labels == b.labels and a.layout == b.layout
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))


@pytest.mark.parametrize("seed", range(6))
def test_boxes_inside_and_disjoint_labels_in_sequence(sources, seed):
    figure = synthetic.make_figure(random.Random(f"check-{seed}"), sources)
    width, height = figure.image.size
    assert len(figure.boxes) == len(figure.labels) >= 1
    for x0, y0, x1, y1 in figure.boxes:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    for i, a in enumerate(figure.boxes):
        for b in figure.boxes[i + 1 :]:
            assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1])
    labels = [label for label in figure.labels if label is not None]
    if labels:
        assert [label.upper() for label in labels] == [chr(ord("A") + i) for i in range(len(labels))]
    row = figure.as_gt_row("x")
    assert row["compound"] == (len(figure.boxes) > 1)
    assert [p["box"] for p in row["panels"]] == [list(b) for b in figure.boxes]


def test_held_out_images_never_train(sources):
    held = {p for p in sources if synthetic.is_held_out(p)}
    assert 0 < len(held) < len(sources)
    # the decision depends on the file name only, so copies of one image elsewhere fall on the same side
    for path in sources:
        assert synthetic.is_held_out(path) == synthetic.is_held_out(Path("/elsewhere") / path.name)


def test_label_styles():
    assert synthetic._label_text("(a)", 1) == ("(b)", "b")
    assert synthetic._label_text("A.", 2) == ("C.", "C")
    assert synthetic._label_text("a", 0) == ("a", "a")
    assert synthetic._label_text("(A)", 3) == ("(D)", "D")
