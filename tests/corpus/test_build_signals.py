"""Signals (issue 23): every process a build starts dies with its driver in either phase (the phase 2 fork server,
its workers and the resource tracker too); SIGINT and SIGTERM stop a build within a bound and release its lock;
a lock whose build is dead is taken over with a warning."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from biomedclip.corpus.build import build

from .test_build_reliability import PACKAGE, Articles, _article

DRIVER = (  # Ctrl-C's handler set as an interactive shell leaves it: a runner started as a background job ignores
    # SIGINT, and its children inherit that
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from biomedclip.corpus.build import BuildConfig, build; "
    "from biomedclip.corpus.sources import open_source; "
    "build([open_source(sys.argv[1])], sys.argv[2], BuildConfig(batch_articles=1), workers=2)"
)


def _command_line(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # gone or a zombie meanwhile
        return ""


def _start_driver(fixtures: Path, tmp_path: Path) -> subprocess.Popen:
    corpus = tmp_path / "corpus"
    for i in range(30):
        shutil.copytree(fixtures / PACKAGE, corpus / f"PMC8{i:07d}")
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(corpus), str(tmp_path / "out")])


def _wait_for_phase(driver: subprocess.Popen, phase: int) -> list[psutil.Process]:
    """The driver's descendants once ``phase`` runs: phase 1 has pool workers and no fork server, phase 2 a fork
    server (started for its first stage)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and driver.poll() is None:
        children = psutil.Process(driver.pid).children(recursive=True)
        forkserver = any("forkserver" in _command_line(p) for p in children)
        if (phase == 2 and forkserver) or (phase == 1 and not forkserver and len(children) >= 2):
            time.sleep(0.3)  # into the phase: pools at work
            return psutil.Process(driver.pid).children(recursive=True)
        time.sleep(0.05)
    pytest.fail(f"phase {phase} was not seen (driver exit {driver.poll()})")


def _lock_is_free(out: Path) -> bool:
    with open(out / "build.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


@pytest.mark.parametrize("phase", [1, 2])
def test_every_process_dies_with_a_driver_killed_in_either_phase(shared_fixtures: Path, tmp_path: Path, phase) -> None:
    driver = _start_driver(shared_fixtures, tmp_path)
    descendants = _wait_for_phase(driver, phase)
    if phase == 2:
        names = " ".join(_command_line(p) for p in descendants)
        assert "forkserver" in names and "resource_tracker" in names
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    _, alive = psutil.wait_procs(descendants, timeout=20)
    for process in alive:
        process.kill()
    assert not alive, f"outlived the driver: {[_command_line(p)[:80] for p in alive]}"


@pytest.mark.parametrize("phase", [1, 2])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_stop_a_build_and_release_its_lock(shared_fixtures, tmp_path, signum, phase) -> None:
    driver = _start_driver(shared_fixtures, tmp_path)
    descendants = _wait_for_phase(driver, phase)
    os.kill(driver.pid, signum)  # the driver alone, not its process group
    sent = time.monotonic()
    try:
        code = driver.wait(timeout=15)
    except subprocess.TimeoutExpired:
        driver.kill()
        pytest.fail("the build did not stop within 15 s")
    assert code == (-signal.SIGINT if signum == signal.SIGINT else 128 + signal.SIGTERM)
    _, alive = psutil.wait_procs(descendants, timeout=10)
    for process in alive:
        process.kill()
    assert not alive, f"outlived the build: {[_command_line(p)[:80] for p in alive]}"
    assert time.monotonic() - sent < 15 and _lock_is_free(tmp_path / "out")


def test_a_lock_held_for_a_dead_build_is_taken_over(shared_fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer exists (the build that wrote the lock file)
    holder_text = f"pid {dead.pid} on {socket.gethostname()}"
    hold = (
        "import fcntl, sys, time; handle = open(sys.argv[1], 'a+'); fcntl.flock(handle, fcntl.LOCK_EX); "
        "handle.write(sys.argv[2] + '\\n'); handle.flush(); print('held', flush=True); time.sleep(120)"
    )  # a leftover process of that build, which inherited the open lock file
    leftover = subprocess.Popen([sys.executable, "-c", hold, str(out / "build.lock"), holder_text],
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert leftover.stdout.readline().strip() == "held"
        summary = build([Articles([_article(shared_fixtures, "PMC1")])], out)
        assert summary.accepted > 0
        (warning,) = [w for w in summary.warnings if "build.lock" in w]
        assert holder_text in warning and "taken over" in warning
        assert (out / "build.lock").read_text().startswith(f"pid {os.getpid()} on ")
    finally:
        leftover.kill()
        leftover.wait()


def test_a_lock_held_for_a_live_build_is_still_refused(shared_fixtures: Path, tmp_path: Path) -> None:
    from biomedclip.errors import InputError

    out = tmp_path / "out"
    out.mkdir()
    with open(out / "build.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        held.flush()
        with pytest.raises(InputError, match="another build is writing to"):
            build([Articles([_article(shared_fixtures, "PMC1")])], out)


def _busy(started: str) -> None:
    Path(started).write_text(str(os.getpid()))
    time.sleep(3)


def test_a_broken_pools_busy_worker_is_stopped_and_its_manager_ends(tmp_path: Path) -> None:
    """An idle worker killed (kill -9, the OOM killer) while it waits for work, holding the task queue's lock,
    breaks the pool while another is mid-task. The pool stops that one with SIGTERM, which the build's own SIGTERM
    handler (inherited by forked workers) turned into an exception the task swallowed: the worker lived on, blocked
    on the dead one's lock, the old pool's manager thread never ended and the build never exited. Restarting the
    pool must leave no worker of the old one and no manager thread running."""
    from concurrent.futures.process import BrokenProcessPool

    from biomedclip.corpus.build import _sigterm_exits
    from biomedclip.corpus.distributed import _Local

    started = tmp_path / "started"
    with _sigterm_exits():
        executor = _Local(2)
        busy = executor.submit(_busy, str(started))
        deadline = time.monotonic() + 30
        while not (started.exists() and started.read_text()) and time.monotonic() < deadline:
            time.sleep(0.01)
        manager, workers = executor.pool._executor_manager_thread, list(executor.pool._processes.values())
        idle = next(worker for worker in workers if worker.pid != int(started.read_text()))
        time.sleep(0.2)  # the idle worker is waiting for work
        os.kill(idle.pid, signal.SIGKILL)
        with pytest.raises(BrokenProcessPool):
            busy.result(timeout=30)
        executor.restart()
    try:
        manager.join(timeout=10)
        assert not manager.is_alive(), "the broken pool's manager thread is still running"
        assert not any(worker.is_alive() for worker in workers), "a worker of the broken pool is still alive"
        assert executor.submit(len, "four").result(timeout=30) == 4  # the new pool works
    finally:
        for worker in workers:
            worker.kill()
        executor.close()
