"""The in-process coordinator: every member of a group is a thread of this process.

``lava-dispatch run`` of a multinode job runs every member here (see
pipeline.multinode_local); the calls and their semantics are those of
pipeline.coordination's MultinodeClient, which the lab's Redis coordinator
implements as well.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from pipeline.coordination import (
    LAVA_START,
    StopCheck,
    check_data,
    check_members,
    check_name,
    check_timeout,
    check_wait_all,
    describe_members,
    label,
    wait_until,
)
from pipeline.errors import Bug, JobError

__all__ = ["LocalCoordinator", "LocalMultinodeClient"]

_T = TypeVar("_T")


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
            raise Bug(f"{label(call, message_id)}: multinode client already closed")
        if self._group.ended:
            raise JobError(f"{label(call, message_id)}: multinode group {self.group_id!r} has ended")

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
