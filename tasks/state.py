"""The lab's state in Redis: the Python side of every scheduler script, and the board registry.

Every decision is one Lua script (``tasks.scripts``) run atomically in
Redis, so two submitters, two finishing boards and a lease reaper can never
hand one board two jobs or one job two boards. Placement works on
*requests*: a list of needs, each "one board of this device type with these
tags, for this job". A single job is a request of one need whose name is the
job id; a multinode group is a request ``group:<id>`` with a need per member,
placed all or nothing (``place.lua``), so a group that cannot be placed in
full waits in the queues without holding any board.

Times are Redis server time (``TIME``), so hosts' clocks need not agree.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.errors import InfrastructureError
from tasks import config, scripts
from tasks.ids import require_job_id
from tasks.keys import LAB, board_key, group_of, type_keys

if TYPE_CHECKING:
    from pipeline.device import Device

log = logging.getLogger("lava-dispatch.state")

# Behind Sentinel these writes wait for a replica (WAIT) before the caller is answered: a failover
# right after them must not lose a submitted job, a job's end or a cancel.
REPLICATED = frozenset({"submit", "submit_group", "finish", "lose", "cancel"})


class SubmitError(Exception):
    """The lab refuses the job (no board of its type, a duplicate id, ...)."""


@dataclass
class Assignment:
    """A job reserved on a board: its chain is to be sent to the board's queue."""

    job: str
    board: str
    attempt: int

    @classmethod
    def many(cls, rows: Iterable[Any]) -> list[Assignment]:
        return [cls(str(r[0]), str(r[1]), int(r[2])) for r in rows or []]


@dataclass
class Submitted:
    job_id: str  # a multinode submission: the group id
    state: str  # Scheduled or Submitted (queued)
    board: str | None = None
    assignments: list[Assignment] = field(default_factory=list)
    members: list[str] = field(default_factory=list)  # a group's sub-job ids


@dataclass
class LostJob:
    job: str
    state: str  # Incomplete/Canceled, or Submitted when it went back to the queue
    board: str
    host: str
    pid_file: str
    boot_id: str


def no_board_error(device_type: str, what: str) -> SubmitError:
    return SubmitError(f"no board of device type {device_type!r} is registered in this lab "
                       f"(`lava-dispatch devices` lists the boards); submit with --queue-anyway to queue "
                       f"the {what} until one registers")


def device_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def redis_now_ms(r: Any) -> int:
    seconds, micros = r.time()
    return int(seconds) * 1000 + int(micros) // 1000


