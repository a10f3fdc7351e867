"""Run as ``python -m biomedclip.corpus.ray_reaper TOKEN`` by a build that starts its own local Ray: it waits
for the end of its standard input (a pipe whose only writer is the build's driver, so the end comes when the
driver exits, however: normally, SIGINT, SIGTERM or ``kill -9``), then kills every process of this user whose
environment holds ``BIOMEDCLIP_RAY_OWNER=TOKEN``, until none is left (at most ``GIVE_UP_S`` seconds).

Ray's head processes share their driver's fate already, but the worker processes the raylet starts, and the
agents, can outlive it for tens of seconds. The driver sets the marker in its environment before ``ray.init``
starts the local Ray, so every process of that Ray inherits it; a Ray cluster the build only connects to
(``RAY_ADDRESS``) never has it and is left alone (Ray itself ends the tasks of a driver that is gone).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

OWNER = "BIOMEDCLIP_RAY_OWNER"
GIVE_UP_S = 30.0


def marked_processes(token: str) -> list[int]:
    """Pids of this user's processes (other than this one) whose environment holds ``OWNER=token``."""
    marker = f"{OWNER}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid == os.getuid() and marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def reap(token: str, give_up_s: float = GIVE_UP_S) -> None:
    """Kill the marked processes until two scans in a row find none (a raylet may start a worker meanwhile)."""
    deadline, quiet = time.monotonic() + give_up_s, 0
    while quiet < 2 and time.monotonic() < deadline:
        pids = marked_processes(token)
        for pid in pids:
            with contextlib.suppress(OSError):  # gone meanwhile
                os.kill(pid, signal.SIGKILL)
        quiet = 0 if pids else quiet + 1
        time.sleep(0.2)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: outlive the driver
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while sys.stdin.buffer.read(4096):  # the driver never writes: this returns when it is gone
        pass
    reap(sys.argv[1])


if __name__ == "__main__":
    main()
