"""The CLIP loss against open_clip's ``ClipLoss`` (values and gradients) and the duplicate-caption rule against a
brute-force numpy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss as OpenClipLoss

from biomedclip.train.loss import ClipLoss, caption_ids


def features(batch: int, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=-1)
    return image.requires_grad_(), text.requires_grad_(), torch.tensor(14.3, dtype=torch.float64, requires_grad=True)


def loss_and_grads(loss_fn, *args, **kwargs) -> tuple[torch.Tensor, list[torch.Tensor]]:
    inputs = [a.detach().clone().requires_grad_() for a in args]
    loss = loss_fn(*inputs, **kwargs)
    loss.backward()
    return loss.detach(), [t.grad for t in inputs]


@pytest.mark.parametrize("local_loss", [False, True])
@pytest.mark.parametrize("gather_with_grad", [False, True])
def test_equals_open_clip_single_process(local_loss: bool, gather_with_grad: bool) -> None:
    image, text, scale = features(12)
    ours, our_grads = loss_and_grads(
        ClipLoss(local_loss=local_loss, gather_with_grad=gather_with_grad), image, text, scale
    )
    ref, ref_grads = loss_and_grads(
        OpenClipLoss(local_loss=local_loss, gather_with_grad=gather_with_grad), image, text, scale
    )
    assert torch.allclose(ours, ref, rtol=1e-14, atol=0)
    for mine, theirs in zip(our_grads, ref_grads, strict=True):  # open_clip multiplies text @ image.T once more
        assert torch.allclose(mine, theirs, rtol=1e-12, atol=1e-15)


def test_distinct_caption_ids_change_nothing() -> None:
    image, text, scale = features(10)
    ids = torch.arange(10) * 7919
    masked, masked_grads = loss_and_grads(lambda *a: ClipLoss()(*a, caption_ids=ids), image, text, scale)
    ref, ref_grads = loss_and_grads(OpenClipLoss(), image, text, scale)
    plain, plain_grads = loss_and_grads(ClipLoss(), image, text, scale)
    assert torch.equal(masked, plain)  # bit for bit: no logit is masked
    assert all(torch.equal(a, b) for a, b in zip(masked_grads, plain_grads, strict=True))
    assert torch.allclose(masked, ref, rtol=1e-14, atol=0)
    assert all(torch.allclose(a, b, rtol=1e-12, atol=1e-15) for a, b in zip(masked_grads, ref_grads, strict=True))


def brute_force_loss(image: np.ndarray, text: np.ndarray, scale: float, captions: list[str]) -> float:
    """Each item's own pair against every item with another caption (numpy, one row at a time)."""
    logits = scale * image @ text.T
    total = 0.0
    for i, caption in enumerate(captions):
        keep = [j for j, other in enumerate(captions) if j == i or other != caption]
        for row in (logits[i, keep], logits[keep, i]):  # image i over texts, text i over images
            total += -(row[keep.index(i)] - math.log(np.exp(row).sum()))
    return total / (2 * len(captions))


def test_duplicate_captions_leave_the_softmax() -> None:
    captions = ["normal", "pneumonia", "normal", "effusion", "pneumonia", "normal", "a unique one", "normal"]
    image, text, scale = features(len(captions), seed=3)
    ids = torch.tensor([hash(c) for c in captions])
    ours = ClipLoss()(image, text, scale, caption_ids=ids)
    expected = brute_force_loss(image.detach().numpy(), text.detach().numpy(), scale.item(), captions)
    assert ours.item() == pytest.approx(expected, rel=1e-12)
    assert ours.item() < OpenClipLoss()(image, text, scale).item()


def test_templated_batch_can_reach_zero_loss_only_with_the_rule() -> None:
    """Two captions, four copies each, features that separate the classes perfectly: with duplicates as
    negatives the loss is stuck at ln(4) (the copies cannot be told apart); with the rule it goes to zero."""
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    class_vectors = torch.eye(2, 8, dtype=torch.float64)
    image = text = class_vectors[labels]
    scale = torch.tensor(100.0, dtype=torch.float64)
    tokens = torch.tensor([[2, 11, 12, 3], [2, 11, 13, 3]])[labels]
    assert ClipLoss()(image, text, scale).item() == pytest.approx(math.log(4), abs=1e-12)
    assert ClipLoss()(image, text, scale, caption_ids=caption_ids(tokens)).item() < 1e-20


def test_caption_ids_are_equal_exactly_for_equal_token_rows() -> None:
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 30000, (64, 256), generator=generator)
    tokens[10] = tokens[3]
    tokens[20, :-1] = tokens[21, :-1]  # differ in the last position only
    ids = caption_ids(tokens)
    assert ids[10] == ids[3]
    assert len(set(ids.tolist())) == 63
    assert torch.equal(caption_ids(tokens.clone()), ids)  # deterministic
