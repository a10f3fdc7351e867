"""Run under torchrun (CPU ranks, gloo): each rank computes our ClipLoss and open_clip's on its slice of a fixed global
batch in all four gather modes, plus ours with duplicate captions, and saves values and input gradients to
``argv[1]/rank<R>.pt``. Used by test_loss_distributed.py."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from open_clip.loss import ClipLoss as OpenClipLoss

from biomedclip.train.loss import ClipLoss

GLOBAL_BATCH = 12
CAPTIONS = [0, 1, 0, 2, 1, 0, 3, 1, 0, 4, 2, 0]  # caption of each item: copies within and across ranks


def global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    image = F.normalize(torch.randn(GLOBAL_BATCH, 8, generator=generator, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(GLOBAL_BATCH, 8, generator=generator, dtype=torch.float64), dim=-1)
    return image, text, torch.tensor(9.5, dtype=torch.float64)


def run(loss_fn, image, text, scale, **kwargs) -> dict[str, torch.Tensor]:
    leaves = [t.clone().requires_grad_() for t in (image, text, scale)]
    loss = loss_fn(*leaves, **kwargs)
    loss.backward()
    return {"loss": loss.detach(), "image": leaves[0].grad, "text": leaves[1].grad, "scale": leaves[2].grad}


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    image, text, scale = global_batch()
    per_rank = GLOBAL_BATCH // world
    local = slice(rank * per_rank, (rank + 1) * per_rank)
    ids = torch.tensor(CAPTIONS[local])
    results = {}
    for local_loss in (False, True):
        for with_grad in (False, True):
            mode = f"local={local_loss},grad={with_grad}"
            ours = ClipLoss(local_loss=local_loss, gather_with_grad=with_grad)
            theirs = OpenClipLoss(local_loss=local_loss, gather_with_grad=with_grad, rank=rank, world_size=world)
            results[f"ours {mode}"] = run(ours, image[local], text[local], scale)
            results[f"open_clip {mode}"] = run(theirs, image[local], text[local], scale)
            results[f"masked {mode}"] = run(ours, image[local], text[local], scale, caption_ids=ids)
    torch.save(results, Path(sys.argv[1]) / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
