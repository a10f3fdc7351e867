"""Retrieval against open_clip's ``get_clip_metrics`` (one-to-one) and a numpy brute force (merged captions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from open_clip_train import train as open_clip_train

from biomedclip.evaluate.retrieval import (
    evaluate_retrieval,
    group_captions,
    recall_at_k,
    retrieval_ranks,
    small_gallery_warning,
)


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Paired embeddings with a weak signal, duplicate captions (identical text rows) and duplicate images."""
    rng = np.random.default_rng(seed)
    images = _unit(rng, n, 16)
    texts = images + 1.2 * _unit(rng, n, 16)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    for a, b in rng.choice(n, size=(n // 4, 2), replace=False):
        texts[b] = texts[a]  # "Chest X-ray." twice: exact ties on the text side
    for a, b in rng.choice(n, size=(n // 8, 2), replace=False):
        images[b] = images[a]  # the same figure twice: exact ties on the image side
    return images, texts


def _open_clip(images: np.ndarray, texts: np.ndarray) -> dict:
    return open_clip_train.get_clip_metrics(torch.from_numpy(images), torch.from_numpy(texts), torch.tensor(1.0))


def _assert_equal_to_open_clip(ours: dict, theirs: dict) -> None:
    for direction in ("image_to_text", "text_to_image"):
        for k in (1, 5, 10):
            assert ours[f"{direction}_R@{k}"] == theirs[f"{direction}_R@{k}"], (direction, k)


@pytest.mark.parametrize("seed", range(6))
def test_short_galleries_equal_open_clip_exactly(seed: int) -> None:
    # torch.argsort orders exact ties by index for rows of up to 16 items: open_clip's own numbers, unpatched.
    images, texts = _planted(16, seed)
    assert (images @ texts.T == np.diag(images @ texts.T)[:, None]).sum() > 16  # ties are really there
    _assert_equal_to_open_clip(evaluate_retrieval(images, texts), _open_clip(images, texts))


@pytest.mark.parametrize(("query_chunk", "gallery_chunk"), [(7, 11), (64, 5), (1, 300), (1000, 1000)])
def test_planted_ties_equal_open_clip_with_a_stable_sort(monkeypatch, query_chunk: int, gallery_chunk: int) -> None:
    # For longer rows torch.argsort orders ties arbitrarily; with stable=True it is a fixed, documented order.
    monkeypatch.setattr(torch, "argsort", lambda x, **kw: torch.sort(x, stable=True, **kw).indices)
    images, texts = _planted(300, 1)
    theirs = _open_clip(images, texts)
    ours = evaluate_retrieval(images, texts, query_chunk=query_chunk, gallery_chunk=gallery_chunk)
    _assert_equal_to_open_clip(ours, theirs)
    untiled = evaluate_retrieval(images, texts, query_chunk=10_000, gallery_chunk=10_000)
    assert ours == untiled
    assert 0.1 < ours["image_to_text_R@1"] < ours["image_to_text_R@10"] < 1


def test_a_duplicate_caption_ties_and_the_earlier_entry_wins() -> None:
    # images 0 and 1 carry the same caption (identical text rows): each image scores both texts equally.
    images = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], dtype=np.float32)
    texts = np.array([[0.6, 0.8], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    image_ranks, text_ranks = retrieval_ranks(images, texts)
    assert image_ranks.tolist() == [0, 1, 0]  # image 1: text 0 ties with its own text 1 and stands first
    assert text_ranks.tolist() == [2, 0, 0]  # text 0 scores images 0.6, 0.96, 0.8: its image 0 comes last
    reference = _open_clip(images, texts)
    assert reference["image_to_text_R@1"] == pytest.approx(2 / 3) == reference["text_to_image_R@1"]


def _naive_merged(images: np.ndarray, texts: np.ndarray, text_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank of the first correct item in a stable descending sort of the float64 scores rounded to float32."""
    sims = (images.astype(np.float64) @ texts.astype(np.float64).T).astype(np.float32)
    image_ranks = [np.argsort(-sims[i], kind="stable").tolist().index(text_index[i]) for i in range(len(images))]
    text_ranks = []
    for t in range(len(texts)):
        order = np.argsort(-sims[:, t], kind="stable")
        text_ranks.append(int(np.flatnonzero(text_index[order] == t)[0]))
    return np.array(image_ranks), np.array(text_ranks)


@pytest.mark.parametrize(("query_chunk", "gallery_chunk"), [(7, 11), (64, 5), (1000, 1000)])
def test_merged_captions_equal_a_brute_force(query_chunk: int, gallery_chunk: int) -> None:
    rng = np.random.default_rng(0)
    captions = [f"caption {i % 70}" for i in range(150)]  # 80 images share a caption with another image
    unique, text_index = group_captions(captions, merge=True)
    assert len(unique) == 70
    images = _unit(rng, 150, 24)
    images[100] = images[30]  # an exact tie on the image side, for a text with several correct images
    texts = _unit(rng, 70, 24) + 0.6 * np.stack([images[text_index == t].mean(0) for t in range(70)])
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    got = retrieval_ranks(images, texts, text_index, query_chunk=query_chunk, gallery_chunk=gallery_chunk)
    want = _naive_merged(images, texts, text_index)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    metrics = evaluate_retrieval(images, texts, text_index, query_chunk=query_chunk, gallery_chunk=gallery_chunk)
    assert metrics["n_images"] == 150 and metrics["n_texts"] == 70 and "warnings" not in metrics
    for k in (1, 5, 10):
        assert metrics[f"image_to_text_R@{k}"] == np.mean(want[0] < k)
        assert metrics[f"text_to_image_R@{k}"] == np.mean(want[1] < k)


def test_group_captions_is_one_to_one_unless_merged() -> None:
    texts, index = group_captions(["a", "a  ", "b"])
    assert texts == ["a", "a  ", "b"] and index.tolist() == [0, 1, 2]
    texts, index = group_captions(["a", "a  ", "b"], merge=True)
    assert texts == ["a", "b"] and index.tolist() == [0, 0, 1]


def test_fewer_than_ten_items_warn() -> None:
    rng = np.random.default_rng(2)
    x = _unit(rng, 10, 8)
    assert "warnings" not in evaluate_retrieval(x, x)  # exactly 10: no warning
    nine = evaluate_retrieval(x[:9], x[:9])
    assert len(nine["warnings"]) == 1 and "fewer than 10" in nine["warnings"][0]
    assert small_gallery_warning(1, 1) is not None and small_gallery_warning(12, 9) is not None
    assert small_gallery_warning(10, 10) is None


def test_recall_and_input_errors() -> None:
    assert recall_at_k(np.array([0, 3, 9, 10]), (1, 5, 10)) == {"R@1": 0.25, "R@5": 0.5, "R@10": 0.75}
    x = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="widths differ"):
        retrieval_ranks(x, np.eye(3, 4, dtype=np.float32))
    with pytest.raises(ValueError, match="at least one image"):
        retrieval_ranks(x, x, np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="outside"):
        retrieval_ranks(x, x, np.array([0, 1, 5]))


def test_cli_prints_the_small_gallery_warning(tmp_path, shards_root) -> None:
    from click.testing import CliRunner

    from biomedclip.evaluate.cli import eval_group

    args = ["retrieval", "--model", "tiny", "--dataset", str(shards_root), "--out", str(tmp_path), "--device", "cpu"]
    result = CliRunner().invoke(eval_group, [*args, "--max-items", "9"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "warning: retrieval over 9 images and 9 texts" in result.output
    (path,) = tmp_path.glob("retrieval__*.result.json")
    assert "fewer than 10" in path.read_text()


def test_training_validation_is_one_to_one(toy, shards_root) -> None:
    from types import SimpleNamespace

    from biomedclip.train.evaluation import _retrieval

    model, tokenizer, transform = toy
    config = SimpleNamespace(
        data=SimpleNamespace(image_key="jpg", text_key="txt", val_num_samples=None), eval=SimpleNamespace(batch_size=4)
    )
    urls = sorted(str(p) for p in shards_root.glob("test-*.tar"))
    metrics = _retrieval(model, urls, transform, tokenizer, config)
    assert metrics["val_n_images"] == metrics["val_n_texts"] == 12  # two equal captions stay two texts
