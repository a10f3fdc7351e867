"""Streaming image-caption batches from WebDataset shards (``{split}-NNNNNN.tar`` with ``.jpg``/``.txt``/``.json``).

Each (rank, DataLoader worker) pair is one *slot*. Shards are split across slots without duplication (every
pass over the data reshuffles which slot gets which shard), or drawn with replacement per slot in resampled
mode. Each slot's stream is endless and deterministic given the seed, so the data position of a run is just
the number of global batches consumed: on resume every worker skips, before decoding, exactly the samples it
had already delivered. Augmentation is seeded per sample, so a resumed run sees the same crops.

Shards are read through :mod:`biomedclip.shards`. A sample whose image cannot be decoded (garbage, truncated,
a decompression bomb) is skipped, counted in the batch's ``skipped`` counts (``skipped_samples`` in the
metrics) and written to the stream's skip log, which tells a resumed stream which samples were never
delivered. A shard that cannot be read stops the run naming it, or is skipped with ``bad_shards="skip"``.
"""

from __future__ import annotations

import functools
import io
import json
import os
import random
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from biomedclip import shards
from biomedclip.errors import InputError
from biomedclip.shards import IMAGE_EXTENSIONS, Sample, ShardError

BAD_SHARD_POLICIES = ("fail", "skip")
# What decoding an undecodable image raises: garbage or truncated bytes, a decompression bomb, a broken chunk.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class DataError(InputError):
    """The training data cannot be used as configured (too few shards, no sample count, a sample without a caption)."""


def iterate_samples(
    urls: Iterable[str], *, bad_shards: str = "fail", on_bad_shard: Callable[[ShardError], None] | None = None
) -> Iterator[Sample]:
    """The samples of the shards, in order (lazily, so ``urls`` may be an endless stream of shards).

    A shard that cannot be read raises :class:`~biomedclip.shards.ShardError` naming it when ``bad_shards`` is
    ``"fail"``; with ``"skip"`` a warning is given, ``on_bad_shard`` is called and the next shard follows (the
    samples read before the fault are kept).
    """
    if bad_shards not in BAD_SHARD_POLICIES:
        raise DataError(f"bad_shards must be one of {', '.join(BAD_SHARD_POLICIES)}, not {bad_shards!r}")
    for url in urls:
        try:
            yield from shards.iter_samples(url)
        except ShardError as error:
            if bad_shards == "fail":
                raise
            warnings.warn(f"skipping the rest of a bad shard: {error}", stacklevel=2)
            if on_bad_shard is not None:
                on_bad_shard(error)


def count_samples(urls: list[str], *, bad_shards: str = "fail") -> int:
    """Samples in the shards: from the ``sizes.json`` beside them when it lists them, else by reading local tar
    headers (remote shards without a manifest need ``train_num_samples``)."""
    total = 0
    for url, size in shards.shard_sizes(urls).items():
        if size is not None:
            total += size
        elif shards.is_url(url) and not url.startswith("file://"):
            raise DataError(f"set data.train_num_samples: {url} is remote and no sizes.json beside it lists it")
        else:
            try:
                total += shards.count_samples(url)
            except ShardError as error:
                if bad_shards == "fail":
                    raise
                warnings.warn(f"not counting a bad shard: {error}", stacklevel=2)
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
    """Everything that determines a stream of training batches.

    ``skip_log`` is a file (JSON lines) where undecodable samples are recorded as they are skipped; a resumed
    stream reads it to skip exactly the samples the interrupted run delivered.
    """

    urls: list[str]
    batch_size: int
    seed: int = 0
    resampled: bool = False
    shuffle_buffer: int = 5000
    image_keys: tuple[str, ...] = IMAGE_EXTENSIONS
    text_key: str = "txt"
    bad_shards: str = "fail"
    skip_log: str | None = None
    exclude: frozenset[str] = frozenset()  # sample keys left out (``read_exclude``), counted as ``excluded``


def read_exclude(path: str | Path) -> frozenset[str]:
    """The sample keys of a deny-list: JSON lines with a ``key`` each (``corpus overlap`` writes them).

    Raises:
        DataError: a missing file, or a line that is not a JSON object with a ``key``.
    """
    keys = set()
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    keys.add(str(json.loads(line)["key"]))
                except (json.JSONDecodeError, KeyError, TypeError) as error:
                    raise DataError(f'{path}:{number}: expected a JSON object with a "key" ({error})') from error
    except OSError as error:
        raise DataError(f"cannot read the exclude list {path}: {error}") from error
    return frozenset(keys)


