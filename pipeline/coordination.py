"""The Multinode protocol interface of the engine, and an in-process coordinator.

A multinode *group* is the set of jobs of one multinode submission. Every job
is a *member* of the group (``member_id``, what ``lava-self`` prints) and has
a *role* (``lava-role``). The engine talks to the coordinator through one
:class:`MultinodeClient` per member; it never knows where the coordinator
lives. Two implementations exist:

* :class:`LocalCoordinator` (this module): threads and one
  :class:`threading.Condition` per group. ``lava-dispatch run`` uses it to run
  every role of a multinode job in one process.
* ``coordinator.RedisCoordinator``: the lab's coordinator on Redis, which
  works across hosts. This module must not import it (``pipeline`` imports
  neither Redis nor Celery).

The calls (see LAVA's "Multinode API"):

``send(id, data)`` (lava-send)
    Stores this member's message ``id`` with its ``key=value`` data. Sending
    the same id again replaces the data; it is never counted twice.
``wait(id, timeout)`` (lava-wait)
    Returns as soon as *any other* member has sent ``id``, with the data of
    every other member that has sent it so far: ``{member_id: data}``.
``wait_all(id, timeout, role=None)`` (lava-wait-all)
    Returns when *every other* member (of ``role``, if given) has sent ``id``,
    with all their data. If nothing was sent yet it waits; it does not fail.
``sync(id, timeout)`` (lava-sync)
    A barrier of the whole group: returns when every member has arrived at
    ``id``. Once a barrier has completed, a later ``sync`` with the same id
    returns at once (so a protocol call in a retried action only
    synchronises the first attempt, as LAVA documents).
``start_roles(roles)`` / ``wait_for_start(timeout)`` (lava-start)
    A delayed member blocks in ``wait_for_start`` until some member starts
    its role. Starting a role that was already started has no effect.
    (LAVA implements lava-start as a lava-send/lava-wait-all of the message
    ``lava_start``; here the started roles are state of their own, so a
    test definition's own ``lava_start`` messages cannot interfere.)

Every wait takes ``should_stop``, a callable checked at least every
:data:`STOP_CHECK_INTERVAL` seconds; when it returns true the wait raises
:class:`~pipeline.errors.Canceled`. A wait that times out raises
:class:`~pipeline.errors.JobError` naming the call, the message id, how long
it waited and which members it was still waiting for, e.g.::

    lava-sync 'barrier3': timeout after 10.0 s waiting for client-2 (role client)

A member id, role or message id that is empty or contains whitespace or
control characters is refused with a JobError.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

from pipeline.errors import Bug, Canceled, JobError

__all__ = [
    "STOP_CHECK_INTERVAL",
    "LAVA_START",
    "MultinodeClient",
    "LocalCoordinator",
    "LocalMultinodeClient",
    "StopCheck",
    "check_data",
    "check_name",
    "check_wait_all",
    "describe_members",
    "wait_until",
]

#: Longest time a wait blocks before it checks ``should_stop`` again (seconds).
STOP_CHECK_INTERVAL = 0.5

#: The name of the lava-start call in error messages.
LAVA_START = "lava-start"

StopCheck = Callable[[], bool]

_T = TypeVar("_T")

# Longest accepted identifier: ids travel over a serial console and end up in
# Redis keys; nothing legitimate is this long.
_MAX_NAME = 256


@runtime_checkable
class MultinodeClient(Protocol):
    """One member's view of its multinode group."""

    group_id: str
    member_id: str
    role: str

    def members(self) -> dict[str, str]:
        """``member_id -> role`` for the whole group (lava-group)."""
        ...

    def send(self, message_id: str, data: dict[str, str] | None = None) -> None:
        """lava-send: store this member's message ``message_id``."""
        ...

    def wait(
        self, message_id: str, timeout: float, *, should_stop: StopCheck | None = None
    ) -> dict[str, dict[str, str]]:
        """lava-wait: block until any other member has sent ``message_id``."""
        ...

    def wait_all(
        self,
        message_id: str,
        timeout: float,
        role: str | None = None,
        *,
        should_stop: StopCheck | None = None,
    ) -> dict[str, dict[str, str]]:
        """lava-wait-all: block until every other member (of ``role``) has sent it."""
        ...

    def sync(
        self, message_id: str, timeout: float, *, should_stop: StopCheck | None = None
    ) -> None:
        """lava-sync: barrier of the whole group."""
        ...

    def start_roles(self, roles: list[str]) -> None:
        """lava-start: release the members whose role is in ``roles``."""
        ...

    def wait_for_start(
        self, timeout: float, *, should_stop: StopCheck | None = None
    ) -> None:
        """Block a delayed member until its role is started."""
        ...

    def close(self) -> None:
        """Release the client's resources; the group itself lives on."""
        ...


