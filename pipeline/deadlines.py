"""Deadlines of a running job: the job's, and each running action's.

The nearest deadline is armed as a SIGALRM timer in the main thread, so
that plain Python code is interrupted too; every blocking helper is bounded
by ``remaining()`` as well, which is what works in other threads. Both ways
raise the same error: ActionTimeout for an action, JobTimeout for the job.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from pipeline.errors import ActionTimeout, JobTimeout, LavaError


class Timed(Protocol):
    """What a deadline's message names: an action and its timeout."""

    @property
    def name(self) -> str: ...

    @property
    def timeout(self) -> float: ...


class Deadlines:
    """A stack of deadlines; the nearest one is armed as a SIGALRM timer in the main thread."""

    def __init__(self) -> None:
        self.stack: list[tuple[float, Timed | None, type[LavaError]]] = []
        self.main_thread = threading.current_thread() is threading.main_thread()

    def nearest(self) -> tuple[float, Timed | None, type[LavaError]] | None:
        return min(self.stack, key=lambda item: item[0]) if self.stack else None

    def remaining(self) -> float | None:
        nearest = self.nearest()
        return None if nearest is None else nearest[0] - time.monotonic()

    def expired_error(self) -> LavaError | None:
        nearest = self.nearest()
        if nearest is None or nearest[0] > time.monotonic():
            return None
        _, action, kind = nearest
        if kind is JobTimeout:
            return JobTimeout("job timeout: the job ran longer than its timeouts.job")
        return ActionTimeout(f"{action.name}: timeout. {action.timeout:g} seconds" if action else "timeout")

    @contextmanager
    def push(self, deadline: float | None, action: Timed | None, kind: type[LavaError]) -> Iterator[None]:
        if deadline is None:
            yield
            return
        entry = (deadline, action, kind)
        self.stack.append(entry)
        self._arm()
        try:
            yield
        finally:
            self.stack.remove(entry)
            self._arm()

    def clear(self) -> None:
        """Drop every deadline (finalize must not be interrupted)."""
        self.stack.clear()
        self._arm()

    def _arm(self) -> None:
        if not self.main_thread or threading.current_thread() is not threading.main_thread():
            return
        remaining = self.remaining()
        if remaining is None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            return
        signal.signal(signal.SIGALRM, self._fire)
        signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.001))

    def _fire(self, signum: int, frame: Any) -> None:
        error = self.expired_error()
        if error is not None:
            raise error
        self._arm()  # woke a little early: arm again
