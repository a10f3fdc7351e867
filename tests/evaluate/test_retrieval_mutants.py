"""Retrieval cases that mutation testing showed untested (docs/MUTATION.md); expectations worked out by hand or by
a numpy brute force, never from the code under test."""

from __future__ import annotations

import numpy as np
import pytest

from biomedclip.evaluate.retrieval import evaluate_retrieval, group_captions, normalize_caption, recall_at_k


def test_merged_captions_ignore_whitespace_runs_inside_and_index_the_gallery() -> None:
    assert normalize_caption(" Chest  X-ray,\n\tfrontal view ") == "Chest X-ray, frontal view"
    texts, index = group_captions(["Chest  X-ray", "Chest X-ray", "chest X-ray"], merge=True)
    assert texts == ["Chest X-ray", "chest X-ray"]  # case kept
    assert index.dtype.kind == "i" and np.array(texts)[index].tolist() == ["Chest X-ray", "Chest X-ray", "chest X-ray"]


# Three pairs worked out by hand: image 1 scores its own text 1 and text 0 equally (0.96), and text 0 comes first;
# text 0 scores images 0.6, 0.96, 0.8, so its own image 0 ranks third. Ranks: images [0, 1, 0], texts [2, 0, 0].
IMAGES = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], dtype=np.float32)
TEXTS = np.array([[0.6, 0.8], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)


def test_requested_ks_and_their_mean() -> None:
    got = evaluate_retrieval(IMAGES, TEXTS, ks=(1, 2))
    recalls = {key: value for key, value in got.items() if "_R@" in key}
    assert recalls == pytest.approx(
        {"image_to_text_R@1": 2 / 3, "image_to_text_R@2": 1.0, "text_to_image_R@1": 2 / 3, "text_to_image_R@2": 2 / 3}
    )
    assert got["mean_recall"] == pytest.approx((2 / 3 + 1 + 2 / 3 + 2 / 3) / 4)
    assert got["n_images"] == 3 == got["n_texts"]


def test_no_queries_recall_nothing() -> None:
    assert recall_at_k(np.array([], dtype=np.int64), (1, 5)) == {"R@1": 0.0, "R@5": 0.0}


def test_chunk_sizes_reach_the_ranking(monkeypatch) -> None:
    from biomedclip.evaluate import retrieval

    seen = []
    real = retrieval.retrieval_ranks

    def spy(*args, **kwargs):
        seen.append((kwargs["query_chunk"], kwargs["gallery_chunk"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(retrieval, "retrieval_ranks", spy)
    evaluate_retrieval(IMAGES, TEXTS, query_chunk=2, gallery_chunk=1)
    assert seen == [(2, 1)]


def test_bad_inputs_name_the_problem() -> None:
    from biomedclip.evaluate.retrieval import retrieval_ranks

    x = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match=r"^embeddings must be 2-D arrays$"):
        retrieval_ranks(np.ones(3, np.float32), x)
    with pytest.raises(ValueError, match=r"^embeddings must be 2-D arrays$"):
        retrieval_ranks(x, np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"^text_index must hold one text entry per image$"):
        retrieval_ranks(x, x, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"^text_index points outside the text gallery$"):
        retrieval_ranks(x, x, np.array([0, 1, 3]))  # 3 is one past the last text
    with pytest.raises(ValueError, match=r"^every text must belong to at least one image$"):
        retrieval_ranks(x, x, np.array([0, 0, 1]))


def test_empty_split_has_no_ranks() -> None:
    from biomedclip.evaluate.retrieval import retrieval_ranks

    image_ranks, text_ranks = retrieval_ranks(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32))
    assert image_ranks.shape == (0,) and text_ranks.shape == (0,)


def test_float64_embeddings_are_scored_as_float32() -> None:
    """Text 0 scores 1 - 1e-12 for image 1, its own text 1 scores 1: equal once in float32, the precision of the
    embeddings, so text 0 ties and, earlier in the gallery, stands ahead (rank 1, not 0)."""
    from biomedclip.evaluate.retrieval import retrieval_ranks

    images = np.array([[0.0, 1.0], [1.0, 0.0]])
    texts = np.array([[1.0 - 1e-12, 0.0], [1.0, 0.0]])
    image_ranks, text_ranks = retrieval_ranks(images, texts)
    assert image_ranks[1] == 1
    assert image_ranks.dtype == np.int64 == text_ranks.dtype  # ranks are counts
