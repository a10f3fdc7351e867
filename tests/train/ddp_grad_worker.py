"""Run under torchrun (2 CPU ranks, gloo): each rank computes the CLIP loss (local and global variants) on its half of a
fixed global batch through DDP, and rank 0 saves the averaged gradients to ``argv[1]``. Used by test_distributed.py."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from biomedclip.model import create_model
from biomedclip.train.distributed import init_distributed
from biomedclip.train.loss import ClipLoss


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """8 deterministic images and token sequences."""
    generator = torch.Generator().manual_seed(123)
    images = torch.randn(8, 3, 64, 64, generator=generator)
    tokens = torch.randint(5, 2000, (8, 64), generator=generator)
    tokens[:, 0], tokens[:, 40:] = 2, 0
    return images, tokens


def model_gradients(model, loss_fn, images, tokens) -> dict[str, torch.Tensor]:
    """Loss backward; the gradients by parameter name."""
    image_features, text_features, scale = model(images, tokens)
    loss_fn(image_features, text_features, scale).backward()
    module = getattr(model, "module", model)
    return {name: p.grad.detach().clone() for name, p in module.named_parameters() if p.grad is not None}


def main() -> None:
    info = init_distributed(torch.device("cpu"))
    torch.manual_seed(0)
    model = create_model("tiny").eval()  # eval: no dropout, so both runs see the same function
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    images, tokens = global_batch()
    half = slice(4 * info.rank, 4 * info.rank + 4)
    grads = {}
    for mode in ("local", "global"):
        ddp.zero_grad(set_to_none=True)
        grads[mode] = model_gradients(ddp, ClipLoss(local_loss=mode == "local"), images[half], tokens[half])
    if info.rank == 0:
        torch.save(grads, sys.argv[1])
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
