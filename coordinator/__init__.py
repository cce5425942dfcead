"""The Multinode coordinator on Redis.

Implements :class:`pipeline.coordination.MultinodeClient` for members that
run on different hosts; the only thing they share is the Redis URL
(``redis://[:password@]host:port/db``, ``rediss://`` for TLS, ``unix://``)
and its TLS settings, read as for the rest of the lab
(:mod:`coordinator.redis_client`).

Design
======

State lives in a few hashes/sets per group; every change of state is also
appended to one Redis Stream per group (the *event stream*). A waiting member
never polls: it reads the state, and if what it waits for has not happened
yet it blocks in ``XREAD BLOCK`` on the event stream, then reads the state
again when an event arrives.

The read position is the important part. The state snapshot and the id of
the newest stream entry are taken *atomically* (one ``MULTI``/``EXEC``, or
inside the arrival Lua script), and ``XREAD`` continues from exactly that id.
Any change made after the snapshot therefore has a later stream entry, and
the read returns it at once, even if it happened before the ``XREAD`` was
sent: a release is never missed. This is the same guarantee as reading from
``0-0`` (never ``$``) without replaying the group's whole history on every
wait. ``XREAD`` blocks at most :data:`~pipeline.coordination.STOP_CHECK_INTERVAL`
(500 ms) at a time, so ``should_stop`` is checked at least that often and a
group that expired or ended under a waiter is noticed.

Streams were chosen over per-waiter blocking lists because one ``XADD``
wakes every waiter of the group (a barrier release of 16 members is one
entry), nobody has to know who is waiting, and a waiter that reconnects
loses nothing: it simply reads again from its last id.

Every change is a Lua script, so it is atomic and idempotent: a lava-send or
lava-sync arrival repeated after a reconnect (redis-py retries a command on a
connection error) is counted once, and a second lava-start of a started role
adds no event.

Key layout (``P`` = ``key_prefix``, ``G`` = group id; the ``{G}`` hash tag
keeps a group's keys in one cluster slot so the scripts may touch them all)::

    P:mn:{G}:meta      hash    state (active|ended), created, ended, size
    P:mn:{G}:members   hash    member_id -> role              (lava-group)
    P:mn:{G}:msg       hash    "<message_id> <sender>" -> JSON data (lava-send)
    P:mn:{G}:sync      hash    "<sync_id>" -> arrivals (int), "<sync_id> <member>" -> 1
                               (arrival fields are dropped when the barrier completes;
                               a count >= size means completed)
    P:mn:{G}:started   set     started roles                  (lava-start)
    P:mn:{G}:events    stream  t=send|sync|start|created|end, id, from, roles

Ids cannot contain whitespace (they are validated), so the space in the
composite hash fields is unambiguous.

Expiry: every key gets the safety TTL (``group_ttl``, default 7 days) when it
is created; keys created later copy the remaining TTL of ``meta``.
``end_group`` marks the group ended, wakes the waiters (who fail with a
JobError) and shortens the TTL of every key to ``end_ttl`` (default 60 s).
Calls on an ended group are refused, so no key without a TTL can appear
after it.

Modules
=======

``redis_client``
    The lab's Redis URL, TLS options, redaction and client factory (shared
    with ``tasks``; imports redis only when a client is made).
``keys``, ``scripts`` and ``lua/*.lua``
    The key layout above, and the Lua scripts that change a group.
``events``
    Atomic snapshots, blocking reads of the event stream, the wait loop, and
    what a failed Redis call means (an InfrastructureError).
``redis_coordinator``
    :class:`RedisCoordinator`: create, look up and end groups.
``member``
    :class:`RedisMultinodeClient`: one member's calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coordinator.member import RedisMultinodeClient
    from coordinator.redis_coordinator import RedisCoordinator

__all__ = ["RedisCoordinator", "RedisMultinodeClient"]


def __getattr__(name: str) -> Any:
    # Imported on first use: tasks.config imports coordinator.redis_client, and
    # the CLI must start without importing redis.
    if name == "RedisCoordinator":
        from coordinator.redis_coordinator import RedisCoordinator

        return RedisCoordinator
    if name == "RedisMultinodeClient":
        from coordinator.member import RedisMultinodeClient

        return RedisMultinodeClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
