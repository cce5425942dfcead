"""The Multinode protocol interface of the engine, and what its implementations share.

A multinode *group* is the set of jobs of one multinode submission. Every job
is a *member* of the group (``member_id``, what ``lava-self`` prints) and has
a *role* (``lava-role``). The engine talks to the coordinator through one
:class:`MultinodeClient` per member; it never knows where the coordinator
lives. Two implementations exist:

* :class:`~pipeline.local_coordinator.LocalCoordinator`: threads and one
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

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, TypeVar, runtime_checkable

from pipeline.errors import Canceled, JobError

__all__ = [
    "STOP_CHECK_INTERVAL",
    "LAVA_START",
    "MultinodeClient",
    "StopCheck",
    "check_data",
    "check_name",
    "check_wait_all",
    "describe_members",
    "label",
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


def label(call: str, message_id: str | None) -> str:
    """A call as messages name it: ``lava-sync 'barrier3'``."""
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
            raise Canceled(f"{label(call, message_id)}: canceled after {now - start:.1f} s")
        remaining = deadline - now
        if remaining <= 0:
            raise JobError(
                f"{label(call, message_id)}: timeout after {now - start:.1f} s "
                f"waiting for {missing()}"
            )
        block(min(STOP_CHECK_INTERVAL, remaining))
