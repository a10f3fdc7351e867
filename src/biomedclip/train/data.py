"""Streaming image-caption batches from WebDataset shards (``{split}-NNNNNN.tar`` with ``.jpg``/``.txt``/``.json``).

Each (rank, DataLoader worker) pair is one *slot*. Shards are split across slots without duplication (every
pass over the data reshuffles which slot gets which shard), or drawn with replacement per slot in resampled
mode. Each slot's stream is endless and deterministic given the seed, so the data position of a run is just
the number of global batches consumed: on resume every worker skips, before decoding, exactly the samples it
had already delivered. Augmentation is seeded per sample, so a resumed run sees the same crops.
"""

from __future__ import annotations

import io
import os
import random
import tarfile
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import torch
from PIL import Image
from webdataset.tariterators import group_by_keys, tar_file_expander

from biomedclip.errors import InputError

Sample = dict[str, Any]


class DataError(ValueError):
    """The shard spec or the shards themselves cannot be used."""


def open_shard(url: str) -> IO[bytes]:
    """Open one shard for streaming: a local path, ``http(s)://`` or ``s3://bucket/key``.

    S3 honours ``BIOMEDCLIP_S3_ENDPOINT`` / ``AWS_ENDPOINT_URL`` and the usual AWS credentials.
    """
    if url.startswith(("http://", "https://")):
        return urllib.request.urlopen(url, timeout=60)
    if url.startswith("s3://"):
        import boto3

        bucket, _, key = url[len("s3://") :].partition("/")
        endpoint = os.environ.get("BIOMEDCLIP_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        client = boto3.client("s3", endpoint_url=endpoint)
        return client.get_object(Bucket=bucket, Key=key)["Body"]
    if url.startswith("file://"):
        url = url[len("file://") :]
    return open(url, "rb")


def iterate_samples(urls: Iterable[str]) -> Iterator[Sample]:
    """Raw samples (``__key__`` plus one bytes value per member extension) of the shards, in order (lazily, so
    ``urls`` may be an endless stream of shards)."""

    def streams() -> Iterator[dict[str, Any]]:
        for url in urls:
            stream = open_shard(url)
            try:
                yield {"url": url, "stream": stream}
            finally:
                stream.close()

    yield from group_by_keys(tar_file_expander(streams()))


def count_samples(urls: list[str]) -> int:
    """Count samples in local shards by reading tar headers only (remote shards need ``train_num_samples``)."""
    remote = [u for u in urls if "://" in u and not u.startswith("file://")]
    if remote:
        raise DataError("set data.train_num_samples: samples cannot be counted in remote shards")
    total = 0
    for url in urls:
        with tarfile.open(url.removeprefix("file://"), mode="r|*") as tar:
            total += len({m.name.split("/")[-1].split(".", 1)[0] for m in tar if m.isreg()})
    return total


def loader_workers(num_shards: int, world_size: int, workers: int, resampled: bool) -> tuple[int, list[str]]:
    """DataLoader workers per rank that ``num_shards`` shards can feed without duplication, and a note when that
    is fewer than ``data.workers``.

    Each (rank, worker) reads its own shards, so without ``data.resampled`` a rank runs at most
    ``num_shards // world_size`` workers (a small corpus is often a single shard). Raises
    :class:`~biomedclip.errors.InputError` when there are fewer shards than ranks.
    """
    if resampled:
        return workers, []
    if num_shards < world_size:
        raise InputError(
            f"{num_shards} shard(s) cannot be split across {world_size} rank(s) without duplication: write at least "
            f"{world_size} shards (corpus build --shard-size), or set data.resampled true"
        )
    usable = min(workers, num_shards // world_size)
    if usable == workers:
        return workers, []
    note = (
        f"data.workers lowered from {workers} to {usable}: {num_shards} shard(s) for {world_size} rank(s), and each "
        "loader worker reads its own shards (write more shards to load in parallel)"
    )
    return usable, [note]


def shards_for_pass(urls: list[str], seed: int, pass_index: int, slot: int, num_slots: int) -> list[str]:
    """The shards slot ``slot`` reads in pass ``pass_index``: a disjoint share of a per-pass permutation."""
    order = list(urls)
    random.Random(seed * 7919 + pass_index).shuffle(order)
    return order[slot::num_slots]


def _slot_shards(urls: list[str], seed: int, slot: int, num_slots: int, resampled: bool) -> Iterator[str]:
    if resampled:
        rng = random.Random(seed * 104729 + slot)
        while True:
            yield rng.choice(urls)
    pass_index = 0
    while True:
        yield from shards_for_pass(urls, seed, pass_index, slot, num_slots)
        pass_index += 1


def shuffled(samples: Iterator[Sample], buffer_size: int, rng: random.Random) -> Iterator[Sample]:
    """Shuffle a stream through a buffer of ``buffer_size`` samples (deterministic given ``rng``)."""
    buffer: list[Sample] = []
    for sample in samples:
        if len(buffer) < buffer_size:
            buffer.append(sample)
            continue
        index = rng.randrange(buffer_size)
        buffer[index], sample = sample, buffer[index]
        yield sample
    rng.shuffle(buffer)
    yield from buffer


def _sample_seed(seed: int, slot: int, index: int) -> int:
    return ((seed * 1_000_003 + slot) * 1_000_000_007 + index) % (2**63)


@dataclass
class StreamSpec:
    """Everything that determines a stream of training batches."""

    urls: list[str]
    batch_size: int
    seed: int = 0
    resampled: bool = False
    shuffle_buffer: int = 5000
    image_keys: tuple[str, ...] = ("jpg", "png", "jpeg", "webp")
    text_key: str = "txt"


def decode_pair(sample: Sample, image_keys: tuple[str, ...], text_key: str) -> tuple[Image.Image, str]:
    """The RGB image and caption of a raw sample; raises DataError naming the sample when either is missing."""
    image_bytes = next((sample[k] for k in image_keys if k in sample), None)
    if image_bytes is None or text_key not in sample:
        raise DataError(f"sample {sample.get('__key__')} in {sample.get('__url__')} lacks an image or a caption")
    image = Image.open(io.BytesIO(image_bytes)).convert("RGB")
    return image, sample[text_key].decode("utf-8")


class TrainStream(torch.utils.data.IterableDataset):
    """Endless, resumable batches ``(images, token_ids)`` for one rank; each worker builds whole batches."""

    def __init__(
        self,
        spec: StreamSpec,
        transform: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        *,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        start_batch: int = 0,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.transform = transform
        self.tokenizer = tokenizer
        self.rank = rank
        self.world_size = world_size
        self.loader_workers = num_workers  # 0 = batches are built in the main process
        self.num_workers = max(num_workers, 1)  # streams (slots) per rank
        self.start_batch = start_batch
        num_slots = world_size * self.num_workers
        if not spec.resampled and len(spec.urls) < num_slots:
            raise DataError(
                f"{len(spec.urls)} shard(s) cannot be split across {world_size} rank(s) x {self.num_workers} "
                "worker(s) without duplication: write more shards, use fewer workers, or set data.resampled"
            )

    def batches_before(self, worker: int) -> int:
        """How many batches ``worker`` delivered before ``start_batch`` (the DataLoader visits workers in turn)."""
        return max(0, (self.start_batch - worker + self.num_workers - 1) // self.num_workers)

    def raw_samples(self, worker: int) -> Iterator[Sample]:
        """The shuffled raw sample stream of (this rank, ``worker``)."""
        slot = self.rank * self.num_workers + worker
        num_slots = self.world_size * self.num_workers
        shards = _slot_shards(self.spec.urls, self.spec.seed, slot, num_slots, self.spec.resampled)
        samples = iterate_samples(shards)
        rng = random.Random(_sample_seed(self.spec.seed, slot, -1))
        return shuffled(samples, self.spec.shuffle_buffer, rng)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        if info is not None and info.num_workers != self.num_workers:
            raise DataError(f"stream built for {self.num_workers} workers runs in {info.num_workers}")
        # The DataLoader asks its workers in turn starting from worker 0, so after ``start_batch`` batches
        # its worker 0 must play the stream that delivers global batch ``start_batch``.
        worker = ((info.id if info is not None else 0) + self.start_batch) % self.num_workers
        slot = self.rank * self.num_workers + worker
        skip = self.batches_before(worker) * self.spec.batch_size
        images: list[torch.Tensor] = []
        captions: list[str] = []
        for index, sample in enumerate(self.raw_samples(worker)):
            if index < skip:
                continue
            try:
                image, caption = decode_pair(sample, self.spec.image_keys, self.spec.text_key)
            except (DataError, OSError, UnicodeDecodeError) as exc:
                warnings.warn(f"skipping bad sample: {exc}", stacklevel=2)
                continue
            with torch.random.fork_rng(devices=[]):
                # the CPU generator alone: torch.manual_seed would also queue lazy CUDA/XPU/MTIA seeding calls,
                # each formatting a stack trace, which cost a third of a tiny model's step on the CPU
                torch.default_generator.manual_seed(_sample_seed(self.spec.seed, slot, index))
                images.append(self.transform(image))
            captions.append(caption)
            if len(images) == self.spec.batch_size:
                yield torch.stack(images), self.tokenizer(captions)
                images, captions = [], []


def eval_batches(
    urls: list[str],
    transform: Callable[[Image.Image], torch.Tensor],
    tokenizer: Callable[[list[str]], torch.Tensor],
    *,
    batch_size: int,
    max_samples: int | None = None,
    image_keys: tuple[str, ...] = ("jpg", "png", "jpeg", "webp"),
    text_key: str = "txt",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One ordered pass over a split (e.g. val) in batches; the last batch may be smaller."""
    images: list[torch.Tensor] = []
    captions: list[str] = []
    for seen, sample in enumerate(iterate_samples(urls)):
        if max_samples is not None and seen >= max_samples:
            break
        image, caption = decode_pair(sample, image_keys, text_key)
        images.append(transform(image))
        captions.append(caption)
        if len(images) == batch_size:
            yield torch.stack(images), tokenizer(captions)
            images, captions = [], []
    if images:
        yield torch.stack(images), tokenizer(captions)


class TimedLoader:
    """Wraps a batch iterator and accumulates the seconds spent waiting for the next batch."""

    def __init__(self, iterator: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.iterator = iterator
        self.wait_seconds = 0.0

    def __iter__(self) -> TimedLoader:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        start = time.perf_counter()
        batch = next(self.iterator)
        self.wait_seconds += time.perf_counter() - start
        return batch


def make_train_loader(
    stream: TrainStream, *, pin_memory: bool = False, prefetch_factor: int = 2
) -> torch.utils.data.DataLoader:
    """A DataLoader over a TrainStream: batches are already built in the workers, so ``batch_size=None``."""
    workers = stream.loader_workers
    return torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor if workers else None,
        persistent_workers=False,
    )
