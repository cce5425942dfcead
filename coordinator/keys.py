"""The Redis keys of a multinode group (the layout is in the ``coordinator`` docstring)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_END_TTL", "DEFAULT_GROUP_TTL", "EVENTS_MAXLEN", "GroupKeys", "group_keys"]

DEFAULT_GROUP_TTL = 7 * 24 * 3600
DEFAULT_END_TTL = 60
# Approximate cap of a group's event stream. Waiters re-read the state after
# any event, so trimming old entries never loses a wake-up.
EVENTS_MAXLEN = 10000

_NAMES = ("meta", "members", "msg", "sync", "started", "events")


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
    """``P:mn:{G}:<name>``: the ``{G}`` hash tag keeps a group's keys in one cluster slot."""
    base = f"{prefix}:mn:{{{group_id}}}"
    return GroupKeys(*(f"{base}:{name}" for name in _NAMES))
