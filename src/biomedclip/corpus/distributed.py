"""Distributors: run ``work.process_payload`` over a stream of payloads, in worker processes or on Ray Data.

Both take an iterator of work items, each an ``Article`` whose media opener can be pickled (its XML is parsed and
its media read in the worker: S3 downloads then run in parallel) or an ``ArticlePayload`` the reader prepared.
The iterator is consumed lazily (a small window in flight, so memory stays flat whatever the corpus size);
results are ``PackedResult`` in completion order.

Ray: ``engine="ray"`` connects to ``RAY_ADDRESS`` when set (a cluster: ``RAY_ADDRESS=ray://head:10001
biomedclip corpus build ... --engine ray``), else starts a local Ray with ``workers`` CPUs. Results come back
to the driver, which alone writes under OUT, so workers need no shared file system.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from functools import partial
from itertools import islice
from typing import Any

from biomedclip.corpus.records import Article
from biomedclip.corpus.work import ArticlePayload, PackedResult, WorkConfig, process_payload, read_article

ENGINES = ("local", "ray")
WorkItem = Article | ArticlePayload


def process_packed(item: WorkItem, config: WorkConfig) -> PackedResult:
    """The per-article function every engine runs."""
    payload = read_article(item, config) if isinstance(item, Article) else item
    return PackedResult.of(process_payload(payload, config))


def run_inline(payloads: Iterable[WorkItem], config: WorkConfig) -> Iterator[PackedResult]:
    """Process in this process (``workers=0``): for debugging and tiny inputs."""
    for payload in payloads:
        yield process_packed(payload, config)


def run_local(payloads: Iterable[WorkItem], config: WorkConfig, workers: int) -> Iterator[PackedResult]:
    """Process in ``workers`` local processes, keeping at most ``4 * workers`` articles in flight."""
    window = 4 * workers
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: set[Future] = set()
        for payload in payloads:
            pending.add(pool.submit(process_packed, payload, config))
            if len(pending) >= window:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (f.result() for f in done)


def _ray_row(row: dict[str, Any], config: WorkConfig) -> dict[str, Any]:
    item: WorkItem = pickle.loads(row["payload"])  # our own work items, between our own processes
    packed = process_packed(item, config)
    return {"packed": pickle.dumps(packed)}


def run_ray(payloads: Iterable[WorkItem], config: WorkConfig, workers: int, batch: int = 256) -> Iterator[PackedResult]:
    """Process on Ray Data, ``batch`` articles per dataset, with the same per-article function."""
    import ray

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = {} if address else {"num_cpus": max(1, workers), "include_dashboard": False}
        ray.init(address=address, log_to_driver=False, **kwargs)
        ray.data.DataContext.get_current().enable_progress_bars = False
    iterator = iter(payloads)
    while chunk := list(islice(iterator, batch)):
        dataset = ray.data.from_items([{"payload": pickle.dumps(p)} for p in chunk])
        for row in dataset.map(partial(_ray_row, config=config)).iter_rows():
            yield pickle.loads(row["packed"])


def run_engine(engine: str, payloads: Iterable[WorkItem], config: WorkConfig, workers: int) -> Iterator[PackedResult]:
    """Dispatch to ``run_inline`` (local, 0 workers), ``run_local`` or ``run_ray``."""
    if engine == "ray":
        return run_ray(payloads, config, workers)
    if engine != "local":
        raise ValueError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    return run_local(payloads, config, workers) if workers > 0 else run_inline(payloads, config)
