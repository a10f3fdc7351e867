"""Embed many corpus shards into one vector folder: in this process, as one torchrun rank, or on Ray actors.

    biomedclip embed -m MODEL -s 'corpus/shards::corpus/panels/shards' -o vectors/           # one process
    torchrun --nproc_per_node 8 -m biomedclip embed -m MODEL -s ... -o vectors/               # one per GPU
    torchrun --nnodes 4 --node_rank N --master_addr HOST --nproc_per_node 8 -m biomedclip embed ...
    RAY_ADDRESS=auto biomedclip embed --engine ray -w 32 -m MODEL -s 's3://...' -o /shared/vectors/

Every engine runs the same unit, :class:`ShardWorker` (one model copy embedding one shard at a time, see
:mod:`biomedclip.serve.vector_shards`), so the folder is byte-identical whatever the engine or the number of
workers. Under torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set) rank r takes shards r, r + W, r + 2W, ... of
the listed shards, on GPU ``LOCAL_RANK``; the ranks share nothing but the folder, so no process group is needed.
On Ray each actor holds one model copy (one GPU each when the device is CUDA) and takes the next shard when it
is done with one. A shard that cannot be read is reported and the others go on; rerunning the same command
redoes only the shards without a valid done marker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from biomedclip.api import Embedder
from biomedclip.errors import RunError
from biomedclip.serve.vector_shards import ShardOutcome, embed_shard, open_vector_folder, vector_stems
from biomedclip.shards import ShardError

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Rank:
    """This process's place among torchrun's: rank, world size and the GPU index on its node (None alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int | None = None

    @classmethod
    def from_env(cls) -> Rank:
        """Read torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (one process when unset)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        if not 0 <= rank < world:
            raise RunError(f"RANK={rank} is not within WORLD_SIZE={world}")
        local = os.environ.get("LOCAL_RANK")
        return cls(rank, world, int(local) if local is not None else None)

    def share(self, shards: Sequence[str]) -> list[str]:
        """The shards this rank embeds: every ``world``-th, from its rank on (disjoint, together all)."""
        return list(shards)[self.rank :: self.world]


class ShardWorker:
    """One model copy writing shards into a vector folder; images decode on ``decode_threads`` threads."""

    def __init__(
        self,
        embedder: Embedder,
        folder: str | Path,
        *,
        batch_size: int = 64,
        decode_threads: int = 4,
        precision: str = "fp32",
    ) -> None:
        self.embedder = embedder
        self.folder = open_vector_folder(folder, embedder.name, embedder.dim)
        self.batch_size = batch_size
        self.precision = precision
        self.pool = ThreadPoolExecutor(max(1, decode_threads)) if decode_threads > 0 else None

    def __call__(self, shard: str, stem: str) -> ShardOutcome:
        """Embed (or keep) one shard; a shard that cannot be read, or a stem held by another shard, is reported."""
        try:
            return embed_shard(self.embedder, shard, self.folder, stem, batch_size=self.batch_size, pool=self.pool,
                               precision=self.precision)  # fmt: skip
        except (ShardError, RunError) as error:
            return ShardOutcome(shard, stem, error=str(error))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def embed_local(
    worker: ShardWorker,
    shards: Sequence[str],
    rank: Rank = Rank(),
    on_shard: Callable[[ShardOutcome], None] | None = None,
) -> list[ShardOutcome]:
    """Embed this rank's share of ``shards`` (all of them in one process), in order."""
    stems = vector_stems(shards)  # every rank checks the whole list, so all ranks refuse a clash alike
    outcomes = []
    for shard in rank.share(shards):
        outcome = worker(shard, stems[shard])
        outcomes.append(outcome)
        if on_shard is not None:
            on_shard(outcome)
    return outcomes


def embed_on_ray(
    model: str,
    device: str,
    shards: Sequence[str],
    folder: str | Path,
    *,
    workers: int,
    batch_size: int = 64,
    decode_threads: int = 4,
    precision: str = "fp32",
    on_shard: Callable[[ShardOutcome], None] | None = None,
) -> list[ShardOutcome]:
    """Embed ``shards`` on ``workers`` Ray actors (``RAY_ADDRESS``'s cluster, else a local Ray), each loading
    ``model`` on ``device`` (one GPU per actor for CUDA); outcomes in shard order.

    Raises:
        RunError: an actor could not load the model or open the folder.
    """
    import ray
    from ray.util import ActorPool

    from biomedclip.corpus.distributed import start_ray

    stems = vector_stems(shards)
    start_ray(workers)
    gpu = device.startswith("cuda")
    actor = ray.remote(num_cpus=0 if gpu else 1, num_gpus=1 if gpu else 0, max_restarts=0)(_RayShardWorker)
    settings = (model, "cuda" if gpu else device, str(folder), batch_size, decode_threads, precision)
    actors = [actor.remote(*settings) for _ in range(max(1, workers))]
    try:
        try:
            ray.get([a.ready.remote() for a in actors])
        except ray.exceptions.RayTaskError as error:
            raise RunError(f"a Ray worker could not start: {error.cause}") from error
        by_shard = {}
        try:
            for outcome in ActorPool(actors).map_unordered(lambda a, s: a.embed.remote(s, stems[s]), list(shards)):
                by_shard[outcome.shard] = outcome
                if on_shard is not None:
                    on_shard(outcome)
        except ray.exceptions.RayError as error:  # a worker died (out of memory, a lost node)
            raise RunError(f"a Ray worker failed after {len(by_shard)} shards: {error}; rerun to resume") from error
    finally:
        for a in actors:
            ray.kill(a)
    return [by_shard[shard] for shard in shards]


class _RayShardWorker:
    """A :class:`ShardWorker` in a Ray actor: the model is loaded once, in the actor's process."""

    def __init__(
        self, model: str, device: str, folder: str, batch_size: int, decode_threads: int, precision: str
    ) -> None:
        self.error: Exception | None = None
        try:
            from biomedclip.api import load

            self.worker = ShardWorker(load(model, device=device), folder, batch_size=batch_size,
                                      decode_threads=decode_threads, precision=precision)  # fmt: skip
        except Exception as error:  # raised from ready(), where the driver sees it as the cause
            self.error = error

    def ready(self) -> bool:
        if self.error is not None:
            raise self.error
        return True

    def embed(self, shard: str, stem: str) -> ShardOutcome:
        return self.worker(shard, stem)
