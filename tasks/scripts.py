"""The scheduler's Lua scripts (``tasks/lua/*.lua``): their sources, and the keys each call is given.

A script is the generated constants (the job states, the error types, the
key templates: nothing a script needs is a string repeated by hand), then
``prelude.lua``, the shared functions it uses (``index.lua``: the idle index; ``place.lua``: placement and
queues; ``end.lua``: ending a job), then the script's own file as its
``main``. A script whose answer must survive a lost
reply is *once*: its last key is ``lava:{lab}:done:<token>``; a call retried
with the same token gets the first answer back instead of running again.

Every script reads from KEYS the keys of the things its arguments name (the
``KEYS`` line at the top of each file; ``SCRIPTS`` below builds them from the
same arguments). What a script only finds while it runs (an idle board, the
queued job a freed board takes) is listed under "Discovers" in its file: its
keys come from the same templates (``tasks.keys.lua_keys``). The files are
read once, at import; redis-py sends a script by its SHA and loads it the
first time Redis does not know it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from pipeline.errors import Bug, Canceled, ConfigurationError, InfrastructureError, JobError, LavaError, TestError
from tasks.keys import (
    HEALTH_HISTORY,
    LAB,
    STREAM_MAXLEN,
    GroupState,
    Health,
    JobState,
    WorkerHealth,
    board_keys,
    done_key,
    group_keys,
    job_keys,
    lua_keys,
    lua_string,
    type_keys,
)

ERRORS: tuple[type[LavaError], ...] = (JobError, InfrastructureError, TestError, ConfigurationError, Canceled, Bug)
ERROR_TYPES = tuple(e.error_type for e in ERRORS)
PRELUDE = "prelude"


class KeyList:
    """The KEYS of one call, in the order the script takes them (``take_lab``, ``take_job``, ...)."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def lab(self, *names: str) -> KeyList:
        self.keys += [getattr(LAB, name) for name in names]
        return self

    def job(self, job_id: str | None) -> KeyList:
        if job_id:
            self.keys += job_keys(job_id).all()
        return self

    def group(self, group_id: str | None) -> KeyList:
        if group_id:
            self.keys += group_keys(group_id).all()
        return self

    def board(self, name: str) -> KeyList:
        self.keys += board_keys(name).all()
        return self

    def type(self, name: str | None) -> KeyList:
        """A device type's keys; none for '' (a caller that does not know a board's type: it is discovered)."""
        if name:
            self.keys += type_keys(name).all()
        return self


def _group_keys(a: Sequence[Any]) -> KeyList:
    keys = KeyList().lab("jobs", "pending", "leases", "queue_until").group(a[0])
    for need in json.loads(a[2]):
        keys.job(need["job"])
    for name in json.loads(a[6]):
        keys.type(name)
    return keys


@dataclass(frozen=True)
class Script:
    keys: Callable[[Sequence[Any]], KeyList]  # the KEYS of a call, from its arguments (A in the script)
    once: bool = True
    # The shared files it uses after prelude.lua (each costs the script its definitions on every call).
    library: tuple[str, ...] = ("index", "gate", "place", "end", "health")


