"""Exact image<->text retrieval Recall@K over a whole split, computed in tiles so memory stays bounded.

Default protocol: one-to-one, as the paper and open_clip's ``get_clip_metrics``: every pair's caption is its own
gallery entry and a query is correct only when its own pair is retrieved, even when another figure carries the
very same caption. Caption merging is opt-in (``merge=True`` / ``--merge-captions``): captions equal after
collapsing whitespace become one text entry, and a text query is then correct when ANY image carrying it is
retrieved.

Scores: a score is the float64 dot product of the float32 embeddings rounded to float32, the positive's as
well as the gallery's, so it does not depend on the tile it was computed in and identical embeddings (duplicate
captions, duplicate images) tie exactly. Tiles are multiplied in float32; a float32 product can differ from that
score by at most ``(D + 1) * 2**-24 * |a| * |b|`` (the dot-product rounding bound), so only the gallery items
within twice that bound of a query's threshold are recomputed exactly. Exact ties are ordered by gallery index,
as a stable descending sort does: the rank of a query is the number of wrong items scoring higher than its best
correct item plus the wrong items scoring the same and standing earlier in the gallery. open_clip sorts with
``torch.argsort`` (not stable), which orders exact ties this way for short rows and arbitrarily for longer ones.

Memory: the embeddings plus one ``query_chunk x gallery_chunk`` float32 tile (default 4096 x 16384 = 256 MiB).
Fewer than 10 pairs (or texts) give Recall@K values that mean little: the result then carries a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_KS = (1, 5, 10)
MIN_ITEMS = 10


@dataclass(frozen=True)
class RetrievalConfig:
    """Settings of a retrieval evaluation (defaults = the paper's protocol: one-to-one R@1/5/10 on the split)."""

    ks: tuple[int, ...] = DEFAULT_KS
    merge_captions: bool = False
    query_chunk: int = 4096
    gallery_chunk: int = 16384
    min_tokens: int = 0  # score only the pairs whose caption has at least this many tokens (``long_captions``)


def normalize_caption(caption: str) -> str:
    """The key under which captions are merged: whitespace collapsed, case kept."""
    return " ".join(caption.split())


def group_captions(captions: Sequence[str], merge: bool = False) -> tuple[list[str], np.ndarray]:
    """Map each pair's caption to a text-gallery entry (one per pair unless ``merge``).

    Returns:
        ``(texts, text_index)`` where ``text_index[i]`` is the gallery entry of pair ``i``'s caption.
    """
    if not merge:
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


EXACT_CHUNK = 65536  # exact recomputations per step (bounds the float64 gather to 65536 x D x 16 bytes)


def _exact(images: np.ndarray, texts: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The canonical scores of the pairs (rows[k], cols[k]): float64 dot products rounded to float32."""
    out = np.empty(rows.size, dtype=np.float32)
    for start in range(0, rows.size, EXACT_CHUNK):
        r, c = rows[start : start + EXACT_CHUNK], cols[start : start + EXACT_CHUNK]
        out[start : start + EXACT_CHUNK] = np.einsum(
            "nd,nd->n", images[r].astype(np.float64), texts[c].astype(np.float64)
        ).astype(np.float32)
    return out


def _close_calls(
    scores: np.ndarray, threshold: np.ndarray, margin: float, exact: tuple[np.ndarray, np.ndarray, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Entries of a tile surely above ``threshold``, and the (row, col, exact score) of those too close to call.

    ``exact`` is ``(images, texts, q0, g0)``: the embeddings and the tile's first row and column.
    """
    images, texts, q0, g0 = exact
    above = scores > threshold + margin
    rows, cols = np.nonzero((scores >= threshold - margin) & ~above)
    return above, rows, cols, _exact(images, texts, q0 + rows, g0 + cols)


def retrieval_ranks(
    image_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    text_index: np.ndarray | None = None,
    *,
    query_chunk: int = 4096,
    gallery_chunk: int = 16384,
) -> tuple[np.ndarray, np.ndarray]:
    """0-based rank of the best correct item for every image query and every text query (exact, tiled).

    Args:
        image_embeddings: (N, D) L2-normalised image embeddings.
        text_embeddings: (T, D) L2-normalised text embeddings (T = N one-to-one, T <= N with merged captions).
        text_index: (N,) text entry of each image's caption (default: pair i <-> text i).
        query_chunk: image rows per tile.
        gallery_chunk: text columns per tile.

    Returns:
        ``(image_to_text_ranks (N,), text_to_image_ranks (T,))``; ties ordered by gallery index (module doc).
    """
    images = np.ascontiguousarray(image_embeddings, dtype=np.float32)
    texts = np.ascontiguousarray(text_embeddings, dtype=np.float32)
    n = images.shape[0]
    text_index = np.arange(n, dtype=np.int64) if text_index is None else np.asarray(text_index, dtype=np.int64)
    _check(images, texts, text_index)
    positive = _exact(images, texts, np.arange(n), text_index)
    # Each text's best correct image, and the first image (gallery order) reaching that score.
    best = np.full(texts.shape[0], -np.inf, dtype=np.float32)
    np.maximum.at(best, text_index, positive)
    reaching = np.flatnonzero(positive == best[text_index])
    first = np.full(texts.shape[0], n, dtype=np.int64)
    np.minimum.at(first, text_index[reaching], reaching)
    # Twice the float32 dot-product error bound, so a float32 score beyond it is on the same side as the exact one.
    norms = [float(np.linalg.norm(x, axis=1).max(initial=0.0)) for x in (images, texts)]
    margin = 2 * (images.shape[1] + 2) * 2.0**-24 * norms[0] * norms[1]
    image_ranks = np.zeros(n, dtype=np.int64)
    text_ranks = np.zeros(texts.shape[0], dtype=np.int64)
    for q0 in range(0, n, query_chunk):
        q = slice(q0, q0 + query_chunk)
        for g0 in range(0, texts.shape[0], gallery_chunk):
            g = slice(g0, g0 + gallery_chunk)
            scores = images[q] @ texts[g].T
            columns = np.arange(g0, g0 + scores.shape[1])
            # The correct (image, text) pairs never count against either side: mask them out.
            scores[text_index[q, None] == columns[None, :]] = -np.inf
            tile = (images, texts, q0, g0)
            above, rows, cols, close = _close_calls(scores, positive[q, None], margin, tile)
            ahead = (close > positive[q0 + rows]) | (
                (close == positive[q0 + rows]) & (g0 + cols < text_index[q0 + rows])
            )
            image_ranks[q] += np.count_nonzero(above, axis=1) + np.bincount(rows[ahead], minlength=above.shape[0])
            above, rows, cols, close = _close_calls(scores, best[None, g], margin, tile)
            ahead = (close > best[g0 + cols]) | ((close == best[g0 + cols]) & (q0 + rows < first[g0 + cols]))
            text_ranks[g] += np.count_nonzero(above, axis=0) + np.bincount(cols[ahead], minlength=above.shape[1])
    return image_ranks, text_ranks


def recall_at_k(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Fraction of queries whose best correct item ranks within the top K, for each K."""
    ranks = np.asarray(ranks)
    return {f"R@{k}": float(np.mean(ranks < k)) if ranks.size else 0.0 for k in ks}


def small_gallery_warning(n_images: int, n_texts: int) -> str | None:
    """The warning for a gallery too small for Recall@K to mean much (fewer than 10 images or texts)."""
    smallest = min(n_images, n_texts)
    if smallest >= MIN_ITEMS:
        return None
    return (
        f"retrieval over {n_images} images and {n_texts} texts: with fewer than {MIN_ITEMS} items Recall@K "
        f"means little (R@K is 1.0 by construction for K >= {smallest})"
    )


def evaluate_retrieval(
    image_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    text_index: np.ndarray | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    query_chunk: int = 4096,
    gallery_chunk: int = 16384,
) -> dict:
    """Image->text and text->image Recall@K, the query counts and any warning, as a JSON-ready dict."""
    image_ranks, text_ranks = retrieval_ranks(
        image_embeddings, text_embeddings, text_index, query_chunk=query_chunk, gallery_chunk=gallery_chunk
    )
    i2t = recall_at_k(image_ranks, ks)
    t2i = recall_at_k(text_ranks, ks)
    metrics = {f"image_to_text_{k}": v for k, v in i2t.items()} | {f"text_to_image_{k}": v for k, v in t2i.items()}
    metrics["mean_recall"] = float(np.mean([*i2t.values(), *t2i.values()]))
    metrics["n_images"] = int(image_ranks.size)
    metrics["n_texts"] = int(text_ranks.size)
    warning = small_gallery_warning(metrics["n_images"], metrics["n_texts"])
    if warning:
        metrics["warnings"] = [warning]
    return metrics
