"""Every Redis key and queue name of the lab, and the states a job goes through.

Keys carry a Redis Cluster hash tag (the part in braces), so that the keys
of one thing share a slot: ``lava:{job:42}:record`` and ``lava:{job:42}:log``
are in one slot, ``lava:{type:kvm}:idle`` and ``lava:{type:kvm}:pending`` in
another. The layout (docs/lab.md, "Redis keys"):

==================================  ======  ===========================================
``lava:{lab}:last_id``              string  the last job id the lab assigned (``INCR``)
``lava:{lab}:jobs``                 zset    every job by submit time (ms)
``lava:{lab}:pending``              zset    queued requests, by (100 - priority, submit ms)
``lava:{lab}:leases``               zset    active job -> lease expiry (ms, Redis clock)
``lava:{lab}:boards``               set     every registered board
``lava:{lab}:live``                 zset    every board -> its last heartbeat (ms): the dead leave the idle index
``lava:{lab}:tick``, ``:resumed``   string  last heartbeat of any worker; when the lab came back
``lava:{lab}:done:<token>``         string  a script's answer, so a retried call is not run twice
``lava:{lab}:ended``                list    jobs that reached their final state (the server's archiver)
``lava:{lab}:metrics``              hash    ended jobs counted for ``/metrics`` (the server's archiver)
``lava:{lab}:hosts``                hash    worker host -> its health (JSON: health, reason, by, changed)
``lava:{lab}:health_changes``       list    every health change (JSON), for the server's SQL archive
``lava:{lab}:queue_until``          zset    queued job -> its queue deadline (``timeouts.queue``, ms)
``lava:{job:<id>}:record``          hash    the job record (``tasks.records``)
``lava:{job:<id>}:log``             stream  the live log, one entry per record, then ``end``
``lava:{job:<id>}:steps``           list    one JSON entry per chain step that ran (audit)
``lava:{job:<id>}:results``         string  the final results (JSON list)
``lava:{group:<id>}:record``        hash    a multinode group: state, needs, members
``lava:{type:<type>}:boards``       set     the boards of one device type
``lava:{type:<type>}:idle``         zset    its idle boards -> idle since (ms)
``lava:{type:<type>}:pending``      zset    the requests queued for it (as ``pending``)
``lava:{type:<type>}:tagsets``      hash    its boards' distinct tag sets: tag-set id -> tags (JSON)
``lava:{type:<type>}:tagcount``     hash    tag-set id -> how many registered boards have it
``lava:{type:<type>}:idle:<ts>``    zset    its idle boards with tag set ``<ts>`` -> idle since (ms)
``lava:{type:<type>}:queue:<ts>``   zset    queued single jobs a board with tag set ``<ts>`` serves (as ``pending``)
``lava:{type:<type>}:groups``       zset    queued group requests with a member of the type (as ``pending``)
``lava:{board:<name>}:record``      hash    device type, device, worker node/host/pid, heartbeat, job
``lava:{board:<name>}:tags``        set     the board's tags
``lava:{board:<name>}:health``      list    the board's newest health changes (JSON, newest first, capped)
``lava:{board:<name>}:control``     pubsub  cancel requests for the board's running job (a channel)
==================================  ======  ===========================================

A queued *request* is a job id, or ``group:<id>`` for a multinode group.
A *tag set* id ``<ts>`` is the first 12 hex digits of the SHA-1 of the board's
sorted tags joined by newlines (``tagset_id``); the tags come from the device
configuration, never from a job.
Celery's queues are Redis lists too: ``lava.submit`` and ``board.<name>``.

Job and group ids are the lab's own (``tasks.ids``): the helpers here refuse
anything else, so no client-chosen text ever becomes a key. The scheduler's
Lua scripts receive these names in KEYS (``tasks.scripts``); the names of
things a script only finds while it runs come from the same templates,
rendered as Lua (``lua_keys``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import astuple, dataclass, fields
from enum import StrEnum
from typing import Any

from tasks.ids import require_group_id, require_job_id

PREFIX = "lava"
SUBMIT_QUEUE = "lava.submit"  # Celery's queue of tasks.submit
GROUP_REQUEST = "group:"  # a queued request of a multinode group: "group:<id>"
STREAM_MAXLEN = 200_000  # approximate cap of a job's log stream
HEALTH_HISTORY = 100  # health changes kept per board in Redis (the lab server archives every one)


class Health(StrEnum):
    """A board's health, LAVA's: only Good boards take jobs (Unknown and Looping: their health check only)."""

    GOOD = "Good"
    UNKNOWN = "Unknown"
    LOOPING = "Looping"
    BAD = "Bad"
    MAINTENANCE = "Maintenance"
    RETIRED = "Retired"


class WorkerHealth(StrEnum):
    """A worker host's health: its boards take no job unless it is Active."""

    ACTIVE = "Active"
    MAINTENANCE = "Maintenance"
    RETIRED = "Retired"


class DeviceState(StrEnum):
    """A board's state (LAVA's): no job, a job reserved on it, a job running."""

    IDLE = "Idle"
    RESERVED = "Reserved"
    RUNNING = "Running"


