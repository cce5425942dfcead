"""The Multinode coordinator on Redis.

Implements :class:`pipeline.coordination.MultinodeClient` for members that
run on different hosts; the only thing they share is the Redis URL
(``redis://[:password@]host:port/db`` or ``rediss://`` for TLS).

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
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from pipeline.coordination import (
    LAVA_START,
    STOP_CHECK_INTERVAL,
    StopCheck,
    check_data,
    check_members,
    check_name,
    check_timeout,
    check_wait_all,
    describe_members,
    wait_until,
)
from pipeline.errors import Bug, InfrastructureError, JobError

__all__ = ["RedisCoordinator", "RedisMultinodeClient", "GroupKeys", "group_keys"]

DEFAULT_GROUP_TTL = 7 * 24 * 3600
DEFAULT_END_TTL = 60
# Approximate cap of a group's event stream. Waiters re-read the state after
# any event, so trimming old entries never loses a wake-up.
EVENTS_MAXLEN = 10000


@dataclass(frozen=True)
class GroupKeys:
    meta: str
    members: str
    msg: str
    sync: str
    started: str
    events: str

    def all(self) -> list[str]:
        return [self.meta, self.members, self.msg, self.sync, self.started, self.events]


def group_keys(prefix: str, group_id: str) -> GroupKeys:
    base = f"{prefix}:mn:{{{group_id}}}"
    return GroupKeys(*(f"{base}:{name}" for name in ("meta", "members", "msg", "sync", "started", "events")))


# --- Lua ---------------------------------------------------------------------
# Status codes returned by the scripts.
_OK, _NO_GROUP, _ENDED, _MISMATCH = 1, -1, -2, -3

# Shared prelude: KEYS[1] is always meta. `keep` gives a key created lazily
# the remaining TTL of the group; `last_id` is the newest event id.
_PRELUDE = """
local meta = KEYS[1]
local function keep(key)
  if redis.call('PTTL', key) == -1 then
    local ttl = redis.call('PTTL', meta)
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  end
end
local function last_id(events)
  local last = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)
  if last[1] then return last[1][1] end
  return '0-0'
end
local function alive()
  local state = redis.call('HGET', meta, 'state')
  if not state then return -1 end
  if state ~= 'active' then return -2 end
  return 1
end
"""

# KEYS meta members events; ARGV ttl_ms now maxlen m1 r1 m2 r2 ...
_CREATE = _PRELUDE + """
local n = (#ARGV - 3) / 2
if redis.call('EXISTS', meta) == 1 then
  if redis.call('HLEN', KEYS[2]) ~= n then return -3 end
  for i = 4, #ARGV, 2 do
    if redis.call('HGET', KEYS[2], ARGV[i]) ~= ARGV[i + 1] then return -3 end
  end
  return 1
end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', meta, 'state', 'active', 'created', ARGV[2], 'size', n)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 't', 'created')
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
return 1
"""

# KEYS meta msg events; ARGV field json message_id sender maxlen
_SEND = _PRELUDE + """
local st = alive()
if st ~= 1 then return st end
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  keep(KEYS[2])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 't', 'send', 'id', ARGV[3], 'from', ARGV[4])
end
return 1
"""

# KEYS meta sync members events; ARGV sync_id member maxlen
# returns {status, done (0|1), last event id}
_SYNC = _PRELUDE + """
local st = alive()
if st ~= 1 then return {st, 0, '0-0'} end
local id = ARGV[1]
local size = tonumber(redis.call('HGET', meta, 'size'))
local count = tonumber(redis.call('HGET', KEYS[2], id) or '0')
if count >= size then return {1, 1, '0-0'} end
if redis.call('HSETNX', KEYS[2], id .. ' ' .. ARGV[2], '1') == 1 then
  count = redis.call('HINCRBY', KEYS[2], id, 1)
  keep(KEYS[2])
  if count >= size then
    for _, m in ipairs(redis.call('HKEYS', KEYS[3])) do
      redis.call('HDEL', KEYS[2], id .. ' ' .. m)
    end
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 't', 'sync', 'id', id)
    return {1, 1, '0-0'}
  end