# ---------------------------------------------------------------------------
# Helpers shared by the implementations


def check_name(value: object, what: str) -> str:
    """Return ``value`` if it is a usable identifier, else raise JobError.

    Identifiers (group, member, role and message ids) must be non-empty
    strings without whitespace or control characters.
    """
    if not isinstance(value, str):
        raise JobError(f"{what} must be a string, not {type(value).__name__}: {value!r}")
    if not value:
        raise JobError(f"{what} is empty")
    if len(value) > _MAX_NAME:
        raise JobError(f"{what} is longer than {_MAX_NAME} characters: {value[:40]!r}...")
    # isprintable() is false for control/format characters and for every
    # whitespace except the ASCII space, which is refused separately.
    if not value.isprintable() or any(c.isspace() for c in value):
        raise JobError(f"{what} contains whitespace or control characters: {value!r}")
    return value


def check_data(call: str, message_id: str, data: Mapping[str, str] | None) -> dict[str, str]:
    """Validate the ``key=value`` data of a lava-send; return a plain dict."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise JobError(f"{call} '{message_id}': data must be a mapping, not {type(data).__name__}")
    out: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not key:
            raise JobError(f"{call} '{message_id}': data key {key!r} is not a non-empty string")
        if not isinstance(value, str):
            raise JobError(
                f"{call} '{message_id}': value of {key!r} must be a string, "
                f"not {type(value).__name__}"
            )
        out[key] = value
    return out


def check_members(members: Mapping[str, str]) -> dict[str, str]:
    """Validate a ``member_id -> role`` mapping of a new group."""
    if not isinstance(members, Mapping) or not members:
        raise JobError("a multinode group needs at least one member")
    return {
        check_name(member, "member id"): check_name(role, f"role of member {member!r}")
        for member, role in members.items()
    }


def check_timeout(call: str, timeout: float) -> float:
    try:
        value = float(timeout)
    except (TypeError, ValueError):
        raise JobError(f"{call}: timeout must be a number of seconds, not {timeout!r}") from None
    if value != value:  # NaN
        raise JobError(f"{call}: timeout is not a number")
    return value


def check_wait_all(message_id: str, role: str | None, members: Mapping[str, str], group_id: str) -> None:
    """The arguments of lava-wait-all: a valid message id, and a role some member has."""
    call = "lava-wait-all"
    check_name(message_id, f"{call} message id")
    if role is not None:
        check_name(role, f"{call} role")
        if role not in members.values():
            raise JobError(f"{call} '{message_id}': no member of group {group_id!r} has role {role!r}")


def describe_members(members: Iterable[str], roles: Mapping[str, str]) -> str:
    """``client-1 (role client), client-2 (role client)`` for error messages."""
    return ", ".join(f"{m} (role {roles.get(m, '?')})" for m in sorted(members))


def _label(call: str, message_id: str | None) -> str:
    return f"{call} '{message_id}'" if message_id is not None else call


def wait_until(
    call: str,
    message_id: str | None,
    timeout: float,
    check: Callable[[], tuple[bool, _T]],
    block: Callable[[float], object],
    missing: Callable[[], str],
    should_stop: StopCheck | None,
) -> _T:
    """The wait loop both implementations share.

    ``check()`` returns ``(done, result)``; ``block(seconds)`` blocks until
    something may have changed or ``seconds`` have passed (a blocking read,
    never a sleep); ``missing()`` describes what is still awaited, for the
    timeout message. The loop checks ``should_stop`` before every block, and
    a block never lasts longer than :data:`STOP_CHECK_INTERVAL`.
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        done, result = check()
        if done:
            return result
        now = time.monotonic()
        if should_stop is not None and should_stop():
            raise Canceled(f"{_label(call, message_id)}: canceled after {now - start:.1f} s")
        remaining = deadline - now
        if remaining <= 0:
            raise JobError(
                f"{_label(call, message_id)}: timeout after {now - start:.1f} s "
                f"waiting for {missing()}"
            )
        block(min(STOP_CHECK_INTERVAL, remaining))


