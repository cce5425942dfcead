"""The admin side of the Redis coordinator: create, look up and end multinode groups.

The design (state, event stream, key layout, expiry) is in the ``coordinator``
package docstring. The names this module always exported stay importable
from here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from coordinator.events import redis_errors
from coordinator.keys import DEFAULT_END_TTL, DEFAULT_GROUP_TTL, EVENTS_MAXLEN, GroupKeys, group_keys
from coordinator.member import RedisMultinodeClient
from coordinator.redis_client import redact, redis_client
from coordinator.scripts import CREATE, END, MISMATCH
from pipeline.coordination import STOP_CHECK_INTERVAL, check_members, check_name
from pipeline.errors import Bug, InfrastructureError, JobError

__all__ = ["RedisCoordinator", "RedisMultinodeClient", "GroupKeys", "group_keys"]


class RedisCoordinator:
    """Creates, looks up and ends multinode groups stored in Redis.

    ``redis_url`` is any URL :func:`coordinator.redis_client.redis_target`
    accepts; TLS options (CA, client certificate and key) come from the URL's
    query or the ``LAVA_DISPATCH_REDIS_CA``/``_CERT``/``_KEY`` environment, as
    for the rest of the lab. ``socket_timeout`` bounds every Redis call and
    connection of the coordinator and its members' clients.
    """

    def __init__(
        self,
        redis_url: str,
        key_prefix: str = "lava",
        group_ttl: int = DEFAULT_GROUP_TTL,
        end_ttl: int = DEFAULT_END_TTL,
        *,
        socket_timeout: float = 5.0,
    ) -> None:
        check_name(key_prefix, "key prefix")
        if group_ttl <= 0 or end_ttl <= 0:
            raise Bug("group_ttl and end_ttl must be positive")
        if socket_timeout <= STOP_CHECK_INTERVAL:
            raise Bug("socket_timeout must be longer than a blocking read")
        self._url = redis_url
        self.key_prefix = key_prefix
        self.group_ttl = group_ttl
        self.end_ttl = end_ttl
        self.socket_timeout = socket_timeout
        try:
            self._redis = redis_client(redis_url, socket_timeout=socket_timeout,
                                       socket_connect_timeout=socket_timeout)
        except ValueError as exc:
            raise InfrastructureError(f"bad Redis URL {redact(redis_url)!r}: {exc}") from None
        self._create = self._redis.register_script(CREATE)
        self._end = self._redis.register_script(END)

    def __repr__(self) -> str:
        return f"<RedisCoordinator {redact(self._url)} prefix={self.key_prefix!r}>"

    def keys(self, group_id: str) -> GroupKeys:
        """The Redis keys of a group (see the ``coordinator`` docstring)."""
        return group_keys(self.key_prefix, check_name(group_id, "group id"))

    def create_group(self, group_id: str, members: Mapping[str, str]) -> None:
        """Create group ``group_id`` with ``members`` (``member_id -> role``).

        Idempotent: creating the same group again with the same members is a
        no-op; with different members it is a JobError.
        """
        keys = self.keys(group_id)
        checked = check_members(members)
        args: list[str | int | float] = [self.group_ttl * 1000, time.time(), EVENTS_MAXLEN]
        for member, role in checked.items():
            args += [member, role]
        with redis_errors(f"create multinode group {group_id!r}", self._url):
            status = self._create(keys=[keys.meta, keys.members, keys.events], args=args)
        if status == MISMATCH:
            raise JobError(f"multinode group {group_id!r} already exists with other members")

    def group_exists(self, group_id: str) -> bool:
        """True while the group's record exists (also after end, until expiry)."""
        with redis_errors(f"look up multinode group {group_id!r}", self._url):
            return bool(self._redis.exists(self.keys(group_id).meta))

    def client(self, group_id: str, member_id: str) -> RedisMultinodeClient:
        """The client of member ``member_id``; it opens its own connections."""
        check_name(member_id, "member id")
        keys = self.keys(group_id)
        with redis_errors(f"join multinode group {group_id!r}", self._url):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hget(keys.meta, "state")
            pipe.hgetall(keys.members)
            state, members = pipe.execute()
        if state is None:
            raise JobError(f"multinode group {group_id!r} does not exist")
        if state != "active":
            raise JobError(f"multinode group {group_id!r} has ended")
        if member_id not in members:
            raise JobError(
                f"{member_id!r} is not a member of multinode group {group_id!r} "
                f"(members: {', '.join(sorted(members))})"
            )
        return RedisMultinodeClient(self._url, keys, group_id, member_id, dict(members), self.socket_timeout)

    def end_group(self, group_id: str) -> None:
        """Mark the group ended: waiters fail at once, keys expire after ``end_ttl``."""
        keys = self.keys(group_id)
        with redis_errors(f"end multinode group {group_id!r}", self._url):
            self._end(keys=keys.all(), args=[self.end_ttl * 1000, time.time()])

    def close(self) -> None:
        self._redis.close()