end
return {1, 0, last_id(KEYS[4])}
"""

# KEYS meta started events; ARGV maxlen role1 role2 ...
_START = _PRELUDE + """
local st = alive()
if st ~= 1 then return st end
local new = {}
for i = 2, #ARGV do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then table.insert(new, ARGV[i]) end
end
if #new > 0 then
  keep(KEYS[2])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 't', 'start', 'roles', table.concat(new, ' '))
end
return 1
"""

# KEYS meta members msg sync started events; ARGV end_ttl_ms now
_END = _PRELUDE + """
if redis.call('EXISTS', meta) == 0 then return -1 end
if redis.call('HGET', meta, 'state') ~= 'ended' then
  redis.call('HSET', meta, 'state', 'ended', 'ended', ARGV[2])
  redis.call('XADD', KEYS[6], '*', 't', 'end')
end
local ttl = tonumber(ARGV[1])
for i = 1, #KEYS do
  local t = redis.call('PTTL', KEYS[i])
  if t == -1 or t > ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1
"""


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def _connect(url: str, socket_timeout: float) -> redis.Redis:
    try:
        return redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            socket_keepalive=True,
            health_check_interval=30,
            # Every call is idempotent (Lua arrivals, reads), so a command
            # may be sent again after a reconnect.
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 3),
            retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        )
    except ValueError as exc:
        raise InfrastructureError(f"bad Redis URL {_safe_url(url)!r}: {exc}") from None


def _stream_entries(reply) -> list[tuple[str, dict]]:
    """The entries of an XREAD reply on one stream, whatever the reply shape.

    redis-py answers ``[[stream, entries]]`` (RESP2 and its RESP3 default) or
    ``{stream: entries}`` / ``{stream: [entries]}`` (RESP3 native parsing).
    """
    if isinstance(reply, dict):
        groups = list(reply.values())
    else:
        groups = [entries for _stream, entries in reply]
    out: list[tuple[str, dict]] = []
    for entries in groups:
        if entries and isinstance(entries[0], list) and entries[0] and isinstance(entries[0][0], (list, tuple)):
            entries = entries[0]
        out.extend((entry[0], entry[1]) for entry in entries)
    return out


class _RedisBase:
    """Error mapping shared by the coordinator and its clients."""

    _url: str

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise InfrastructureError(
                f"{what}: Redis at {_safe_url(self._url)} unreachable: {exc}"
            ) from exc
        except redis.exceptions.RedisError as exc:
            raise InfrastructureError(f"{what}: Redis error: {exc}") from exc


class RedisCoordinator(_RedisBase):
    """Creates, looks up and ends multinode groups stored in Redis."""

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
        self._redis = _connect(redis_url, socket_timeout)
        self._create = self._redis.register_script(_CREATE)
        self._end = self._redis.register_script(_END)

    def __repr__(self) -> str:
        return f"<RedisCoordinator {_safe_url(self._url)} prefix={self.key_prefix!r}>"

    def keys(self, group_id: str) -> GroupKeys:
        """The Redis keys of a group (see the module docstring)."""
        return group_keys(self.key_prefix, check_name(group_id, "group id"))

    def create_group(self, group_id: str, members: Mapping[str, str]) -> None:
        """Create group ``group_id`` with ``members`` (``member_id -> role``).

        Idempotent: creating the same group again with the same members is a
        no-op; with different members it is a JobError.
        """
        keys = self.keys(group_id)
        checked = check_members(members)
        args: list[object] = [self.group_ttl * 1000, time.time(), EVENTS_MAXLEN]
        for member, role in checked.items():
            args += [member, role]
        with self._errors(f"create multinode group {group_id!r}"):
            status = self._create(keys=[keys.meta, keys.members, keys.events], args=args)
        if status == _MISMATCH:
            raise JobError(f"multinode group {group_id!r} already exists with other members")

    def group_exists(self, group_id: str) -> bool:
        """True while the group's record exists (also after end, until expiry)."""
        with self._errors(f"look up multinode group {group_id!r}"):
            return bool(self._redis.exists(self.keys(group_id).meta))

    def client(self, group_id: str, member_id: str) -> "RedisMultinodeClient":
        """The client of member ``member_id``; it opens its own connections."""
        check_name(member_id, "member id")
        keys = self.keys(group_id)
        with self._errors(f"join multinode group {group_id!r}"):
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
        return RedisMultinodeClient(
            self._url, keys, group_id, member_id, dict(members), self.socket_timeout
        )

    def end_group(self, group_id: str) -> None:
        """Mark the group ended: waiters fail at once, keys expire after ``end_ttl``."""
        keys = self.keys(group_id)
        with self._errors(f"end multinode group {group_id!r}"):
            self._end(keys=keys.all(), args=[self.end_ttl * 1000, time.time()])

    def close(self) -> None:
        self._redis.close()


