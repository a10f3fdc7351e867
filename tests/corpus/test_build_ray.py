"""The Ray Data engine (a local Ray) runs the same per-article work and gives the same corpus as local workers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from biomedclip.corpus.build import build
from biomedclip.corpus.sources import open_source

SKIP = ("work", "report", "build.lock")


@pytest.mark.slow
def test_ray_engine_matches_local_workers(shared_fixtures: Path, tmp_path: Path) -> None:
    import ray

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("PMC7112410.tar.gz", "PMC7135076.tar.gz"):
        shutil.copy(shared_fixtures / "pmc/packages/oa_package_tarballs" / name, corpus)
    shutil.copytree(shared_fixtures / "pmc/packages/extracted/PMC10802347", corpus / "PMC10802347")
    local = build([open_source(str(corpus))], tmp_path / "local", workers=2)
    try:
        on_ray = build([open_source(str(corpus))], tmp_path / "ray", engine="ray", workers=2)
    finally:
        ray.shutdown()
    assert (on_ray.articles_processed, on_ray.accepted) == (local.articles_processed, local.accepted) == (3, 9)

    def outputs(out: Path) -> dict[str, bytes]:  # shards, catalog parts, catalog.parquet, clusters, stats
        files = sorted(p for p in out.rglob("*") if p.is_file() and p.relative_to(out).parts[0] not in SKIP)
        return {str(p.relative_to(out)): p.read_bytes() for p in files}

    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")
    assert len(outputs(tmp_path / "local")) > 8


RAY_DRIVER = (
    "import sys; from biomedclip.corpus.build import BuildConfig, build; "
    "from biomedclip.corpus.sources import open_source; "
    "build([open_source(sys.argv[1])], sys.argv[2], BuildConfig(batch_articles=1), engine='ray', workers=2)"
)
TEST_MARKER = "BIOMEDCLIP_TEST_RAY_DRIVER"


def _marked(token: str) -> list:
    """This test's processes: those whose environment holds the marker the test gave its driver (inherited by
    every process the driver starts, and by theirs); never other people's Ray processes."""
    import psutil

    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(TEST_MARKER) == token:
                found.append(process)
        except psutil.Error:  # gone, or not ours
            continue
    return found


def _name(process) -> str:
    import psutil

    try:
        return " ".join(process.cmdline())[:100]
    except psutil.Error:
        return "(gone)"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_every_process_of_its_own_ray_dies_with_the_driver(shared_fixtures: Path, tmp_path: Path, signum) -> None:
    corpus = tmp_path / "corpus"
    for i in range(40):
        shutil.copytree(shared_fixtures / "pmc/packages/extracted/PMC10802347/PMC10802347", corpus / f"PMC8{i:07d}")
    token = uuid.uuid4().hex
    env = {**os.environ, TEST_MARKER: token}
    env.pop("RAY_ADDRESS", None)
    driver = subprocess.Popen([sys.executable, "-c", RAY_DRIVER, str(corpus), str(tmp_path / "out")], env=env,
                              start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and driver.poll() is None:  # a raylet and its workers at work
            names = " ".join(_name(p) for p in _marked(token))
            if "raylet" in names and ("ray::" in names or "default_worker" in names):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"no Ray worker was seen (driver exit {driver.poll()})")
        started = _marked(token)
        os.kill(driver.pid, signum)  # the driver alone
        driver.wait(timeout=30)
        deadline = time.monotonic() + 10
        while (alive := _marked(token)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive, f"outlived the driver by 10 s: {[_name(p) for p in alive]}"
        assert len(started) >= 4  # gcs, raylet, a worker, the reaper at least: the test saw what it kills
    finally:
        if driver.poll() is None:
            driver.kill()
        for process in _marked(token):
            process.kill()


def test_a_ray_cluster_given_by_address_is_joined_not_owned(monkeypatch) -> None:
    """With ``RAY_ADDRESS`` the build connects and starts no reaper and marks nothing: that cluster outlives it."""
    import ray

    from biomedclip.corpus import distributed

    calls = []
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append((kwargs, os.environ.get(distributed.OWNER))))
    monkeypatch.setattr(distributed, "_start_reaper", lambda: pytest.fail("a reaper for a cluster it joined"))
    distributed.start_ray(2)
    assert calls == [({"address": "10.0.0.1:6379", "log_to_driver": False}, None)]


RAY_TASK_DRIVER = (
    "import subprocess, ray; from biomedclip.corpus.distributed import start_ray; start_ray(1); "
    "spawn = ray.remote(lambda: subprocess.check_output(['sh', '-c', 'setsid sleep 300 >/dev/null & echo $!'])); "
    "print(int(ray.get(spawn.remote())), flush=True); import time; time.sleep(300)"
)


@pytest.mark.slow
def test_a_process_a_ray_task_starts_dies_with_the_driver_of_its_own_ray(tmp_path: Path) -> None:
    """Deterministic: a process started by a task on the build's own Ray, orphaned at once and in a session of its
    own (no parent, group or Ray's own clean-up reaches it), is gone within 10 s of ``kill -9`` of the driver."""
    import psutil

    token = uuid.uuid4().hex
    env = {**os.environ, TEST_MARKER: token}
    env.pop("RAY_ADDRESS", None)
    driver = subprocess.Popen([sys.executable, "-c", RAY_TASK_DRIVER], env=env, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)  # fmt: skip
    try:
        pid = int(driver.stdout.readline())
        sleeper = psutil.Process(pid)
        assert sleeper.environ().get(TEST_MARKER) == token
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        deadline = time.monotonic() + 10
        while (alive := _marked(token)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive, f"outlived the driver by 10 s: {[_name(p) for p in alive]}"
    finally:
        if driver.poll() is None:
            driver.kill()
        for process in _marked(token):
            process.kill()
