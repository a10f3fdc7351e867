"""Retrieval cases that mutation testing showed untested (docs/MUTATION.md); expectations worked out by hand or by
a numpy brute force, never from the code under test."""

from __future__ import annotations

import numpy as np

from biomedclip.evaluate.retrieval import group_captions, normalize_caption


def test_merged_captions_ignore_whitespace_runs_inside_and_index_the_gallery() -> None:
    assert normalize_caption(" Chest  X-ray,\n\tfrontal view ") == "Chest X-ray, frontal view"
    texts, index = group_captions(["Chest  X-ray", "Chest X-ray", "chest X-ray"], merge=True)
    assert texts == ["Chest X-ray", "chest X-ray"]  # case kept
    assert index.dtype.kind == "i" and np.array(texts)[index].tolist() == ["Chest X-ray", "Chest X-ray", "chest X-ray"]
