"""Tiled exact retrieval against a naive full-matrix computation with arg-sorts."""

from __future__ import annotations

import numpy as np
import pytest

from biomedclip.evaluate.retrieval import evaluate_retrieval, group_captions, recall_at_k, retrieval_ranks


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _naive_ranks(images: np.ndarray, texts: np.ndarray, text_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sims = images.astype(np.float64) @ texts.astype(np.float64).T
    image_ranks = np.array([np.argsort(-sims[i]).tolist().index(text_index[i]) for i in range(len(images))])
    text_ranks = []
    for t in range(len(texts)):
        order = np.argsort(-sims[:, t])
        text_ranks.append(int(np.flatnonzero(text_index[order] == t)[0]))
    return image_ranks, np.array(text_ranks)


@pytest.mark.parametrize(("query_chunk", "gallery_chunk"), [(7, 11), (64, 5), (1000, 1000)])
def test_tiled_ranks_equal_naive_with_duplicate_captions(query_chunk: int, gallery_chunk: int) -> None:
    rng = np.random.default_rng(0)
    captions = [f"caption {i % 70}" for i in range(150)]  # 80 images share a caption with another image
    unique, text_index = group_captions(captions)
    assert len(unique) == 70
    images = _unit(rng, 150, 24)
    texts = _unit(rng, 70, 24)
    texts = texts + 0.6 * np.stack([images[text_index == t].mean(0) for t in range(70)])  # weak true signal
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    got = retrieval_ranks(images, texts, text_index, query_chunk=query_chunk, gallery_chunk=gallery_chunk)
    want = _naive_ranks(images, texts, text_index)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    metrics = evaluate_retrieval(images, texts, text_index, query_chunk=query_chunk, gallery_chunk=gallery_chunk)
    for k in (1, 5, 10):
        assert metrics[f"image_to_text_R@{k}"] == pytest.approx(np.mean(want[0] < k))
        assert metrics[f"text_to_image_R@{k}"] == pytest.approx(np.mean(want[1] < k))
    assert 0 < metrics["image_to_text_R@1"] < metrics["image_to_text_R@10"] < 1


def test_identical_pairs_give_perfect_recall_and_reversed_give_zero() -> None:
    rng = np.random.default_rng(1)
    x = _unit(rng, 50, 64)
    perfect = evaluate_retrieval(x, x, np.arange(50), query_chunk=8, gallery_chunk=8)
    assert perfect["image_to_text_R@1"] == 1.0 and perfect["text_to_image_R@1"] == 1.0
    assert perfect["n_images"] == perfect["n_texts"] == 50
    anti = evaluate_retrieval(x, -x, np.arange(50))
    assert anti["image_to_text_R@10"] == 0.0 and anti["text_to_image_R@10"] == 0.0


def test_duplicate_caption_counts_any_matching_image() -> None:
    # two images share caption "a"; image 1 matches it best: the text query "a" is correct at rank 0.
    images = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    unique, text_index = group_captions(["a", "a  ", "b"])
    assert unique == ["a", "b"] and text_index.tolist() == [0, 0, 1]
    texts = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    image_ranks, text_ranks = retrieval_ranks(images, texts, text_index)
    assert image_ranks.tolist() == [1, 0, 1]
    assert text_ranks.tolist() == [0, 1]
    raw, raw_index = group_captions(["a", "a", "b"], dedupe=False)
    assert raw == ["a", "a", "b"] and raw_index.tolist() == [0, 1, 2]


def test_recall_and_input_errors() -> None:
    assert recall_at_k(np.array([0, 3, 9, 10]), (1, 5, 10)) == {"R@1": 0.25, "R@5": 0.5, "R@10": 0.75}
    x = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="widths differ"):
        retrieval_ranks(x, np.eye(3, 4, dtype=np.float32), np.arange(3))
    with pytest.raises(ValueError, match="at least one image"):
        retrieval_ranks(x, x, np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="outside"):
        retrieval_ranks(x, x, np.array([0, 1, 5]))
