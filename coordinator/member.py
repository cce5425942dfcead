"""One member of a multinode group stored in Redis: lava-send, lava-wait, lava-sync, lava-start."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from redis.client import Pipeline

from coordinator.events import GroupEvents, label
from coordinator.keys import EVENTS_MAXLEN, GroupKeys
from coordinator.redis_client import redis_client
from coordinator.scripts import SEND, START, SYNC, check_status
from pipeline.coordination import (
    LAVA_START,
    StopCheck,
    check_data,
    check_name,
    check_wait_all,
    describe_members,
)
from pipeline.errors import Bug, JobError

__all__ = ["RedisMultinodeClient"]

Messages = dict[str, dict[str, str]]


class RedisMultinodeClient:
    """One member of a group stored in Redis (see :class:`pipeline.coordination.MultinodeClient`).

    It has its own connection (a blocking read holds it), made with
    :func:`coordinator.redis_client.redis_client` and ``socket_timeout``.
    """

    def __init__(
        self,
        redis_url: str,
        keys: GroupKeys,
        group_id: str,
        member_id: str,
        members: dict[str, str],
        socket_timeout: float = 5.0,
    ) -> None:
        self._url = redis_url
        self._keys = keys
        self.group_id = group_id
        self.member_id = member_id
        self.role = members[member_id]
        self._members = members
        self._redis = redis_client(redis_url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout)
        self._events = GroupEvents(self._redis, keys, group_id, redis_url)
        self._send = self._redis.register_script(SEND)
        self._sync = self._redis.register_script(SYNC)
        self._start = self._redis.register_script(START)
        self._closed = False

    def __repr__(self) -> str:
        return f"<RedisMultinodeClient {self.group_id}/{self.member_id} ({self.role})>"

    # -- helpers

    def _check_open(self, call: str, message_id: str | None) -> None:
        if self._closed:
            raise Bug(f"{label(call, message_id)}: multinode client already closed")

    def _others(self, role: str | None = None) -> list[str]:
        return [m for m, r in self._members.items() if m != self.member_id and (role is None or r == role)]

    def _fields(self, message_id: str, members: list[str]) -> list[str]:
        return [f"{message_id} {m}" for m in members]

    def _collect(self, members: list[str], values: list[str | None]) -> Messages:
        return {m: json.loads(v) for m, v in zip(members, values, strict=True) if v is not None}

    def _messages(self, fields: list[str]) -> Callable[[Pipeline], object]:
        return lambda pipe: pipe.hmget(self._keys.msg, fields)

    # -- the API

    def members(self) -> dict[str, str]:
        return dict(self._members)

    def send(self, message_id: str, data: dict[str, str] | None = None) -> None:
        call = "lava-send"
        check_name(message_id, f"{call} message id")
        self._check_open(call, message_id)
        payload = json.dumps(check_data(call, message_id, data), sort_keys=True, separators=(",", ":"))
        with self._events.errors(call, message_id):
            status = self._send(
                keys=[self._keys.meta, self._keys.msg, self._keys.events],
                args=[f"{message_id} {self.member_id}", payload, message_id, self.member_id, EVENTS_MAXLEN],
            )
        check_status(status, label(call, message_id), self.group_id)

    def wait(self, message_id: str, timeout: float, *, should_stop: StopCheck | None = None) -> Messages:
        call = "lava-wait"
        check_name(message_id, f"{call} message id")
        others = self._others()
        if not others:
            raise JobError(f"{call} '{message_id}': no other member in group {self.group_id!r}")
        fields = self._fields(message_id, others)

        def snapshot() -> tuple[bool, Messages, str]:
            last, values = self._events.snapshot(call, message_id, self._messages(fields))
            got = self._collect(others, values)
            return bool(got), got, last

        def missing() -> str:
            return "any of " + describe_members(others, self._members)

        self._check_open(call, message_id)
        return self._events.wait(call, message_id, timeout, snapshot, missing, should_stop)

    def wait_all(
        self,
        message_id: str,
        timeout: float,
        role: str | None = None,
        *,
        should_stop: StopCheck | None = None,
    ) -> Messages:
        call = "lava-wait-all"
        check_wait_all(message_id, role, self._members, self.group_id)
        others = self._others(role)
        fields = self._fields(message_id, others)
        seen: Messages = {}

        def snapshot() -> tuple[bool, Messages, str]:
            if not others:
                (last,) = self._events.snapshot(call, message_id)
                return True, {}, last
            last, values = self._events.snapshot(call, message_id, self._messages(fields))
            seen.clear()
            seen.update(self._collect(others, values))
            return len(seen) == len(others), dict(seen), last

        def missing() -> str:
            return describe_members([m for m in others if m not in seen], self._members)

        self._check_open(call, message_id)
        return self._events.wait(call, message_id, timeout, snapshot, missing, should_stop)

    def sync(self, message_id: str, timeout: float, *, should_stop: StopCheck | None = None) -> None:
        call = "lava-sync"
        check_name(message_id, f"{call} message id")
        self._check_open(call, message_id)
        keys = self._keys
        arrived = False

        def snapshot() -> tuple[bool, None, str]:
            nonlocal arrived
            if not arrived:
                # First check: the idempotent arrival itself, which answers
                # with the barrier state and the stream position atomically.
                with self._events.errors(call, message_id):
                    status, done, last = self._sync(
                        keys=[keys.meta, keys.sync, keys.members, keys.events],
                        args=[message_id, self.member_id, EVENTS_MAXLEN],
                    )
                check_status(status, label(call, message_id), self.group_id)
                arrived = True
                return bool(done), None, last
            last, count = self._events.snapshot(call, message_id, lambda pipe: pipe.hget(keys.sync, message_id))
            return int(count or 0) >= len(self._members), None, last

        def hit(fields: dict[str, str]) -> bool:
            return fields.get("t") == "sync" and fields.get("id") == message_id

        def missing() -> str:
            members = list(self._members)
            with self._events.errors(call, message_id):
                values = self._redis.hmget(keys.sync, self._fields(message_id, members))
            return describe_members([m for m, v in zip(members, values, strict=True) if v is None], self._members)

        self._events.wait(call, message_id, timeout, snapshot, missing, should_stop, hit)

    def start_roles(self, roles: Sequence[str] | str) -> None:
        if isinstance(roles, str):
            roles = [roles]
        self._check_open(LAVA_START, None)
        for role in roles:
            check_name(role, f"{LAVA_START} role")
            if role not in self._members.values():
                raise JobError(f"{LAVA_START}: no member of group {self.group_id!r} has role {role!r}")
        if not roles:
            return
        with self._events.errors(LAVA_START, None):
            status = self._start(
                keys=[self._keys.meta, self._keys.started, self._keys.events],
                args=[EVENTS_MAXLEN, *roles],
            )
        check_status(status, LAVA_START, self.group_id)

    def wait_for_start(self, timeout: float, *, should_stop: StopCheck | None = None) -> None:
        def snapshot() -> tuple[bool, None, str]:
            last, started = self._events.snapshot(
                LAVA_START, None, lambda pipe: pipe.sismember(self._keys.started, self.role)
            )
            return bool(started), None, last

        def missing() -> str:
            return f"role {self.role!r} of {self.member_id} to be started"

        self._check_open(LAVA_START, None)
        self._events.wait(LAVA_START, None, timeout, snapshot, missing, should_stop)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._redis.close()

