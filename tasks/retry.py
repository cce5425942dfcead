"""Writes that must survive a Redis restart, and how long a stopping process still tries.

A job's claim and end must not be lost when Redis restarts, so they are
retried until Redis answers. A process that was told to stop (SIGTERM)
gives Redis at most ``STOP_REDIS_SECONDS`` more: it obeys the signal even
while Redis is down (its job is then ended by the board's next worker or
by its lease, once Redis is back).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("lava-dispatch.worker")

STOP_REDIS_SECONDS = 5.0
_stop_deadline: float | None = None  # monotonic: set when this process begins to stop

T = TypeVar("T")


def start_stop_clock() -> None:
    """From now on Redis is given at most ``STOP_REDIS_SECONDS`` more (safe in a signal handler)."""
    global _stop_deadline
    if _stop_deadline is None:
        _stop_deadline = time.monotonic() + STOP_REDIS_SECONDS


def stop_deadline() -> float | None:
    """When this stopping process gives up on Redis (monotonic), None while it is not stopping."""
    return _stop_deadline


def retry_redis(what: str, fn: Callable[[], T], seconds: float = 600.0) -> T:
    """Call fn until Redis answers (a restart of Redis must not lose a job's end).

    Once the process is stopping, it tries for at most ``STOP_REDIS_SECONDS``
    more: a SIGTERM is obeyed even while Redis is down.
    """
    import redis

    deadline = time.monotonic() + seconds
    delay = 0.2
    while True:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            if _stop_deadline is not None:
                deadline = min(deadline, _stop_deadline)
            if time.monotonic() > deadline:
                raise
            log.warning("%s: Redis unreachable (%s); retrying", what, exc)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


__all__ = ["STOP_REDIS_SECONDS", "start_stop_clock", "stop_deadline", "retry_redis"]