class JobState(StrEnum):
    """The life of a job: Submitted (queued) -> Scheduled (a board is reserved) -> Running
    [-> Canceling] -> Complete, Incomplete or Canceled."""

    SUBMITTED = "Submitted"
    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    CANCELING = "Canceling"
    COMPLETE = "Complete"
    INCOMPLETE = "Incomplete"
    CANCELED = "Canceled"


class GroupState(StrEnum):
    """A multinode group's request: queued, placed (all members at once), canceled, or over."""

    SUBMITTED = "Submitted"
    SCHEDULED = "Scheduled"
    CANCELED = "Canceled"
    ENDED = "Ended"


ACTIVE_STATES = (JobState.SCHEDULED, JobState.RUNNING, JobState.CANCELING)  # the job holds a board
FINAL_STATES = (JobState.COMPLETE, JobState.INCOMPLETE, JobState.CANCELED)


def _key(kind: str, ident: str, part: str) -> str:
    return f"{PREFIX}:{{{kind}:{ident}}}:{part}"


@dataclass(frozen=True)
class LabKeys:
    """The lab-wide keys (one slot: ``{lab}``)."""

    last_id: str
    jobs: str
    pending: str
    leases: str
    boards: str
    live: str  # board -> last heartbeat: the heartbeat path drops the dead from the idle index
    tick: str
    resumed: str
    ended: str  # jobs that reached their final state, for the lab server's archiver
    metrics: str  # the lab server's counts of ended jobs (server.jobmetrics), for /metrics
    hosts: str  # worker host -> health JSON (Active, Maintenance, Retired)
    health_changes: str  # every board/host health change (JSON), taken by the lab server's archive
    queue_until: str  # queued job -> the end of its queue timeout (ms)


LAB = LabKeys(*(f"{PREFIX}:{{lab}}:{f.name}" for f in fields(LabKeys)))
ID_COUNTER = LAB.last_id


@dataclass(frozen=True)
class JobKeys:
    record: str
    log: str
    steps: str
    results: str

    def all(self) -> list[str]:
        return list(astuple(self))


@dataclass(frozen=True)
class GroupKeys:
    record: str

    def all(self) -> list[str]:
        return list(astuple(self))


@dataclass(frozen=True)
class BoardKeys:
    record: str
    tags: str
    health: str  # the board's health history (newest first, HEALTH_HISTORY entries)

    def all(self) -> list[str]:
        return list(astuple(self))


@dataclass(frozen=True)
class TypeKeys:
    boards: str
    idle: str
    pending: str

    def all(self) -> list[str]:
        return list(astuple(self))


@dataclass(frozen=True)
class TypeIndexKeys:
    """The idle index of a device type (docs/lab.md, "Placement"): its tag sets and queued groups."""

    tagsets: str
    tagcount: str
    groups: str

    def all(self) -> list[str]:
        return list(astuple(self))


@dataclass(frozen=True)
class BucketKeys:
    """One tag set of a device type: its idle boards, and the queued single jobs they serve."""

    idle: str
    queue: str

    def all(self) -> list[str]:
        return list(astuple(self))


def _job_keys(ident: str) -> JobKeys:
    return JobKeys(*(_key("job", ident, f.name) for f in fields(JobKeys)))


def _group_keys(ident: str) -> GroupKeys:
    return GroupKeys(*(_key("group", ident, f.name) for f in fields(GroupKeys)))


def _board_keys(name: str) -> BoardKeys:
    return BoardKeys(*(_key("board", name, f.name) for f in fields(BoardKeys)))


def _type_keys(name: str) -> TypeKeys:
    return TypeKeys(*(_key("type", name, f.name) for f in fields(TypeKeys)))


def _type_index_keys(name: str) -> TypeIndexKeys:
    return TypeIndexKeys(*(_key("type", name, f.name) for f in fields(TypeIndexKeys)))


def _bucket_keys(name: str, tagset: str) -> BucketKeys:
    return BucketKeys(*(_key("type", name, f"{f.name}:{tagset}") for f in fields(BucketKeys)))


def _control(name: str) -> str:
    return _key("board", name, "control")


def job_keys(job_id: str) -> JobKeys:
    """The keys of job ``job_id`` (an id as the lab writes it, else InvalidJobId)."""
    return _job_keys(require_job_id(job_id))


def job_key(job_id: str) -> str:
    """The job record."""
    return job_keys(job_id).record


def log_key(job_id: str) -> str:
    return job_keys(job_id).log


def steps_key(job_id: str) -> str:
    return job_keys(job_id).steps


def results_key(job_id: str) -> str:
    return job_keys(job_id).results


def group_keys(group_id: str) -> GroupKeys:
    return _group_keys(require_group_id(group_id))


def group_key(group_id: str) -> str:
    """The record of multinode group ``group_id`` (``N``; its members are jobs ``N.0``, ``N.1``, ...)."""
    return group_keys(group_id).record


def group_request(group_id: str) -> str:
    """The group as a queued request."""
    return GROUP_REQUEST + require_group_id(group_id)


