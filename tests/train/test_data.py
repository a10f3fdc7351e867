"""Shard streaming: expansion, split across ranks and workers without duplication, resumable positions."""

from __future__ import annotations

import io
import itertools
import json
import os
import struct
import warnings
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from biomedclip.shards import ShardError, ShardSpecError, expand_shards
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


# --- undecodable samples and bad shards (issue 15 item 7) -------------------------------------------------


def _png_bomb() -> bytes:
    """A valid 1x1 PNG whose header claims 20000 x 20000 pixels: PIL refuses it as a decompression bomb."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = bytearray(data[12:29])  # chunk type + 13 data bytes
    ihdr[4:12] = struct.pack(">II", 20_000, 20_000)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (value, 255 - value, 7)).save(buffer, format="PNG")
    return buffer.getvalue()


BAD = {5: _png_bomb(), 11: b"\xff\xd8\xff\xe0 garbage, not a JPEG", 18: _png(3)[:50]}  # bomb, garbage, truncated


@pytest.fixture
def shards_with_bad_samples(tmp_path: Path) -> list[str]:
    """4 shards of 8 samples; samples 5, 11 and 18 cannot be decoded."""
    from biomedclip.shards import ShardWriter

    with ShardWriter(tmp_path, "train", max_samples=8) as writer:
        for i in range(32):
            writer.write(f"s{i:03d}", BAD.get(i, _png(i)), f"caption {i}", {})
    return [str(p) for p in writer.paths]


def _tokenize(captions: list[str]) -> torch.Tensor:
    return torch.tensor([[int(c.split()[1])] for c in captions])


def test_undecodable_samples_are_skipped_and_counted(shards_with_bad_samples, tmp_path: Path) -> None:
    from PIL.Image import DecompressionBombError

    with pytest.raises(DecompressionBombError):  # the crafted bomb really is one for PIL
        Image.open(io.BytesIO(BAD[5]))
    log = tmp_path / "skipped.jsonl"
    spec = StreamSpec(urls=shards_with_bad_samples, batch_size=4, shuffle_buffer=1, skip_log=str(log))
    stream = TrainStream(spec, lambda im: torch.zeros(1), _tokenize)
    with pytest.warns(UserWarning, match="skipping sample s005"):
        batches = list(itertools.islice(iter(stream), 7))  # one pass: 29 good samples make 7 batches
    seen = sorted(int(v) for _, tokens, _ in batches for v in tokens.ravel())
    assert len(seen) == 28 and not set(seen) & set(BAD)
    assert sum(skipped["samples"] for *_, skipped in batches) == 3
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(entry["key"] for entry in logged) == ["s005", "s011", "s018"]
    assert "DecompressionBombError" in next(e["error"] for e in logged if e["key"] == "s005")


def test_resume_over_skipped_samples_continues_with_the_same_batches(shards_with_bad_samples, tmp_path) -> None:
    spec = StreamSpec(
        urls=shards_with_bad_samples, batch_size=3, seed=2, shuffle_buffer=4, skip_log=str(tmp_path / "s.jsonl")
    )

    def batches(start: int, count: int) -> list[torch.Tensor]:
        stream = TrainStream(spec, lambda im: torch.zeros(1), _tokenize, num_workers=2, start_batch=start)
        return [tokens for _, tokens, _ in itertools.islice(make_train_loader(stream), count)]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = batches(0, 12)
        resumed = batches(7, 5)
    assert [t.ravel().tolist() for t in resumed] == [t.ravel().tolist() for t in full[7:]]


def _garbage_shard(folder: Path) -> str:
    path = folder / "train-000009.tar"
    path.write_bytes(b"\x00garbage" * 100)
    return str(path)


def test_a_bad_shard_is_named_and_fatal_by_default(shards_with_bad_samples, tmp_path: Path) -> None:
    urls = [*shards_with_bad_samples[:1], _garbage_shard(tmp_path)]
    with pytest.raises(ShardError, match=r"train-000009\.tar"):
        count_samples(urls)
    spec = StreamSpec(urls=urls, batch_size=4, shuffle_buffer=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ShardError, match=r"cannot read shard .*train-000009\.tar"):
            list(itertools.islice(iter(TrainStream(spec, lambda im: torch.zeros(1), _tokenize)), 10))


def test_bad_shards_skip_warns_counts_and_goes_on(shards_with_bad_samples, tmp_path: Path) -> None:
    urls = [_garbage_shard(tmp_path), *shards_with_bad_samples[2:]]  # garbage, then 16 samples (s018 bad)
    with pytest.warns(UserWarning, match=r"not counting a bad shard: .*train-000009\.tar"):
        assert count_samples(urls, bad_shards="skip") == 16
    spec = StreamSpec(urls=urls, batch_size=5, shuffle_buffer=1, bad_shards="skip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(itertools.islice(iter(TrainStream(spec, lambda im: torch.zeros(1), _tokenize)), 3))
    assert any("train-000009.tar" in str(w.message) for w in caught)
    assert sorted(int(v) for b in batches for v in b[1].ravel()) == [i for i in range(16, 32) if i != 18]
    assert [sum(b[2][kind] for b in batches) for kind in ("samples", "shards")] == [1, 1]


def test_sizes_json_replaces_counting_and_covers_remote_shards(train_shards, tmp_path: Path) -> None:
    from biomedclip.shards import write_sizes

    urls = expand_shards(str(train_shards / "train-*.tar"))
    assert count_samples(urls) == 128  # counted from the tars
    folder = tmp_path / "manifest"
    folder.mkdir()
    fake = [str(folder / Path(u).name) for u in urls]
    for url in fake:  # empty files: only the manifest can give their counts
        Path(url).write_bytes(b"")
    write_sizes(folder, {Path(u).name: 10 + i for i, u in enumerate(fake)})
    assert count_samples(fake) == sum(10 + i for i in range(8))
    with pytest.raises(DataError, match="train_num_samples"):
        count_samples(["s3://bucket-that-is-not-there/train-000000.tar"])


def test_skipped_samples_reach_the_training_metrics(shards_with_bad_samples, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from biomedclip.cli import main

    overrides = {
        "model.name": "tiny",
        "model.patch_dropout": 0.0,
        "model.grad_checkpointing": False,
        "data.train": "::".join(shards_with_bad_samples),
        "data.workers": 0,
        "data.shuffle_buffer": 1,
        "optim.batch_size": 8,
        "optim.max_steps": 3,
        "optim.warmup_steps": 1,
        "run.output_dir": tmp_path / "run",
        "run.precision": "fp32",
        "run.device": "cpu",
        "run.log_every": 3,
        "run.tensorboard": False,
    }
    args = ["train", *(str(item) for key, value in overrides.items() for item in (f"--{key}", value))]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    (record,) = [r for r in records if r["kind"] == "train"]
    assert (record["step"], record["skipped_samples"], record["skipped_shards"]) == (3, 3, 0)  # 24 of 29 good used


# --- a deny-list of corpus keys (issue 20 item 4: train without a benchmark's images) ----------------------


def test_excluded_keys_never_reach_a_batch_and_are_counted(train_shards, tmp_path: Path) -> None:
    from biomedclip.train.data import read_exclude

    urls = expand_shards(str(train_shards / "train-*.tar"))
    first_pass = TrainStream(StreamSpec(urls=urls, batch_size=4, shuffle_buffer=1), lambda im: im, lambda t: t)
    every = [s.key for s in itertools.islice(first_pass.raw_samples(0), 128)]  # the stream repeats: one pass
    deny = tmp_path / "overlap.jsonl"
    chosen = every[::10]  # 13 of 128
    deny.write_text("".join(json.dumps({"key": k, "eval": "x", "kind": "near", "distance": 0.1}) + "\n"
                            for k in chosen) + "\n")  # fmt: skip
    exclude = read_exclude(deny)
    assert exclude == frozenset(chosen)
    spec = StreamSpec(urls=urls, batch_size=5, shuffle_buffer=1, exclude=exclude)
    stream = TrainStream(spec, lambda im: torch.zeros(1), lambda t: torch.tensor([len(c) for c in t]))
    kept = [s.key for s in itertools.islice(stream.raw_samples(0), 128 - len(chosen))]
    assert kept == [k for k in every if k not in exclude]
    counted = sum(skipped["excluded"] for _, _, skipped in itertools.islice(iter(stream), 22))  # 110 samples
    before = [k for k in every[: every.index(kept[109])] if k in exclude]  # met before the 110th kept sample
    assert len(before) <= counted <= len(chosen)


def test_a_bad_exclude_list_is_a_clear_error(tmp_path: Path) -> None:
    from biomedclip.train.data import read_exclude

    with pytest.raises(DataError, match="cannot read the exclude list"):
        read_exclude(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "a"}\n{"eval": "b"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: expected a JSON object with a \"key\""):
        read_exclude(bad)


class _NicenessStream(torch.utils.data.IterableDataset):
    """Yields the scheduling niceness of the process that iterates it."""

    loader_workers = 1

    def __iter__(self):
        yield torch.tensor(os.nice(0))


def test_train_loader_workers_run_at_the_niceness_asked_for():
    own = os.nice(0)
    assert [int(n) for n in make_train_loader(_NicenessStream(), worker_nice=7)] == [min(19, own + 7)]
    assert [int(n) for n in make_train_loader(_NicenessStream())] == [own]
    assert os.nice(0) == own  # the trainer itself keeps its priority