SCRIPTS: dict[str, Script] = {
    "submit": Script(lambda a: KeyList().lab("jobs", "pending", "leases", "queue_until").job(a[0]).type(a[5])),
    "submit_group": Script(_group_keys),
    "claim": Script(lambda a: KeyList().lab("leases").job(a[0]), library=()),
    "finish": Script(lambda a: KeyList().lab("jobs", "pending", "leases", "ended").job(a[0]).board(a[1]).type(a[9])),
    "lose": Script(lambda a: KeyList().lab("jobs", "leases", "ended").job(a[0]).board(a[1]).type(a[5])),
    "redispatch": Script(lambda a: KeyList().lab("leases").job(a[0]), library=()),
    "cancel": Script(lambda a: KeyList().lab("jobs", "pending", "leases", "ended").job(a[0]).group(a[1])),
    "heartbeat": Script(lambda a: KeyList().lab("tick", "resumed", "pending", "leases", "live").board(a[0]).job(a[2])
                        .type(a[3]), once=False),
    "reap": Script(lambda a: KeyList().lab("resumed", "leases", "jobs", "pending", "ended", "queue_until", "live")),
    "register": Script(lambda a: KeyList().lab("boards", "live").board(a[0]).type(a[1]), library=("index",)),
    "release": Script(lambda a: KeyList().lab("pending", "leases").board(a[0]).type(a[1])),
    "stop": Script(lambda a: KeyList().lab("pending", "leases").board(a[0]).type(a[2])),
    "forget": Script(lambda a: KeyList().lab("boards", "live").board(a[0]).type(a[1]), library=("index",)),
    "set_health": Script(lambda a: KeyList().lab("pending", "leases", "health_changes").board(a[0])),
    "set_host_health": Script(lambda a: KeyList().lab("pending", "leases", "hosts")),
}


def _lua_table(name: str, pairs: dict[str, str]) -> str:
    """A constant table; reading a name it does not have (a misspelt state) is an error, not nil."""
    body = ", ".join(f"[{lua_string(k)}] = {lua_string(v)}" for k, v in pairs.items())
    return f"local {name} = setmetatable({{{body}}}, STRICT)"


def lua_constants(once: bool) -> str:
    """What the scripts share with Python, as Lua: states, error types, key templates."""
    return "\n".join([
        "-- generated by tasks/scripts.py from tasks.keys and pipeline.errors",
        "local STRICT = {__index = function(_, k) error('no such constant: ' .. tostring(k)) end}",
        _lua_table("S", {s.value: s.value for s in JobState}),
        _lua_table("GS", {s.value: s.value for s in GroupState}),
        _lua_table("ERR", {e.error_type: e.error_type for e in ERRORS}),
        _lua_table("ERR_CLASS", {e.error_type: e.__name__ for e in ERRORS}),
        _lua_table("H", {h.value: h.value for h in Health}),
        _lua_table("WH", {h.value: h.value for h in WorkerHealth}),
        f"local LOG_MAXLEN = {STREAM_MAXLEN}",
        f"local HEALTH_HISTORY = {HEALTH_HISTORY}",
        f"local ONCE = {1 if once else 0}",
        lua_keys(),
    ])


def _read(name: str) -> str:
    return (files("tasks") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


_ONCE_TAIL = """
local DONE = KEYS[#KEYS]
local previous = redis.call('GET', DONE)
if previous then return cjson.decode(previous) end
local result = main()
redis.call('SET', DONE, cjson.encode(result), 'EX', 600)
return result
"""


def source(name: str) -> str:
    """The text Redis runs for script ``name``."""
    script = SCRIPTS[name]
    once = script.once
    parts = [lua_constants(once), _read(PRELUDE), *(_read(lib) for lib in script.library),
             "local function main()", _read(name), "end", _ONCE_TAIL if once else "return main()"]
    return "\n".join(parts) + "\n"


SOURCES = {name: source(name) for name in SCRIPTS}


def arguments(name: str, args: Sequence[Any], settings: Sequence[Any],
              token: str | None) -> tuple[list[str], list[Any]]:
    """(KEYS, ARGV) of a call of script ``name`` with its arguments ``args`` (A in the script).

    ``settings``: board heartbeat TTL (ms), lease (ms), keep (s); ``token``:
    required by a *once* script.
    """
    script = SCRIPTS[name]
    values = ["" if a is None else a for a in args]
    keys = script.keys(values).keys
    if script.once:
        if not token:
            raise ValueError(f"script {name} needs a token")
        keys.append(done_key(token))
    return keys, [*settings, *values]


def register(r: Any) -> dict[str, Any]:
    """Every script registered on client ``r`` (name -> redis-py Script)."""
    return {name: r.register_script(text) for name, text in SOURCES.items()}


__all__ = ["SCRIPTS", "SOURCES", "KeyList", "Script", "arguments", "lua_constants", "register", "source"]