def group_of(job_id: str) -> str | None:
    """The group a job id belongs to by its form (``42.1`` -> ``42``), None for a single job's id."""
    head, dot, _ = require_job_id(job_id).partition(".")
    return head if dot else None


def notified_key(job_id: str, index: int) -> str:
    """Set once the lab server sent callback ``index`` of the job (however often the job is archived)."""
    return f"{job_key(job_id).rsplit(':', 1)[0]}:notified:{int(index)}"


def board_keys(board: str) -> BoardKeys:
    return _board_keys(board)


def board_key(board: str) -> str:
    return board_keys(board).record


def control_channel(board: str) -> str:
    return _control(board)


def type_keys(device_type: str) -> TypeKeys:
    return _type_keys(device_type)


def type_index_keys(device_type: str) -> TypeIndexKeys:
    return _type_index_keys(device_type)


def tagset_id(tags: Iterable[str]) -> str:
    """The id of a board's tag set (order and repeats do not matter); place.lua computes the same."""
    return hashlib.sha1("\n".join(sorted(set(tags))).encode()).hexdigest()[:12]


def bucket_keys(device_type: str, tags: Iterable[str]) -> BucketKeys:
    """The idle boards of a device type with exactly these tags, and the queued jobs they serve."""
    return _bucket_keys(device_type, tagset_id(tags))


def done_key(token: str) -> str:
    return f"{PREFIX}:{{lab}}:done:{token}"


def board_queue(board: str) -> str:
    """The board's Celery queue: every task of the job it runs."""
    return f"board.{board}"


# ---------------------------------------------------------------- the same names in Lua


def _lua_template(name: str, value: str = "\0") -> tuple[str, str]:
    head, _, tail = name.partition(value)
    return head, tail


def _lua_builder(name: str, build: Callable[[str], Any], cls: type[Any]) -> str:
    """``function K.<name>(x)``: the key table of entity ``x``, from the Python template itself."""
    parts = []
    for f in fields(cls):
        head, tail = _lua_template(getattr(build("\0"), f.name))
        parts.append(f"{f.name} = {lua_string(head)} .. x .. {lua_string(tail)}")
    return f"function K.{name}(x) return {{{', '.join(parts)}}} end"


def _lua_reader(name: str, cls: type[Any]) -> str:
    """``function K.<name>_at(i)``: the same table read from KEYS[i..] (in the Python field order)."""
    parts = [f"{f.name} = KEYS[i + {n}]" for n, f in enumerate(fields(cls))]
    return f"function K.{name}_at(i) return {{{', '.join(parts)}}}, i + {len(parts)} end"


def _lua_bucket_builder() -> str:
    """``function K.bucket(t, s)``: the keys of tag set ``s`` of device type ``t``."""
    parts = []
    for f in fields(BucketKeys):
        head, rest = _lua_template(getattr(_bucket_keys("\0", "\1"), f.name))
        middle, tail = _lua_template(rest, "\1")
        parts.append(f"{f.name} = {lua_string(head)} .. t .. {lua_string(middle)} .. s .. {lua_string(tail)}")
    return f"function K.bucket(t, s) return {{{', '.join(parts)}}} end"


def lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def lua_keys() -> str:
    """The key scheme as Lua: ``K.job(id)``, ``K.board(name)``, ... and readers of KEYS.

    Generated from the functions above, so the scripts and Python cannot
    disagree on a name.
    """
    head, tail = _lua_template(_control("\0"))
    lab = ", ".join(f"{f.name} = {lua_string(getattr(LAB, f.name))}" for f in fields(LabKeys))
    lines = ["local K = {}",
             f"K.LAB = {{{lab}}}",
             f"K.GROUP_REQUEST = {lua_string(GROUP_REQUEST)}",
             _lua_builder("job", _job_keys, JobKeys), _lua_reader("job", JobKeys),
             _lua_builder("group", _group_keys, GroupKeys), _lua_reader("group", GroupKeys),
             _lua_builder("board", _board_keys, BoardKeys), _lua_reader("board", BoardKeys),
             _lua_builder("type", _type_keys, TypeKeys), _lua_reader("type", TypeKeys),
             _lua_builder("tindex", _type_index_keys, TypeIndexKeys), _lua_bucket_builder(),
             f"function K.control(x) return {lua_string(head)} .. x .. {lua_string(tail)} end"]
    return "\n".join(lines) + "\n"


__all__ = ["PREFIX", "SUBMIT_QUEUE", "GROUP_REQUEST", "JobState", "GroupState", "ACTIVE_STATES", "FINAL_STATES",
           "LabKeys", "LAB", "ID_COUNTER", "JobKeys", "GroupKeys", "BoardKeys", "TypeKeys", "job_keys", "job_key",
           "log_key", "steps_key", "results_key", "group_keys", "group_key", "group_request", "group_of",
           "board_keys", "board_key", "control_channel", "type_keys", "TypeIndexKeys", "BucketKeys",
           "type_index_keys", "tagset_id", "bucket_keys", "done_key", "board_queue", "lua_keys",
           "lua_string", "STREAM_MAXLEN", "HEALTH_HISTORY", "Health", "WorkerHealth", "DeviceState"]
