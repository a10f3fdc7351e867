"""Exact image<->text retrieval Recall@K over a whole split, computed in tiles so memory stays bounded.

Duplicate captions: many figures share a caption string (e.g. "Chest X-ray."). By default captions are
deduplicated (exact match after collapsing whitespace), so the text side holds one entry per unique caption
and several images may point to the same text. Then
  * image->text: a query image is correct at K when its caption is among the K best unique captions;
  * text->image: a query caption is correct at K when ANY image carrying that caption is among the K best images.
A non-matching caption that occurs twice therefore pushes a correct answer down one rank, not two, and no
query is penalised for retrieving an equally correct duplicate. With ``dedupe_captions=False`` every caption
is its own entry and only the paired item counts (CLIP_benchmark's one-to-one protocol).

Ranks count the wrong items scoring strictly higher than the best correct one (ties favour the query).
Memory: the embeddings plus one ``query_chunk x gallery_chunk`` float32 tile (default 4096 x 16384 = 256 MiB).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_KS = (1, 5, 10)


@dataclass(frozen=True)
class RetrievalConfig:
    """Settings of a retrieval evaluation (defaults = the paper's protocol: R@1/5/10 on the whole split)."""

    ks: tuple[int, ...] = DEFAULT_KS
    dedupe_captions: bool = True
    query_chunk: int = 4096
    gallery_chunk: int = 16384


def normalize_caption(caption: str) -> str:
    """The key under which captions count as duplicates: whitespace collapsed, case kept."""
    return " ".join(caption.split())


def group_captions(captions: Sequence[str], dedupe: bool = True) -> tuple[list[str], np.ndarray]:
    """Map each pair's caption to a text-gallery entry.

    Returns:
        ``(unique_texts, text_index)`` where ``text_index[i]`` is the gallery entry of pair ``i``'s caption.
    """
    if not dedupe:
        return list(captions), np.arange(len(captions), dtype=np.int64)
    index: dict[str, int] = {}
    text_index = np.empty(len(captions), dtype=np.int64)
    for i, caption in enumerate(captions):
        text_index[i] = index.setdefault(normalize_caption(caption), len(index))
    return list(index), text_index


def _check(image_embeddings: np.ndarray, text_embeddings: np.ndarray, text_index: np.ndarray) -> None:
    if image_embeddings.ndim != 2 or text_embeddings.ndim != 2:
        raise ValueError("embeddings must be 2-D arrays")
    if image_embeddings.shape[1] != text_embeddings.shape[1]:
        raise ValueError(f"embedding widths differ: {image_embeddings.shape[1]} vs {text_embeddings.shape[1]}")
    if text_index.shape != (image_embeddings.shape[0],):
        raise ValueError("text_index must hold one text entry per image")
    if text_index.size and (text_index.min() < 0 or text_index.max() >= text_embeddings.shape[0]):
        raise ValueError("text_index points outside the text gallery")
    if np.bincount(text_index, minlength=text_embeddings.shape[0]).min(initial=1) == 0:
        raise ValueError("every text must belong to at least one image")


def retrieval_ranks(
    image_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    text_index: np.ndarray,
    *,
    query_chunk: int = 4096,
    gallery_chunk: int = 16384,
) -> tuple[np.ndarray, np.ndarray]:
    """0-based rank of the best correct item for every image query and every text query (exact, tiled).

    Args:
        image_embeddings: (N, D) L2-normalised image embeddings.
        text_embeddings: (T, D) L2-normalised text embeddings (T <= N when captions are deduplicated).
        text_index: (N,) text entry of each image's caption; every text has at least one image.
        query_chunk: image rows per tile.
        gallery_chunk: text columns per tile.

    Returns:
        ``(image_to_text_ranks (N,), text_to_image_ranks (T,))``.
    """
    images = np.ascontiguousarray(image_embeddings, dtype=np.float32)
    texts = np.ascontiguousarray(text_embeddings, dtype=np.float32)
    text_index = np.asarray(text_index, dtype=np.int64)
    _check(images, texts, text_index)
    # Score of each image with its own caption, then each caption's best image, in O(N * D).
    positive = np.einsum("nd,nd->n", images, texts[text_index])
    best_positive = np.full(texts.shape[0], -np.inf, dtype=np.float32)
    np.maximum.at(best_positive, text_index, positive)
    image_ranks = np.zeros(images.shape[0], dtype=np.int64)
    text_ranks = np.zeros(texts.shape[0], dtype=np.int64)
    for q0 in range(0, images.shape[0], query_chunk):
        q = slice(q0, q0 + query_chunk)
        for g0 in range(0, texts.shape[0], gallery_chunk):
            g = slice(g0, g0 + gallery_chunk)
            scores = images[q] @ texts[g].T
            # The correct (image, text) pairs of this tile never count against either side: mask them out.
            columns = text_index[q] - g0
            inside = (columns >= 0) & (columns < scores.shape[1])
            scores[np.flatnonzero(inside), columns[inside]] = -np.inf
            image_ranks[q] += np.count_nonzero(scores > positive[q, None], axis=1)
            text_ranks[g] += np.count_nonzero(scores > best_positive[None, g], axis=0)
    return image_ranks, text_ranks


def recall_at_k(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Fraction of queries whose best correct item ranks within the top K, for each K."""
    ranks = np.asarray(ranks)
    return {f"R@{k}": float(np.mean(ranks < k)) if ranks.size else 0.0 for k in ks}


def evaluate_retrieval(
    image_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    text_index: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    query_chunk: int = 4096,
    gallery_chunk: int = 16384,
) -> dict:
    """Image->text and text->image Recall@K plus the query counts, as a JSON-ready dict."""
    image_ranks, text_ranks = retrieval_ranks(
        image_embeddings, text_embeddings, text_index, query_chunk=query_chunk, gallery_chunk=gallery_chunk
    )
    i2t = recall_at_k(image_ranks, ks)
    t2i = recall_at_k(text_ranks, ks)
    metrics = {f"image_to_text_{k}": v for k, v in i2t.items()} | {f"text_to_image_{k}": v for k, v in t2i.items()}
    metrics["mean_recall"] = float(np.mean([*i2t.values(), *t2i.values()]))
    metrics["n_images"] = int(image_ranks.size)
    metrics["n_texts"] = int(text_ranks.size)
    return metrics
