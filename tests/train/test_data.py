"""Shard streaming: expansion, split across ranks and workers without duplication, resumable positions."""

from __future__ import annotations

import itertools

import pytest
import torch

from biomedclip.shards import ShardSpecError, expand_shards
from biomedclip.train.data import (
    DataError,
    StreamSpec,
    TrainStream,
    count_samples,
    make_train_loader,
    shards_for_pass,
)


def test_expand_brace_glob_folder_and_missing(train_shards) -> None:
    brace = expand_shards(str(train_shards / "train-{000000..000007}.tar"))
    assert len(brace) == 8 and brace == sorted(brace)
    assert expand_shards(str(train_shards / "train-*.tar")) == brace
    assert len(expand_shards(f"{train_shards}/train-000000.tar::{train_shards}/val-*.tar")) == 3
    assert expand_shards("s3://bucket/train-{0..1}.tar") == ["s3://bucket/train-0.tar", "s3://bucket/train-1.tar"]
    with pytest.raises(ShardSpecError, match="not found"):
        expand_shards(str(train_shards / "train-{000000..000009}.tar"))
    assert count_samples(brace) == 128


@pytest.mark.parametrize(("num_shards", "num_slots"), [(8, 4), (10, 4), (7, 7), (9, 2)])
def test_each_pass_splits_shards_disjointly_and_completely(num_shards: int, num_slots: int) -> None:
    urls = [f"s-{i}.tar" for i in range(num_shards)]
    for pass_index in range(3):
        shares = [shards_for_pass(urls, 5, pass_index, slot, num_slots) for slot in range(num_slots)]
        flat = list(itertools.chain.from_iterable(shares))
        assert sorted(flat) == sorted(urls) and len(flat) == len(set(flat))


def test_ranks_and_workers_read_disjoint_samples(train_shards) -> None:
    urls = expand_shards(str(train_shards / "train-*.tar"))
    spec = StreamSpec(urls=urls, batch_size=4, seed=3, shuffle_buffer=1)
    keys = []
    for rank in range(2):
        stream = TrainStream(spec, lambda im: im, lambda t: t, rank=rank, world_size=2, num_workers=2)
        for worker in range(2):
            keys.append([s.key for s in itertools.islice(stream.raw_samples(worker), 32)])
    flat = list(itertools.chain.from_iterable(keys))
    assert len(flat) == 128 and len(set(flat)) == 128


def test_too_few_shards_is_a_clear_error_unless_resampled(train_shards) -> None:
    spec = StreamSpec(urls=expand_shards(str(train_shards / "val-*.tar")), batch_size=4)
    with pytest.raises(DataError, match="without duplication"):
        TrainStream(spec, lambda im: im, lambda t: t, world_size=2, num_workers=2)
    spec.resampled = True
    stream = TrainStream(spec, lambda im: im, lambda t: t, world_size=2, num_workers=2)
    assert {s.key[:3] for s in itertools.islice(stream.raw_samples(1), 50)} == {"val"}


def test_resumed_stream_continues_with_the_same_batches(train_shards) -> None:
    from torchvision import transforms

    urls = expand_shards(str(train_shards / "train-*.tar"))
    spec = StreamSpec(urls=urls, batch_size=4, seed=1, shuffle_buffer=16)
    transform = transforms.Compose([transforms.RandomResizedCrop(16, scale=(0.3, 1.0)), transforms.ToTensor()])

    def tokenize(captions: list[str]) -> torch.Tensor:
        return torch.tensor([[len(c), sum(map(ord, c))] for c in captions])

    def batches(start: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        stream = TrainStream(spec, transform, tokenize, num_workers=2, start_batch=start)
        return [(images, tokens) for images, tokens, _ in itertools.islice(make_train_loader(stream), count)]

    full = batches(0, 9)
    resumed = batches(5, 4)
    for (images, tokens), (images_r, tokens_r) in zip(full[5:], resumed, strict=True):
        assert torch.equal(images, images_r) and torch.equal(tokens, tokens_r)
    assert not torch.equal(full[0][0], full[1][0])
