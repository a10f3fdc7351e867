"""The CLIP loss on simulated ranks, in-process and fast, so that mutation testing reaches the distributed paths
(docs/MUTATION.md): open_clip's ``ClipLoss`` under the same simulated world and a brute-force loss over the global
batch are the references; the torchrun tests (test_loss_distributed.py, slow) check the real collectives."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.distributed.nn
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from open_clip.loss import ClipLoss as OpenClipLoss

from biomedclip.train.loss import ClipLoss, caption_ids, duplicate_mask

WORLD, PER_RANK = 3, 4
CAPTIONS = torch.tensor([0, 1, 0, 2, 1, 0, 3, 1, 0, 4, 2, 0])  # copies within a rank and across ranks
MODES = [(local, grad) for local in (False, True) for grad in (False, True)]


class SimulatedWorld:
    """``torch.distributed`` for ``WORLD`` ranks in one process: the rank that runs now is ``rank``; gathers return
    every rank's slice of the global tensors (the caller's own tensor in its own slot, as the real collectives do)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *global_tensors: torch.Tensor, world: int = WORLD) -> None:
        self.rank, self.world = 0, world
        self.per_rank = global_tensors[0].shape[0] // world
        self.global_tensors = global_tensors
        monkeypatch.setattr(dist, "is_initialized", lambda: True)
        monkeypatch.setattr(dist, "get_world_size", lambda group=None: self.world)
        monkeypatch.setattr(dist, "get_rank", lambda group=None: self.rank)
        monkeypatch.setattr(dist, "all_gather", self.all_gather)
        monkeypatch.setattr(dist_fn, "all_gather", self.all_gather_with_grad)
        monkeypatch.setattr(torch.distributed.nn, "all_gather", self.all_gather_with_grad)

    def slices(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        per = self.per_rank
        own = slice(self.rank * per, (self.rank + 1) * per)
        (whole,) = [g for g in self.global_tensors if g.dtype == tensor.dtype and torch.equal(g[own], tensor.detach())]
        return [whole[r * per : (r + 1) * per] for r in range(self.world)]

    def all_gather(self, out: list[torch.Tensor], tensor: torch.Tensor, group=None) -> None:
        with torch.no_grad():
            for slot, part in zip(out, self.slices(tensor), strict=True):
                slot.copy_(part)

    def all_gather_with_grad(self, tensor: torch.Tensor, group=None) -> tuple[torch.Tensor, ...]:
        return tuple(tensor if r == self.rank else part for r, part in enumerate(self.slices(tensor)))


def global_batch(seed: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(WORLD * PER_RANK, 6, generator=generator, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(WORLD * PER_RANK, 6, generator=generator, dtype=torch.float64), dim=-1)
    return image, text, torch.tensor(7.5, dtype=torch.float64)


def brute_force_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, captions: list[int]) -> torch.Tensor:
    """Mean over items and both directions of -log softmax of the own pair among itself and other-caption items."""
    terms = []
    for i, caption in enumerate(captions):
        keep = [j for j, other in enumerate(captions) if j == i or other != caption]
        own = keep.index(i)
        terms.append(-torch.log_softmax(scale * image[i] @ text[keep].T, 0)[own])
        terms.append(-torch.log_softmax(scale * text[i] @ image[keep].T, 0)[own])
    return torch.stack(terms).mean()


def leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_() for t in tensors]


@pytest.mark.parametrize(("local_loss", "with_grad"), MODES)
def test_each_rank_equals_open_clip(monkeypatch, local_loss: bool, with_grad: bool) -> None:
    image, text, scale = global_batch()
    world = SimulatedWorld(monkeypatch, image, text)
    for rank in range(WORLD):
        world.rank = rank
        own = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        results = []
        for loss_fn in (
            ClipLoss(local_loss=local_loss, gather_with_grad=with_grad),
            OpenClipLoss(local_loss=local_loss, gather_with_grad=with_grad, rank=rank, world_size=WORLD),
        ):
            inputs = leaves(image[own], text[own], scale)
            loss = loss_fn(*inputs)
            loss.backward()
            results.append([loss.detach()] + [t.grad for t in inputs])
        for ours, theirs in zip(*results, strict=True):
            assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-15), (rank, local_loss, with_grad)
        assert results[0][1].abs().max() > 1e-3  # a gradient really reaches this rank's features


