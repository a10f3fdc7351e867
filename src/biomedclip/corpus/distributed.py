"""Executors: run a function over work units in local worker processes or on Ray, the same code on both.

``run_batches`` runs phase 1: each unit is a batch of articles that the worker processes and writes into OUT
itself (``batches.process_batch``); only small ``BatchCounts`` come back. At most ``4 * workers`` batches are
in flight, taken lazily from the listing, so the driver's memory stays flat whatever the corpus size.
A worker process that dies (a decoder's segfault, the OOM killer) costs one article, not the build: the
batches that were in flight are rerun one article at a time, and the article that kills a worker again is
recorded as ``worker_crashed``. The broken pool's other workers are killed, not left to end by themselves.

``map_units`` runs a phase 2 stage (a picklable function over independent units): on a process pool, or as
a Ray Data pipeline (``map_batches`` over the units, streamed, results in order). Its pool's processes come
from a fork server (started once, lean, with the stage modules imported), not from the driver, so a worker's
memory is its unit's, never a copy of the driver's.

Worker processes die with the driver (``PR_SET_PDEATHSIG`` on Linux; phase 2's fork server too, see
``lifeline.py``, and its workers with it), so ``kill -9`` of a build, in either phase, leaves no orphans. An
interrupted driver (SIGINT, SIGTERM, any exception) kills its pool's workers at once instead of waiting for
their units to finish, so the build stops, and its lock is released, within a second or two.
Ray: ``engine="ray"`` connects to ``RAY_ADDRESS`` when set, else starts a local Ray with ``workers``
CPUs; the workers then write into OUT, which must be reachable from every node (a shared file system or s3).
Every process of a local Ray the build started dies with the driver, on any signal (``ray_reaper.py``); a
cluster it connected to keeps running (Ray ends the tasks of a driver that is gone).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from biomedclip.corpus.articles import WorkConfig, article_name
from biomedclip.corpus.batches import BatchCounts, WorkItem, WorkStore, process_batch
from biomedclip.corpus.ray_reaper import OWNER
from biomedclip.errors import RunError

ENGINES = ("local", "ray")
DRIVER_PID = "BIOMEDCLIP_BUILD_DRIVER_PID"  # read by phase 2's fork server (lifeline.py)
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> None:
    """In a child process: ask Linux to SIGKILL it when its parent dies (no-op elsewhere); ``parent`` is the pid
    it must have (default: its parent now), so a child whose parent died before this ran exits at once."""
    parent = os.getppid() if parent is None else parent
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _pool(workers: int, context: Any = None, parent: int | None = None) -> ProcessPoolExecutor:
    """A pool whose workers die with ``parent`` (default: this process, which forks them)."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=die_with_parent,
                               initargs=(os.getpid() if parent is None else parent,))  # fmt: skip


def _stage_context() -> tuple[Any, int]:
    """The fork-server context of phase 2's pools and the fork server's pid; it is started from this thread (the
    driver's main thread) and dies with the driver (``lifeline.py``). It preloads the stage functions' module and
    pandas (skipped where not installed), which pyarrow imports at the first ``pa.table``: 0.13 s of CPU in every
    worker of every pool otherwise."""
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["biomedclip.corpus.lifeline", "biomedclip.corpus.assemble", "pandas"])
    os.environ[DRIVER_PID] = str(os.getpid())
    forkserver.ensure_running()
    return context, forkserver._forkserver._forkserver_pid  # the parent of the pool's workers


def kill_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a pool now: kill its workers (their units are lost; the build was interrupted), then shut it down
    without waiting. ``shutdown(wait=True)`` after an interrupt could wait for long units, or forever."""
    for process in list((pool._processes or {}).values()):  # the executor has no public way to reach them
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


class _Local:
    """A process pool (``workers > 0``) or this process, behind submit/wait."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool = _pool(workers) if workers > 0 else None

    def submit(self, fn: Callable, *args: Any) -> Future:
        if self.pool is None:
            future: Future = Future()
            future.set_result(fn(*args))
            return future
        return self.pool.submit(fn, *args)

    def restart(self) -> None:
        """A new pool for a broken one, whose surviving workers are killed: one may never end by itself (it
        swallowed the pool's SIGTERM as the build's SystemExit inside a task, then blocks on the task queue's lock
        that a killed worker held), and the broken pool's manager thread, and with it the build, would wait for it
        forever."""
        assert self.pool is not None
        kill_pool(self.pool)
        self.pool = _pool(self.workers)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def kill(self) -> None:
        if self.pool is not None:
            kill_pool(self.pool)


