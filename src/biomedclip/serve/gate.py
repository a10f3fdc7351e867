"""The service's inference gate: one model call at a time, taken in arrival order, within each request's budget.

Requests take *turns*: a turn is one small model call (one query embedding, one image, a few dozen prompts). A
request with much work (a ``/classify`` with many labels) takes many turns and queues again before each, so a
``/search`` that arrives meanwhile waits for at most the turns queued ahead of it, never for the whole big
request. Each request has a deadline; a request that cannot start a turn before its deadline gets
:class:`BudgetExceeded`. ``held_for`` tells how long the current turn has run, which ``/healthz`` reports.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class BudgetExceeded(Exception):
    """A request ran out of its time budget before it could take its next turn."""


class InferenceGate:
    """A first-come-first-served lock with deadlines, and the time its current holder has held it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._mutex = threading.Lock()
        self._waiters: deque[threading.Event] = deque()
        self._held = False
        self._held_since = 0.0

    def _acquire(self, deadline: float) -> bool:
        with self._mutex:
            if not self._held and not self._waiters:
                self._held, self._held_since = True, self.clock()
                return True
            turn = threading.Event()
            self._waiters.append(turn)
        if turn.wait(max(0.0, deadline - self.clock())):
            return True
        with self._mutex:
            if turn.is_set():  # handed over just as the wait timed out
                return True
            self._waiters.remove(turn)
            return False

    def _release(self) -> None:
        with self._mutex:
            if self._waiters:  # hand the gate to the longest waiter; it stays held
                self._held_since = self.clock()
                self._waiters.popleft().set()
            else:
                self._held = False

    def run(self, work: Callable[[], T], deadline: float) -> T:
        """Run ``work`` as one turn, once every earlier arrival has had its turn.

        Raises:
            BudgetExceeded: ``deadline`` (on this gate's clock) passed before the turn could start.
        """
        if self.clock() >= deadline or not self._acquire(deadline):
            raise BudgetExceeded
        try:
            return work()
        finally:
            self._release()

    def held_for(self) -> float:
        """Seconds the current turn has held the gate (0 when it is free)."""
        with self._mutex:
            return self.clock() - self._held_since if self._held else 0.0

    def waiting(self) -> int:
        """Requests queued for a turn."""
        with self._mutex:
            return len(self._waiters)