class LabState:
    """The scheduler's operations on one Redis database (``tasks.scheduler.Lab`` adds submitting and chains)."""

    def __init__(self, r: Any = None, url: str | None = None):
        self.url = url or config.redis_url()
        # Any: the client decodes answers to str, which redis-py's types do not say
        self.r: Any = r if r is not None else config.redis_client(self.url)
        self.lease_ms = int(config.lease_seconds() * 1000)
        self.board_ttl_ms = self.lease_ms
        self.keep_s = config.keep_seconds()
        self._scripts = scripts.register(self.r)
        sentinel = config.redis_target(self.url).sentinel
        self._wait = (sentinel.wait_replicas, sentinel.wait_ms) if sentinel and sentinel.wait_replicas else None
        self._devices: dict[str, Device] = {}
        self._board_types: dict[str, str] = {}  # the boards this process registered -> device type
        self._coordinator: Any = None

    # -- plumbing

    def script_arguments(self, name: str, *args: Any, token: str | None = None) -> tuple[list[str], list[Any]]:
        """(KEYS, ARGV) of a call of script ``name``."""
        return scripts.arguments(name, args, (self.board_ttl_ms, self.lease_ms, self.keep_s), token)

    def call(self, name: str, *args: Any, token: str | None = None) -> Any:
        """Run a script; a retry after a lost answer returns the first answer (never runs it twice).

        Callers that retry for longer than the client does (a Redis restart)
        pass the same ``token`` to every try.
        """
        if scripts.SCRIPTS[name].once:
            token = token or uuid.uuid4().hex
        keys, argv = self.script_arguments(name, *args, token=token)
        answer = self._scripts[name](keys=keys, args=argv)
        if self._wait and name in REPLICATED:
            self.wait_replicas(name)
        return answer

    def wait_replicas(self, what: str) -> int:
        """``WAIT`` for the replicas the URL asks for; fewer in time is logged (the write stands on the primary)."""
        assert self._wait is not None
        wanted, ms = self._wait
        got = int(self.r.wait(wanted, ms))
        if got < wanted:
            log.warning("%s: %d of %d replicas confirmed the write within %d ms; a failover now could lose it",
                        what, got, wanted, ms)
        return got

    def board_type(self, board: str) -> str:
        """The device type of a board this process registered ('' otherwise: the script finds it)."""
        return self._board_types.get(board, "")

    def device_for_sha(self, sha: str, text: str | None = None) -> Device:
        from pipeline.device import parse_device

        device = self._devices.get(sha)
        if device is None:
            if text is None:
                raise KeyError(sha)
            device = self._devices[sha] = parse_device(text, "device")
        return device

    def board_device(self, board: str) -> Device:
        return self.device_of(board, self.board_device_sha(board))

    def device_of(self, board: str, sha: str) -> Device:
        """The device of ``board``, whose device sha is ``sha`` (parsed once per sha)."""
        device = self._devices.get(sha)
        if device is None:
            device = self.device_for_sha(sha, self.r.hget(board_key(board), "device"))
        return device

    def board_device_sha(self, board: str) -> str:
        sha = self.r.hget(board_key(board), "device_sha")
        if sha is None:
            raise SubmitError(f"board {board!r} is not registered")
        return str(sha)

    def type_board_shas(self, device_type: str) -> dict[str, str]:
        """board -> device sha of every registered board of a device type."""
        boards = sorted(self.r.smembers(type_keys(device_type).boards))
        pipe = self.r.pipeline(transaction=False)
        for board in boards:
            pipe.hget(board_key(board), "device_sha")
        return {board: sha for board, sha in zip(boards, pipe.execute(), strict=True) if sha}

    def new_id(self) -> str:
        """The next id of the lab (one atomic INCR: two submitters never get the same one)."""
        return str(int(self.r.incr(LAB.last_id)))

    # -- board workers

    def register(self, board: str, device_text: str, device: Device, *, node: str, pid: int,
                 supervisor_pid: int, pid_file: str, force: bool = False) -> list[Any]:
        sha = device_sha(device_text)
        self._devices[sha] = device
        self._board_types[board] = device.device_type
        answer: list[Any] = self.call("register", board, device.device_type, json.dumps(list(device.tags)), node,
                                      config.hostname(), pid, supervisor_pid, device_text, sha, pid_file,
                                      config.boot_id(), int(force))
        return answer

    def heartbeat(self, board: str, node: str, job: str | None) -> list[Any]:
        answer: list[Any] = self.call("heartbeat", board, node, require_job_id(job) if job else "",
                                      self.board_type(board))
        return answer

    def release(self, board: str, token: str | None = None) -> list[Assignment]:
        return Assignment.many(self.call("release", board, self.board_type(board), token=token)[1])

    def claim(self, job: str, board: str, attempt: int, step: int, name: str, node: str, pid: int,
              token: str | None = None) -> tuple[str, str]:
        """Claim step ``step`` of the job's attempt: ('ok', state) once; duplicate/stale/final otherwise."""
        kind, state = self.call("claim", require_job_id(job), board, attempt, step, name, node, pid, config.hostname(),
                                token=token)
        return kind, state

    def finish(self, job: str, board: str, attempt: int, state: str, error_type: str | None, error: str | None,
               durations: list[dict[str, Any]] | None, results: list[dict[str, Any]] | None,
               audit: dict[str, Any] | None = None, token: str | None = None) -> tuple[str, list[Assignment]]:
        """Store a job's end, free the board and reserve it for the best queued job (returned)."""
        final, placed = self.call("finish", require_job_id(job), board, attempt, state, error_type or "",
                                  error or "",
                                  json.dumps(durations) if durations is not None else "",
                                  json.dumps(results) if results is not None else "",
                                  json.dumps(audit) if audit else "", self.board_type(board), token=token)
        return final, Assignment.many(placed)

    def lose(self, job: str, board: str, reason: str, only_started: bool = True,
             error_type: str = InfrastructureError.error_type, token: str | None = None) -> str:
        """End an active job of ``board`` whose worker is gone (Incomplete, or Canceled if it was canceling)."""
        state: str = self.call("lose", require_job_id(job), board, reason, int(only_started), error_type,
                               self.board_type(board), token=token)[0]
        return state

    def redispatch(self, job: str, board: str, token: str | None = None) -> int | None:
        kind, attempt = self.call("redispatch", require_job_id(job), board, token=token)
        return int(attempt) if kind == "ok" else None

    def stop(self, board: str, node: str) -> list[Assignment]:
        return Assignment.many(self.call("stop", board, node, self.board_type(board))[1])

    def forget(self, board: str) -> str:
        answer: str = self.call("forget", board, self.board_type(board))[0]
        return answer

    # -- users

    def cancel(self, job: str) -> tuple[str, str]:
        state, board = self.call("cancel", require_job_id(job), group_of(job) or "")
        return state, board

    def expire_leases(self) -> tuple[list[LostJob], list[Assignment], list[str]]:
        """End the jobs whose worker stopped renewing their lease; requeue those that never started.

        Also cancels the queued jobs past their queue timeout: (lost, placed, the jobs timed out).
        """
        if not self.r.zcard(LAB.leases) and not self.r.zcard(LAB.queue_until):
            return [], [], []
        lost_rows, placed, timed_out = self.call("reap")
        return ([LostJob(*[str(x) for x in row]) for row in lost_rows or []], Assignment.many(placed),
                [str(j) for j in timed_out or []])

    def boards(self) -> list[dict[str, Any]]:
        """Every registered board with its state: idle, busy (reserved or running a job) or offline; its health."""
        names = sorted(self.r.smembers(LAB.boards))
        now_ms = redis_now_ms(self.r)
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.hmget(board_key(name), "device_type", "tags", "node", "host", "pid", "heartbeat", "job", "stopped",
                       "health", "health_reason")
        out = []
        for name, row in zip(names, pipe.execute(), strict=True):
            device_type, tags, node, host, pid, heartbeat, job, stopped, health, health_reason = row
            age = (now_ms - int(heartbeat)) / 1000 if heartbeat and heartbeat != "0" else None
            live = age is not None and age * 1000 <= self.board_ttl_ms and stopped != "1"
            state = "offline" if not live else ("busy" if job else "idle")
            out.append({"board": name, "device_type": device_type, "state": state, "job": job or None,
                        "tags": json.loads(tags or "[]"), "worker": node, "host": host, "pid": int(pid or 0),
                        "heartbeat_age": None if age is None else round(age, 1),
                        "health": health or "Good", "health_reason": health_reason or ""})
        return out

    def queue(self, device_type: str | None = None, limit: int = 100) -> list[str]:
        key = type_keys(device_type).pending if device_type else LAB.pending
        return list(self.r.zrange(key, 0, limit - 1))



__all__ = ["LabState", "SubmitError", "Assignment", "Submitted", "LostJob", "no_board_error", "device_sha",
           "redis_now_ms"]