# ---------------------------------------------------------------------------
# In-process implementation


@dataclass
class _Group:
    group_id: str
    members: dict[str, str]
    cond: threading.Condition = field(default_factory=threading.Condition)
    # message id -> sender -> data
    messages: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    # sync id -> members that arrived; ids of completed barriers
    arrived: dict[str, set[str]] = field(default_factory=dict)
    synced: set[str] = field(default_factory=set)
    started: set[str] = field(default_factory=set)
    ended: bool = False


class LocalCoordinator:
    """In-process coordinator: every member is a thread of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[str, _Group] = {}

    def create_group(self, group_id: str, members: Mapping[str, str]) -> None:
        """Create group ``group_id`` with ``members`` (``member_id -> role``).

        Creating the same group again with the same members is a no-op;
        with different members it is a JobError.
        """
        check_name(group_id, "group id")
        checked = check_members(members)
        with self._lock:
            existing = self._groups.get(group_id)
            if existing is not None:
                if existing.members != checked:
                    raise JobError(f"multinode group {group_id!r} already exists with other members")
                return
            self._groups[group_id] = _Group(group_id, checked)

    def group_exists(self, group_id: str) -> bool:
        with self._lock:
            return group_id in self._groups

    def client(self, group_id: str, member_id: str) -> LocalMultinodeClient:
        """The client of member ``member_id`` of group ``group_id``."""
        check_name(group_id, "group id")
        check_name(member_id, "member id")
        with self._lock:
            group = self._groups.get(group_id)
        if group is None:
            raise JobError(f"multinode group {group_id!r} does not exist")
        if member_id not in group.members:
            raise JobError(
                f"{member_id!r} is not a member of multinode group {group_id!r} "
                f"(members: {', '.join(sorted(group.members))})"
            )
        return LocalMultinodeClient(group, member_id)

    def end_group(self, group_id: str) -> None:
        """Forget the group; members still waiting get a JobError at once."""
        with self._lock:
            group = self._groups.pop(group_id, None)
        if group is not None:
            with group.cond:
                group.ended = True
                group.cond.notify_all()


class LocalMultinodeClient:
    """A member of a :class:`LocalCoordinator` group."""

    def __init__(self, group: _Group, member_id: str) -> None:
        self._group = group
        self.group_id = group.group_id
        self.member_id = member_id
        self.role = group.members[member_id]
        self._closed = False

    def __repr__(self) -> str:
        return f"<LocalMultinodeClient {self.group_id}/{self.member_id} ({self.role})>"

    # -- helpers (called with the condition held)

    def _alive(self, call: str, message_id: str | None) -> None:
        if self._closed:
            raise Bug(f"{_label(call, message_id)}: multinode client already closed")
        if self._group.ended:
            raise JobError(f"{_label(call, message_id)}: multinode group {self.group_id!r} has ended")

    def _others(self, role: str | None = None) -> list[str]:
        return [
            m
            for m, r in self._group.members.items()
            if m != self.member_id and (role is None or r == role)
        ]

    def _wait(
        self,
        call: str,
        message_id: str | None,
        timeout: float,
        check: Callable[[], tuple[bool, _T]],
        missing: Callable[[], str],
        should_stop: StopCheck | None,
    ) -> _T:
        timeout = check_timeout(call, timeout)
        cond = self._group.cond

        def checked() -> tuple[bool, _T]:
            self._alive(call, message_id)
            return check()

        with cond:
            return wait_until(call, message_id, timeout, checked, cond.wait, missing, should_stop)

    # -- the API

    def members(self) -> dict[str, str]:
        return dict(self._group.members)

    def send(self, message_id: str, data: dict[str, str] | None = None) -> None:
        check_name(message_id, "lava-send message id")
        values = check_data("lava-send", message_id, data)
        with self._group.cond:
            self._alive("lava-send", message_id)
            self._group.messages.setdefault(message_id, {})[self.member_id] = values
            self._group.cond.notify_all()

    def wait(
        self, message_id: str, timeout: float, *, should_stop: StopCheck | None = None
    ) -> dict[str, dict[str, str]]:
        call = "lava-wait"
        check_name(message_id, f"{call} message id")
        others = self._others()
        if not others:
            raise JobError(f"{call} '{message_id}': no other member in group {self.group_id!r}")

        def check() -> tuple[bool, dict[str, dict[str, str]]]:
            sent = self._group.messages.get(message_id, {})
            got = {m: dict(sent[m]) for m in others if m in sent}
            return bool(got), got

        def missing() -> str:
            return "any of " + describe_members(others, self._group.members)

        return self._wait(call, message_id, timeout, check, missing, should_stop)

    def wait_all(
        self,
        message_id: str,
        timeout: float,
        role: str | None = None,
        *,
        should_stop: StopCheck | None = None,
    ) -> dict[str, dict[str, str]]:
        call = "lava-wait-all"
        check_wait_all(message_id, role, self._group.members, self.group_id)
        others = self._others(role)

        def check() -> tuple[bool, dict[str, dict[str, str]]]:
            sent = self._group.messages.get(message_id, {})
            if all(m in sent for m in others):
                return True, {m: dict(sent[m]) for m in others}
            return False, {}

        def missing() -> str:
            sent = self._group.messages.get(message_id, {})
            return describe_members([m for m in others if m not in sent], self._group.members)

        return self._wait(call, message_id, timeout, check, missing, should_stop)

    def sync(
        self, message_id: str, timeout: float, *, should_stop: StopCheck | None = None
    ) -> None:
        call = "lava-sync"
        check_name(message_id, f"{call} message id")
        check_timeout(call, timeout)  # before the arrival counts
        group = self._group
        with group.cond:
            self._alive(call, message_id)
            if message_id not in group.synced:
                arrived = group.arrived.setdefault(message_id, set())
                arrived.add(self.member_id)
                if len(arrived) == len(group.members):
                    group.synced.add(message_id)
                    group.arrived.pop(message_id, None)
                    group.cond.notify_all()

        def check() -> tuple[bool, None]:
            return message_id in group.synced, None

        def missing() -> str:
            arrived = group.arrived.get(message_id, set())
            return describe_members(
                [m for m in group.members if m not in arrived], group.members
            )

        self._wait(call, message_id, timeout, check, missing, should_stop)

    def start_roles(self, roles: list[str]) -> None:
        if isinstance(roles, str):
            roles = [roles]
        for role in roles:
            check_name(role, f"{LAVA_START} role")
            if role not in self._group.members.values():
                raise JobError(f"{LAVA_START}: no member of group {self.group_id!r} has role {role!r}")
        with self._group.cond:
            self._alive(LAVA_START, None)
            new = set(roles) - self._group.started
            if new:
                self._group.started |= new
                self._group.cond.notify_all()

    def wait_for_start(self, timeout: float, *, should_stop: StopCheck | None = None) -> None:
        def check() -> tuple[bool, None]:
            return self.role in self._group.started, None

        def missing() -> str:
            return f"role {self.role!r} of {self.member_id} to be started"

        self._wait(LAVA_START, None, timeout, check, missing, should_stop)

    def close(self) -> None:
        self._closed = True
