"""Waiting on a group: atomic snapshots, blocking reads of its event stream, Redis errors.

A wait reads the state it waits for together with the id of the newest
event (one ``MULTI``/``EXEC``), then blocks in ``XREAD`` from exactly that
id, so a change made after the snapshot is never missed (see the
``coordinator`` docstring).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import redis
from redis.client import Pipeline

from coordinator.keys import GroupKeys
from coordinator.redis_client import redact
from coordinator.scripts import ENDED, NO_GROUP, check_status
from pipeline.coordination import StopCheck, check_timeout, wait_until
from pipeline.errors import InfrastructureError

__all__ = ["Event", "GroupEvents", "label", "redis_errors", "stream_entries"]

T = TypeVar("T")
Event = tuple[str, dict[str, str]]


def label(call: str, message_id: str | None) -> str:
    """``lava-sync 'b1'`` (or just the call) for messages."""
    return f"{call} '{message_id}'" if message_id is not None else call


@contextmanager
def redis_errors(what: str, url: str) -> Iterator[None]:
    """Turn a failed Redis call into an InfrastructureError naming ``what`` (never the password)."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise InfrastructureError(f"{what}: Redis at {redact(url)} unreachable: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise InfrastructureError(f"{what}: Redis error: {exc}") from exc


def stream_entries(reply: Any) -> list[Event]:
    """The entries of an XREAD reply on one stream, whatever the reply shape.

    redis-py answers ``[[stream, entries]]`` (RESP2 and its RESP3 default) or
    ``{stream: entries}`` / ``{stream: [entries]}`` (RESP3 native parsing).
    """
    if isinstance(reply, dict):
        groups = list(reply.values())
    else:
        groups = [entries for _stream, entries in reply]
    out: list[Event] = []
    for entries in groups:
        if entries and isinstance(entries[0], list) and entries[0] and isinstance(entries[0][0], (list, tuple)):
            entries = entries[0]
        out.extend((entry[0], entry[1]) for entry in entries)
    return out


class GroupEvents:
    """One member's reads of its group's state and event stream."""

    def __init__(self, client: redis.Redis, keys: GroupKeys, group_id: str, url: str) -> None:
        self._redis = client
        self._keys = keys
        self._group_id = group_id
        self._url = url

    def errors(self, call: str, message_id: str | None) -> AbstractContextManager[None]:
        """The context of one Redis call of ``call`` (see :func:`redis_errors`)."""
        return redis_errors(label(call, message_id), self._url)

    def snapshot(self, call: str, message_id: str | None, *reads: Callable[[Pipeline], object]) -> list[Any]:
        """Atomically read the group's state, the newest event id and ``reads``.

        Each of ``reads`` queues one command on the transaction. Returns
        ``[last event id, results of reads...]``; an ended or expired group is
        a JobError.
        """
        with self.errors(call, message_id):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hget(self._keys.meta, "state")
            pipe.xrevrange(self._keys.events, count=1)
            for read in reads:
                read(pipe)
            state, last, *results = pipe.execute()
        if state is None:
            check_status(NO_GROUP, label(call, message_id), self._group_id)
        if state != "active":
            check_status(ENDED, label(call, message_id), self._group_id)
        return [last[0][0] if last else "0-0", *results]

    def read(self, call: str, message_id: str | None, after: str, seconds: float) -> list[Event]:
        """The events after id ``after``, blocking in XREAD for at most ``seconds``."""
        block_ms = max(1, int(seconds * 1000))
        with self.errors(call, message_id):
            reply = self._redis.xread({self._keys.events: after}, count=100, block=block_ms)
        if not reply:
            return []
        return stream_entries(reply)

    def wait(
        self,
        call: str,
        message_id: str | None,
        timeout: float,
        snapshot: Callable[[], tuple[bool, T, str]],
        missing: Callable[[], str],
        should_stop: StopCheck | None,
        hit: Callable[[dict[str, str]], bool] | None = None,
    ) -> T:
        """Wait until ``snapshot()`` says done; between two snapshots block on the event stream.

        ``snapshot()`` returns ``(done, result, last event id)``. ``hit(fields)``
        may recognise an event that alone satisfies the wait (a barrier
        release), saving one round trip; the result is then that of the last
        snapshot.
        """
        timeout = check_timeout(call, timeout)
        last = "0-0"
        released = False
        latest: list[T] = []

        def check() -> tuple[bool, T]:
            nonlocal last
            if released:
                return True, latest[0]
            done, result, last = snapshot()
            latest[:] = [result]
            return done, result

        def block(seconds: float) -> None:
            nonlocal last, released
            events = self.read(call, message_id, last, seconds)
            if events:
                last = events[-1][0]
                if hit is not None and any(hit(fields) for _id, fields in events):
                    released = True

        return wait_until(call, message_id, timeout, check, block, missing, should_stop)