def _isolate(items: list[WorkItem], executor: _Local, config: WorkConfig, store: WorkStore) -> Iterator[BatchCounts]:
    """Rerun the articles of broken batches one at a time; the one that breaks the pool again is a crash."""
    for item in items:
        try:
            yield executor.submit(process_batch, [item], config, store).result()
        except BrokenProcessPool:
            executor.restart()
            yield process_batch([item], config, store, crashed=(article_name(item.meta, item.source),))


def run_batches(
    engine: str, batches: Iterable[list[WorkItem]], config: WorkConfig, store: WorkStore, workers: int
) -> Iterator[BatchCounts]:
    """Process and write every batch; yields each batch's counts in completion order."""
    if engine == "ray":
        yield from _run_ray(batches, config, store, workers)
        return
    if engine != "local":
        raise ValueError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    executor = _Local(workers)
    try:
        pending: dict[Future, list[WorkItem]] = {}
        window = max(1, 4 * workers)
        for items in batches:
            try:
                pending[executor.submit(process_batch, items, config, store)] = items
            except BrokenProcessPool:  # a worker died while this batch was being sent
                yield from _rerun_broken(list(items), pending, executor, config, store)
                continue
            while len(pending) >= window:
                yield from _collect(pending, executor, config, store)
        while pending:
            yield from _collect(pending, executor, config, store)
    except BaseException:  # interrupted (SIGINT, SIGTERM, the consumer gone): do not wait for the batches in flight
        executor.kill()
        raise
    executor.close()


def _collect(
    pending: dict[Future, list[WorkItem]], executor: _Local, config: WorkConfig, store: WorkStore
) -> Iterator[BatchCounts]:
    done, _ = wait(pending, return_when=FIRST_COMPLETED)
    broken: list[WorkItem] = []
    for future in done:
        items = pending.pop(future)
        try:
            yield future.result()
        except BrokenProcessPool:
            broken += items
    if broken:
        yield from _rerun_broken(broken, pending, executor, config, store)


def _rerun_broken(
    broken: list[WorkItem], pending: dict[Future, list[WorkItem]], executor: _Local, config: WorkConfig,
    store: WorkStore,
) -> Iterator[BatchCounts]:  # fmt: skip
    """After the pool broke: keep the batches in flight that finished, rerun the others and ``broken`` alone."""
    for future in list(pending):
        items = pending.pop(future)
        if future.done() and not future.cancelled() and future.exception() is None:
            yield future.result()
        else:
            broken += items
    executor.restart()
    yield from _isolate(broken, executor, config, store)


def start_ray(workers: int) -> None:
    """Connect to ``RAY_ADDRESS`` or start a local Ray with ``workers`` CPUs (once per process).

    A local Ray is this build's own: its processes carry a marker in their environment and die with the driver
    (``ray_reaper.py``); a cluster named by ``RAY_ADDRESS`` is only connected to, never stopped.
    """
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        token = _start_reaper()
        os.environ[OWNER] = token  # inherited by the processes ray.init starts, and by the workers they start
        try:
            ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False)
        finally:
            del os.environ[OWNER]
    ray.data.DataContext.get_current().enable_progress_bars = False


_reaper: tuple[subprocess.Popen, str, int] | None = None  # this process's Ray reaper, its token, its pipe


def _start_reaper() -> str:
    """Start this process's Ray reaper (once) and return the token it looks for."""
    global _reaper
    if _reaper is None or _reaper[0].poll() is not None:
        read, write = os.pipe()  # the write end stays in this process (not inheritable): its end is our death
        token = uuid.uuid4().hex
        env = {k: v for k, v in os.environ.items() if k != OWNER}
        reaper = subprocess.Popen([sys.executable, "-m", "biomedclip.corpus.ray_reaper", token], stdin=read,
                                  env=env, start_new_session=True)  # fmt: skip
        os.close(read)
        _reaper = (reaper, token, write)
    return _reaper[1]


