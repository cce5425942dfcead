"""The Lua scripts that change a group's state (``coordinator/lua/*.lua``), and their answers.

Every change of a group is one script, so it is atomic and idempotent (see
the ``coordinator`` docstring). Each script receives the group's keys in
KEYS, ``meta`` first, and starts with the shared ``prelude.lua``. The files
are read once, at import; redis-py sends a script by its SHA and loads it
into Redis the first time Redis does not know it.
"""

from __future__ import annotations

from importlib.resources import files

from pipeline.errors import JobError

__all__ = ["CREATE", "END", "ENDED", "MISMATCH", "NO_GROUP", "OK", "SEND", "START", "SYNC", "check_status"]

# Status codes the scripts return (alive() in prelude.lua).
OK, NO_GROUP, ENDED, MISMATCH = 1, -1, -2, -3


def _load(name: str) -> str:
    return (files("coordinator") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


_PRELUDE = _load("prelude")
CREATE, SEND, SYNC, START, END = (_PRELUDE + _load(name) for name in ("create", "send", "sync", "start", "end"))


def check_status(status: int, label: str, group_id: str) -> None:
    """Raise the JobError a script's answer means for the call ``label``, if any."""
    if status == NO_GROUP:
        raise JobError(f"{label}: multinode group {group_id!r} does not exist (ended or expired)")
    if status == ENDED:
        raise JobError(f"{label}: multinode group {group_id!r} has ended")
