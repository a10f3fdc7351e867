"""The CLIP contrastive (InfoNCE) loss with negatives gathered across ranks.

Own implementation rather than open_clip's ``ClipLoss``: open_clip is not a runtime dependency of the trainer,
and the loss is a few lines over ``torch.distributed.nn.functional.all_gather``, whose backward sums the
gradient of every rank's copy into the owner (it works on gloo as well as NCCL).

Gradient bookkeeping: with ``gather_with_grad`` each rank's features receive the gradient of every rank's
loss; DDP then averages over ranks, so the update equals the single-process gradient on the global batch for
both the full and the local loss (the local losses average to the global loss).

Duplicate captions (templated corpora such as ``imagefolder:`` sources, where a batch holds few distinct texts):
given ``caption_ids``, an image is not contrasted with the other copies of its own caption, and a caption not
with the other images that carry it. Each item keeps exactly one positive, its own pair, and its duplicates are
removed from its softmax (their logits are set to -inf). Without the rule the copies are negatives that can never
be told apart: the loss cannot fall below ln(copies per caption), whatever the model learns. With all captions
distinct nothing is masked and the loss is open_clip's ``ClipLoss``, value and gradient. With duplicates the value
depends on how many other captions a batch holds (a batch of a single caption scores 0), so the training loss of a
templated corpus moves with the batch make-up; the validation loss stays open_clip's for comparisons.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F

_HASH_WEIGHTS: dict[tuple[int, str], torch.Tensor] = {}


def caption_ids(tokens: torch.Tensor) -> torch.Tensor:
    """One int64 per row of token ids, equal for equal rows (what the model sees of a caption), so that duplicates
    can be found across ranks by gathering ``batch`` numbers instead of ``batch x context`` tokens.

    A fixed random odd-weighted sum of the ids in 64-bit wrap-around arithmetic: distinct rows collide with
    probability ~2^-64.
    """
    key = (tokens.shape[1], str(tokens.device))
    if key not in _HASH_WEIGHTS:
        generator = torch.Generator().manual_seed(0x5EED)
        weights = torch.randint(-(2**62), 2**62, (tokens.shape[1],), generator=generator, dtype=torch.int64) | 1
        _HASH_WEIGHTS[key] = weights.to(tokens.device)
    return (tokens.long() * _HASH_WEIGHTS[key]).sum(dim=1)


def _gather_ids(ids: torch.Tensor) -> torch.Tensor:
    gathered = [torch.zeros_like(ids) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, ids)
    return torch.cat(gathered)


def duplicate_mask(row_ids: torch.Tensor, column_ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """True where row i and column j share a caption but are not the pair itself (column ``i + offset``)."""
    same = row_ids[:, None] == column_ids[None, :]
    rows = torch.arange(row_ids.shape[0], device=row_ids.device)
    same[rows, rows + offset] = False
    return same


def gather_features(
    image_features: torch.Tensor, text_features: torch.Tensor, *, with_grad: bool, local_loss: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """All-gather both feature batches across ranks (rank order), keeping the local gradient path."""
    if with_grad:
        return torch.cat(dist_fn.all_gather(image_features)), torch.cat(dist_fn.all_gather(text_features))
    world_size, rank = dist.get_world_size(), dist.get_rank()
    gathered_image = [torch.zeros_like(image_features) for _ in range(world_size)]
    gathered_text = [torch.zeros_like(text_features) for _ in range(world_size)]
    dist.all_gather(gathered_image, image_features)
    dist.all_gather(gathered_text, text_features)
    if not local_loss:
        # Without gradient through the gather, keep this rank's own rows differentiable.
        gathered_image[rank], gathered_text[rank] = image_features, text_features
    return torch.cat(gathered_image), torch.cat(gathered_text)


class ClipLoss(torch.nn.Module):
    """Symmetric cross-entropy over image-text similarities scaled by the learnable temperature.

    Args:
        local_loss: score only this rank's rows against all gathered columns (memory O(local x global)).
        gather_with_grad: let gradients flow through the all-gather (needed for the exact global gradient).
    """

    def __init__(self, *, local_loss: bool = True, gather_with_grad: bool = True) -> None:
        super().__init__()
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        caption_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return the mean of the image-to-text and text-to-image cross-entropies.

        ``caption_ids`` (one integer per local item, equal for identical captions, e.g. :func:`caption_ids`)
        removes each item's caption duplicates from its softmax (see the module docstring).
        """
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        offset = 0
        if not distributed:
            logits_per_image = logit_scale * image_features @ text_features.T
            logits_per_text = logits_per_image.T
            labels = torch.arange(image_features.shape[0], device=image_features.device)
        else:
            all_image, all_text = gather_features(
                image_features, text_features, with_grad=self.gather_with_grad, local_loss=self.local_loss
            )
            if self.local_loss:
                logits_per_image = logit_scale * image_features @ all_text.T
                logits_per_text = logit_scale * text_features @ all_image.T
                offset = image_features.shape[0] * dist.get_rank()
                labels = torch.arange(image_features.shape[0], device=image_features.device) + offset
            else:
                logits_per_image = logit_scale * all_image @ all_text.T
                logits_per_text = logits_per_image.T
                labels = torch.arange(all_image.shape[0], device=image_features.device)
        if caption_ids is not None:
            columns = _gather_ids(caption_ids) if distributed else caption_ids
            rows = caption_ids if distributed and self.local_loss else columns
            mask = duplicate_mask(rows, columns, offset)
            logits_per_image = logits_per_image.masked_fill(mask, float("-inf"))
            logits_per_text = logits_per_text.masked_fill(mask, float("-inf"))
        return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