def stop_fork_server(grace_s: float = 2.0) -> None:
    """Stop phase 2's fork server, if running (the next pool starts one): a finished build leaves no process
    behind, and its workers' CPU time is accounted to this process (``RUSAGE_CHILDREN``).

    It stops by itself once every process holding its pipe is gone; after an interrupt a worker that was being
    started when its pool was killed may still hold it, so after ``grace_s`` the fork server is killed, and
    that worker with it (``die_with_parent``).
    """
    from multiprocessing import forkserver, util

    server = forkserver._forkserver  # CPython's own; this is its _stop_unlocked with a bound on the wait
    with server._lock:
        pid = server._forkserver_pid
        if pid is None:
            return
        os.close(server._forkserver_alive_fd)  # what asks it to stop
        deadline = time.monotonic() + grace_s
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.02)
        if not util.is_abstract_socket_namespace(server._forkserver_address):
            os.unlink(server._forkserver_address)
        server._forkserver_pid = server._forkserver_alive_fd = server._forkserver_address = None


def _run_ray(
    batches: Iterable[list[WorkItem]], config: WorkConfig, store: WorkStore, workers: int
) -> Iterator[BatchCounts]:
    import ray

    start_ray(workers)
    task = ray.remote(max_retries=0)(process_batch)
    window = max(1, 4 * workers)
    pending: dict[Any, list[WorkItem]] = {}

    def collect() -> Iterator[BatchCounts]:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            items = pending.pop(ref)
            try:
                yield ray.get(ref)
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayTaskError) as exc:
                if isinstance(exc, ray.exceptions.RayTaskError) and not isinstance(exc.cause, SystemExit):
                    raise
                for item in items:  # rerun alone; an article that kills its worker again is recorded as such
                    try:
                        yield ray.get(task.remote([item], config, store))
                    except ray.exceptions.WorkerCrashedError:
                        yield process_batch([item], config, store, crashed=(article_name(item.meta, item.source),))

    for items in batches:
        pending[task.remote(items, config, store)] = items
        while len(pending) >= window:
            yield from collect()
    while pending:
        yield from collect()


def map_units(fn: Callable, units: list[Any], *args: Any, engine: str = "local", workers: int = 0) -> list[Any]:
    """``[fn(unit, *args) for unit in units]`` in worker processes or on Ray Data, results in unit order."""
    if engine == "ray":
        return _map_ray_data(fn, units, args, workers)
    if workers <= 0 or not units:  # one unit goes to a worker too: the driver never holds a stage's data
        return [fn(unit, *args) for unit in units]
    pool = _pool(workers, *_stage_context())
    try:
        results = list(pool.map(fn, units, *[[a] * len(units) for a in args]))
    except BrokenProcessPool as error:  # a worker killed (OOM killer, kill -9): the build stops, a rerun resumes
        kill_pool(pool)
        raise RunError(
            f"a worker process of phase 2 ({fn.__name__}) died (killed, or out of memory); nothing was released: "
            "rerun the build to finish it"
        ) from error
    except BaseException:
        kill_pool(pool)
        raise
    pool.shutdown(wait=True)
    return results


def _map_ray_data(fn: Callable, units: list[Any], args: tuple, workers: int) -> list[Any]:
    """A Ray Data pipeline over the unit indices: ``map_batches`` streams them through ``fn`` on the cluster."""
    import ray

    if not units:
        return []
    start_ray(workers)
    shared = ray.put((fn, units, args))  # once in the object store, not once per unit

    def apply(batch: dict[str, Any]) -> dict[str, Any]:
        fn, units, args = ray.get(shared)
        return {"id": batch["id"], "result": [pickle.dumps(fn(units[i], *args)) for i in batch["id"]]}

    dataset = ray.data.range(len(units), override_num_blocks=len(units)).map_batches(apply, batch_size=1)
    rows = sorted(dataset.iter_rows(), key=lambda row: row["id"])
    return [pickle.loads(row["result"]) for row in rows]  # our own stage results, between our own processes