class RedisMultinodeClient(_RedisBase):
    """One member of a group stored in Redis (see :class:`MultinodeClient`)."""

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
        self._redis = _connect(redis_url, socket_timeout)
        self._send = self._redis.register_script(_SEND)
        self._sync = self._redis.register_script(_SYNC)
        self._start = self._redis.register_script(_START)
        self._closed = False

    def __repr__(self) -> str:
        return f"<RedisMultinodeClient {self.group_id}/{self.member_id} ({self.role})>"

    # -- helpers

    def _label(self, call: str, message_id: str | None) -> str:
        return f"{call} '{message_id}'" if message_id is not None else call

    def _check_open(self, call: str, message_id: str | None) -> None:
        if self._closed:
            raise Bug(f"{self._label(call, message_id)}: multinode client already closed")

    def _status(self, status: int, call: str, message_id: str | None) -> None:
        label = self._label(call, message_id)
        if status == _NO_GROUP:
            raise JobError(f"{label}: multinode group {self.group_id!r} does not exist (ended or expired)")
        if status == _ENDED:
            raise JobError(f"{label}: multinode group {self.group_id!r} has ended")

    def _snapshot(self, call: str, message_id: str | None, *reads) -> list:
        """Atomically read meta state, the newest event id and ``reads``.

        ``reads`` are ``(method name, args...)`` tuples of pipeline methods.
        Returns ``[last_event_id, results of reads...]``.
        """
        with self._errors(self._label(call, message_id)):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hget(self._keys.meta, "state")
            pipe.xrevrange(self._keys.events, count=1)
            for name, *args in reads:
                getattr(pipe, name)(*args)
            state, last, *results = pipe.execute()
        if state is None:
            self._status(_NO_GROUP, call, message_id)
        if state != "active":
            self._status(_ENDED, call, message_id)
        return [last[0][0] if last else "0-0", *results]

    def _read_events(self, call: str, message_id: str | None, after: str, seconds: float) -> list[tuple[str, dict]]:
        """Block in XREAD on the event stream for at most ``seconds``."""
        block_ms = max(1, int(seconds * 1000))
        with self._errors(self._label(call, message_id)):
            reply = self._redis.xread({self._keys.events: after}, count=100, block=block_ms)
        if not reply:
            return []
        return _stream_entries(reply)

    def _wait(self, call, message_id, timeout, snapshot, missing, should_stop, hit=None):
        """Wait loop: ``snapshot()`` -> (done, result, last id); block on XREAD.

        ``hit(fields)`` may recognise an event that alone satisfies the wait
        (a barrier release), saving one round trip.
        """
        self._check_open(call, message_id)
        timeout = check_timeout(call, timeout)
        cursor = {"last": "0-0", "hit": False}

        def check():
            if cursor["hit"]:
                return True, None
            done, result, cursor["last"] = snapshot()
            return done, result

        def block(seconds: float) -> None:
            events = self._read_events(call, message_id, cursor["last"], seconds)
            if events:
                cursor["last"] = events[-1][0]
                if hit is not None and any(hit(fields) for _id, fields in events):
                    cursor["hit"] = True

        return wait_until(call, message_id, timeout, check, block, missing, should_stop)

    def _others(self, role: str | None = None) -> list[str]:
        return [
            m for m, r in self._members.items() if m != self.member_id and (role is None or r == role)
        ]

    def _fields(self, message_id: str, members: list[str]) -> list[str]:
        return [f"{message_id} {m}" for m in members]

    # -- the API

    def members(self) -> dict[str, str]:
        return dict(self._members)

    def send(self, message_id: str, data: dict[str, str] | None = None) -> None:
        call = "lava-send"
        check_name(message_id, f"{call} message id")
        self._check_open(call, message_id)
        payload = json.dumps(check_data(call, message_id, data), sort_keys=True, separators=(",", ":"))
        with self._errors(self._label(call, message_id)):
            status = self._send(
                keys=[self._keys.meta, self._keys.msg, self._keys.events],
                args=[f"{message_id} {self.member_id}", payload, message_id, self.member_id, EVENTS_MAXLEN],
            )
        self._status(status, call, message_id)

    def _collect(self, members: list[str], values: list[str | None]) -> dict[str, dict[str, str]]:
        return {m: json.loads(v) for m, v in zip(members, values) if v is not None}

    def wait(
        self, message_id: str, timeout: float, *, should_stop: StopCheck | None = None
    ) -> dict[str, dict[str, str]]:
        call = "lava-wait"
        check_name(message_id, f"{call} message id")
        others = self._others()
        if not others:
            raise JobError(f"{call} '{message_id}': no other member in group {self.group_id!r}")
        fields = self._fields(message_id, others)

        def snapshot():
            last, values = self._snapshot(call, message_id, ("hmget", self._keys.msg, fields))
            got = self._collect(others, values)
            return bool(got), got, last

        def missing():
            return "any of " + describe_members(others, self._members)

        return self._wait(call, message_id, timeout, snapshot, missing, should_stop)

    def wait_all(
        self,
        message_id: str,
        timeout: float,
        role: str | None = None,
        *,
        should_stop: StopCheck | None = None,
    ) -> dict[str, dict[str, str]]:
        call = "lava-wait-all"
        check_wait_all(message_id, role, self._members, self.group_id)
        others = self._others(role)
        fields = self._fields(message_id, others)
        seen: dict[str, dict[str, str]] = {}

        def snapshot():
            if not others:
                last, = self._snapshot(call, message_id)
                return True, {}, last
            last, values = self._snapshot(call, message_id, ("hmget", self._keys.msg, fields))
            seen.clear()
            seen.update(self._collect(others, values))
            return len(seen) == len(others), dict(seen), last

        def missing():
            return describe_members([m for m in others if m not in seen], self._members)

        return self._wait(call, message_id, timeout, snapshot, missing, should_stop)

    def sync(
        self, message_id: str, timeout: float, *, should_stop: StopCheck | None = None
    ) -> None:
        call = "lava-sync"
        check_name(message_id, f"{call} message id")
        self._check_open(call, message_id)
        keys = self._keys
        arrival = {"done": None}

        def snapshot():
            if arrival["done"] is None:
                # First check: the idempotent arrival itself, which answers
                # with the barrier state and the stream position atomically.
                with self._errors(self._label(call, message_id)):
                    status, done, last = self._sync(
                        keys=[keys.meta, keys.sync, keys.members, keys.events],
                        args=[message_id, self.member_id, EVENTS_MAXLEN],
                    )
                self._status(status, call, message_id)
                arrival["done"] = bool(done)
                return bool(done), None, last
            last, count = self._snapshot(call, message_id, ("hget", keys.sync, message_id))
            return int(count or 0) >= len(self._members), None, last

        def hit(fields: dict) -> bool:
            return fields.get("t") == "sync" and fields.get("id") == message_id

        def missing():
            members = list(self._members)
            with self._errors(self._label(call, message_id)):
                values = self._redis.hmget(keys.sync, self._fields(message_id, members))
            return describe_members([m for m, v in zip(members, values) if v is None], self._members)

        self._wait(call, message_id, timeout, snapshot, missing, should_stop, hit)

    def start_roles(self, roles: list[str]) -> None:
        if isinstance(roles, str):
            roles = [roles]
        self._check_open(LAVA_START, None)
        for role in roles:
            check_name(role, f"{LAVA_START} role")
            if role not in self._members.values():
                raise JobError(f"{LAVA_START}: no member of group {self.group_id!r} has role {role!r}")
        if not roles:
            return
        with self._errors(LAVA_START):
            status = self._start(
                keys=[self._keys.meta, self._keys.started, self._keys.events],
                args=[EVENTS_MAXLEN, *roles],
            )
        self._status(status, LAVA_START, None)

    def wait_for_start(self, timeout: float, *, should_stop: StopCheck | None = None) -> None:
        def snapshot():
            last, started = self._snapshot(
                LAVA_START, None, ("sismember", self._keys.started, self.role)
            )
            return bool(started), None, last

        def missing():
            return f"role {self.role!r} of {self.member_id} to be started"

        self._wait(LAVA_START, None, timeout, snapshot, missing, should_stop)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._redis.close()