@pytest.mark.parametrize("local_loss", [False, True])
def test_ranks_with_duplicate_captions_compute_the_global_loss(monkeypatch, local_loss: bool) -> None:
    """With gradients through the gather, the rank losses average to the global brute-force loss and every rank's
    features get the sum of all ranks' gradients: ``WORLD`` times the global gradient (DDP then averages)."""
    image, text, scale = leaves(*global_batch())
    world = SimulatedWorld(monkeypatch, image, text, CAPTIONS)
    loss_fn = ClipLoss(local_loss=local_loss, gather_with_grad=True)
    losses = []
    for rank in range(WORLD):
        world.rank = rank
        own = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        losses.append(loss_fn(image[own], text[own], scale, caption_ids=CAPTIONS[own]))
    torch.stack(losses).sum().backward()
    reference_inputs = leaves(image, text, scale)
    reference = brute_force_loss(*reference_inputs, CAPTIONS.tolist())
    reference.backward()
    assert torch.stack(losses).mean().item() == pytest.approx(reference.item(), rel=1e-12)
    for got, want in zip((image, text, scale), reference_inputs, strict=True):
        assert torch.allclose(got.grad, WORLD * want.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("local_loss", [False, True])
def test_without_gather_gradient_a_rank_differentiates_its_own_rows(monkeypatch, local_loss: bool) -> None:
    """Without gradient through the gather the other ranks' rows are constants: the full loss on each rank is the
    global one and its gradient is the global gradient's rows of that rank."""
    image, text, scale = global_batch()
    world = SimulatedWorld(monkeypatch, image, text, CAPTIONS)
    reference_inputs = leaves(image, text, scale)
    reference = brute_force_loss(*reference_inputs, CAPTIONS.tolist())
    reference.backward()
    losses = []
    for rank in range(WORLD):
        world.rank = rank
        own = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        inputs = leaves(image[own], text[own], scale)
        loss = ClipLoss(local_loss=local_loss, gather_with_grad=False)(*inputs, caption_ids=CAPTIONS[own])
        loss.backward()
        losses.append(loss.item())
        if not local_loss:
            assert loss.item() == pytest.approx(reference.item(), rel=1e-12)
            assert torch.allclose(inputs[0].grad, reference_inputs[0].grad[own], rtol=1e-10, atol=1e-14)
            assert torch.allclose(inputs[1].grad, reference_inputs[1].grad[own], rtol=1e-10, atol=1e-14)
    assert sum(losses) / WORLD == pytest.approx(reference.item(), rel=1e-12)


def test_duplicate_mask_spares_the_pair_at_its_offset() -> None:
    """Rows are a rank's items, columns the gathered batch: row i's own pair is column ``i + offset``."""
    rows, columns = torch.tensor([5, 6]), torch.tensor([6, 5, 6, 5, 9])
    assert duplicate_mask(rows, columns, offset=3).tolist() == [
        [False, True, False, False, False],  # caption 5 at columns 1 and 3; column 3 is its own pair
        [True, False, True, False, False],  # caption 6 at columns 0 and 2; its own pair is column 4
    ]
    assert duplicate_mask(rows, rows).tolist() == [[False, False], [False, False]]


def test_caption_ids_depend_on_order_and_serve_several_context_lengths() -> None:
    short = torch.tensor([[2, 7, 9, 3], [2, 9, 7, 3], [2, 7, 9, 3]])
    ids = caption_ids(short)
    assert ids[0] == ids[2] and ids[0] != ids[1]  # the same tokens in another order are another caption
    long = torch.tensor([[2, 7, 9, 3, 0, 0], [2, 7, 9, 3, 0, 5]])
    long_ids = caption_ids(long)
    assert long_ids.shape == (2,) and long_ids[0] != long_ids[1]
    assert torch.equal(caption_ids(short), ids)  # the first width's weights are still its own
    single = caption_ids(torch.tensor([[5]]))
    assert single.item() % 2 != 0  # id 5 times an odd weight: odd (an even weight would lose the low bit)


def test_caption_ids_are_int64_and_the_same_in_every_process() -> None:
    """Ranks find duplicates by comparing ids computed in separate processes: the weights cannot depend on the
    global random state or on what was hashed before."""
    from biomedclip.train import loss

    tokens = torch.tensor([[2, 11, 12, 3], [2, 13, 14, 3]])
    ids = caption_ids(tokens)
    assert ids.dtype == torch.int64
    loss._HASH_WEIGHTS.clear()  # a fresh process
    torch.manual_seed(12345)
    assert torch.equal(caption_ids(tokens), ids)


def test_the_default_loss_on_two_ranks_is_local_with_gradient_through_the_gather(monkeypatch) -> None:
    """``ClipLoss()``: each rank scores its own rows (its loss is not the global one) and gradients flow through the
    gather, so every rank's features get twice the global gradient (the exact global update after DDP's mean)."""
    image, text, scale = leaves(*global_batch())
    world = SimulatedWorld(monkeypatch, image, text, world=2)
    losses = []
    for rank in range(2):
        world.rank = rank
        own = slice(rank * 6, (rank + 1) * 6)
        losses.append(ClipLoss()(image[own], text[own], scale))
    torch.stack(losses).sum().backward()
    reference_inputs = leaves(image, text, scale)
    reference = brute_force_loss(*reference_inputs, list(range(12)))
    reference.backward()
    assert all(abs(loss.item() - reference.item()) > 1e-3 for loss in losses)
    assert torch.stack(losses).mean().item() == pytest.approx(reference.item(), rel=1e-12)
    for got, want in zip((image, text, scale), reference_inputs, strict=True):
        assert torch.allclose(got.grad, 2 * want.grad, rtol=1e-10, atol=1e-14)