def _without(samples: Iterator[Sample], exclude: frozenset[str], on_excluded: Callable[[Sample], None] | None):
    for sample in samples:
        if sample.key in exclude:
            if on_excluded is not None:
                on_excluded(sample)
            continue
        yield sample


def decode_pair(sample: Sample, image_keys: tuple[str, ...], text_key: str) -> tuple[Image.Image, str]:
    """The RGB image and caption of a raw sample.

    Raises:
        DataError: the sample lacks an image or a caption (naming the sample and its shard).
        OSError, ValueError, SyntaxError, Image.DecompressionBombError: the image cannot be decoded.
    """
    ext = sample.image_extension(image_keys)
    if ext is None or text_key not in sample.data:
        raise DataError(f"sample {sample.key} in {sample.url} lacks an image or a caption")
    image = Image.open(io.BytesIO(sample.data[ext])).convert("RGB")
    return image, sample.data[text_key].decode("utf-8")


def _read_skip_log(path: str | None) -> set[tuple[str, str]]:
    if path is None or not Path(path).is_file():
        return set()
    entries = set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
            entries.add((entry["url"], entry["key"]))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    return entries


def _log_skip(path: str | None, sample: Sample, error: BaseException) -> None:
    if path is not None:
        line = json.dumps({"url": sample.url, "key": sample.key, "error": f"{type(error).__name__}: {error}"})
        Path(path).parent.mkdir(parents=True, exist_ok=True)  # a rank on a node without the main rank's folder
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


class TrainStream(torch.utils.data.IterableDataset):
    """Endless, resumable batches ``(images, token_ids, skipped)`` for one rank; each worker builds whole batches.

    ``skipped`` counts what was dropped while building the batch: ``{"samples": undecodable samples,
    "shards": bad shards}`` (the latter only with ``bad_shards="skip"``).
    """

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
        if spec.bad_shards not in BAD_SHARD_POLICIES:
            raise DataError(f"bad_shards must be one of {', '.join(BAD_SHARD_POLICIES)}, not {spec.bad_shards!r}")
        if not spec.resampled and len(spec.urls) < num_slots:
            raise DataError(
                f"{len(spec.urls)} shard(s) cannot be split across {world_size} rank(s) x {self.num_workers} "
                "worker(s) without duplication: write more shards, use fewer workers, or set data.resampled"
            )

    def batches_before(self, worker: int) -> int:
        """How many batches ``worker`` delivered before ``start_batch`` (the DataLoader visits workers in turn)."""
        return max(0, (self.start_batch - worker + self.num_workers - 1) // self.num_workers)

    def raw_samples(
        self,
        worker: int,
        on_bad_shard: Callable[[ShardError], None] | None = None,
        on_excluded: Callable[[Sample], None] | None = None,
    ) -> Iterator[Sample]:
        """The shuffled raw sample stream of (this rank, ``worker``), without the excluded keys."""
        slot = self.rank * self.num_workers + worker
        num_slots = self.world_size * self.num_workers
        urls = _slot_shards(self.spec.urls, self.spec.seed, slot, num_slots, self.spec.resampled)
        samples = iterate_samples(urls, bad_shards=self.spec.bad_shards, on_bad_shard=on_bad_shard)
        if self.spec.exclude:
            samples = _without(samples, self.spec.exclude, on_excluded)
        rng = random.Random(_sample_seed(self.spec.seed, slot, -1))
        return shuffled(samples, self.spec.shuffle_buffer, rng)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, int]]]:
        info = torch.utils.data.get_worker_info()
        if info is not None and info.num_workers != self.num_workers:
            raise DataError(f"stream built for {self.num_workers} workers runs in {info.num_workers}")
        # The DataLoader asks its workers in turn starting from worker 0, so after ``start_batch`` batches
        # its worker 0 must play the stream that delivers global batch ``start_batch``.
        worker = ((info.id if info is not None else 0) + self.start_batch) % self.num_workers
        slot = self.rank * self.num_workers + worker
        to_skip = self.batches_before(worker) * self.spec.batch_size
        skipped_before = _read_skip_log(self.spec.skip_log) if to_skip else set()
        skipped: Counter[str] = Counter()
        images: list[torch.Tensor] = []
        captions: list[str] = []

        def bad_shard(error: ShardError) -> None:
            if to_skip == 0:  # shards met while fast-forwarding were counted by the interrupted run
                skipped["shards"] += 1

        def excluded(sample: Sample) -> None:
            if to_skip == 0:
                skipped["excluded"] += 1

        for index, sample in enumerate(self.raw_samples(worker, bad_shard, excluded)):
            if to_skip:  # fast-forward without decoding: the samples delivered before are the ones not logged bad
                to_skip -= (sample.url, sample.key) not in skipped_before
                continue
            try:
                image, caption = decode_pair(sample, self.spec.image_keys, self.spec.text_key)
            except (DataError, *DECODE_ERRORS) as exc:
                warnings.warn(f"skipping sample {sample.key} of {sample.url}: {exc}", stacklevel=2)
                _log_skip(self.spec.skip_log, sample, exc)
                skipped["samples"] += 1
                continue
            with torch.random.fork_rng(devices=[]):
                # the CPU generator alone: torch.manual_seed would also queue lazy CUDA/XPU/MTIA seeding calls,
                # each formatting a stack trace, which cost a third of a tiny model's step on the CPU
                torch.default_generator.manual_seed(_sample_seed(self.spec.seed, slot, index))
                images.append(self.transform(image))
            captions.append(caption)
            if len(images) == self.spec.batch_size:
                yield torch.stack(images), self.tokenizer(captions), {"samples": 0, "shards": 0, "excluded": 0,
                                                                      **skipped}  # fmt: skip
                images, captions = [], []
                skipped.clear()


