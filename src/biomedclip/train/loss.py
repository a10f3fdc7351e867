"""The CLIP contrastive (InfoNCE) loss with negatives gathered across ranks.

Own implementation rather than open_clip's ``ClipLoss``: open_clip is not a runtime dependency of the trainer,
and the loss is a few lines over ``torch.distributed.nn.functional.all_gather``, whose backward sums the
gradient of every rank's copy into the owner (it works on gloo as well as NCCL).

Gradient bookkeeping: with ``gather_with_grad`` each rank's features receive the gradient of every rank's
loss; DDP then averages over ranks, so the update equals the single-process gradient on the global batch for
both the full and the local loss (the local losses average to the global loss).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F


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
        self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
    ) -> torch.Tensor:
        """Return the mean of the image-to-text and text-to-image cross-entropies."""
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
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
        return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