def eval_batches(
    urls: list[str],
    transform: Callable[[Image.Image], torch.Tensor],
    tokenizer: Callable[[list[str]], torch.Tensor],
    *,
    batch_size: int,
    max_samples: int | None = None,
    image_keys: tuple[str, ...] = IMAGE_EXTENSIONS,
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
    """Wraps the training batch iterator: yields ``(images, token_ids)``, accumulates the seconds spent waiting
    for the next batch and the samples and shards the stream skipped (:meth:`take_skipped`)."""

    def __init__(self, iterator: Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, int]]]) -> None:
        self.iterator = iterator
        self.wait_seconds = 0.0
        self.skipped: Counter[str] = Counter()

    def __iter__(self) -> TimedLoader:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        start = time.perf_counter()
        images, tokens, skipped = next(self.iterator)
        self.wait_seconds += time.perf_counter() - start
        self.skipped.update(skipped)
        return images, tokens

    def take_skipped(self) -> dict[str, int]:
        """``{"skipped_samples": n, "skipped_shards": m, "excluded_samples": e}`` since the last call, summed over
        ranks when distributed."""
        counts = torch.tensor([self.skipped["samples"], self.skipped["shards"], self.skipped["excluded"]],
                              dtype=torch.long)  # fmt: skip
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            if torch.distributed.get_backend() == "nccl":
                counts = counts.cuda()
            torch.distributed.all_reduce(counts)
        self.skipped.clear()
        return {"skipped_samples": int(counts[0]), "skipped_shards": int(counts[1]), "excluded_samples": int(counts[2])}


def make_train_loader(
    stream: TrainStream, *, pin_memory: bool = False, prefetch_factor: int = 2, worker_nice: int = 0
) -> torch.utils.data.DataLoader:
    """A DataLoader over a TrainStream: batches are already built in the workers, so ``batch_size=None``.

    ``worker_nice`` lowers the workers' scheduling priority (``os.nice``): on a CPU run the step's threads and the
    workers share the cores, and a worker that preempts one thread of a parallel region stalls them all; niced
    workers decode in the cores' idle moments instead (``benchmarks/train_step.py``: median 0.97x to 1.11x
    open_clip_train's samples/s).
    """
    workers = stream.loader_workers
    return torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor if workers else None,
        persistent_workers=False,
        worker_init_fn=functools.partial(_lower_priority, worker_nice) if worker_nice else None,
    )


def _lower_priority(nice: int, worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: this worker process runs ``nice`` steps below the trainer."""
    os.nice(nice)
