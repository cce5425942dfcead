"""Board health, LAVA's model: health checks, maintenance of boards and worker hosts, who changed what.

A board's health (``tasks.keys.Health``) is a field of its record that the
placement scripts read (``tasks/lua/gate.lua``): only a Good board takes
jobs; an Unknown or Looping board takes only its own health check; Bad,
Maintenance and Retired boards leave the pool of idle boards. Every change
goes through one script (``set_health.lua``, or ``health.lua``'s
``change_health`` when a job's end decides it), which writes the record, a
capped history per board (``lava:{board:B}:health``, newest first) and the
lab-wide list ``lava:{lab}:health_changes`` that the lab server archives
into SQL. So the CLI, the server's ``scheduler.devices.update`` and REST,
and the lab itself follow the same rule, and the very next placement honours
a change.

A health check is a job per device type, ``<device-type>.yaml`` in
``LAVA_DISPATCH_HEALTH_CHECKS`` (default ``/etc/lava-dispatch/health-checks``),
with its settings in ``<device-type>.conf`` (YAML: ``hours``, ``jobs``,
``infrastructure_errors``). A board's worker reads them when it starts and
stores them in the board's record, so whoever sets the health (a server on
another host) can submit the check. It runs pinned to its board, first in
its queue, when the board first registers, when it comes back from
Maintenance or Bad, every ``hours`` hours or ``jobs`` jobs, and back to back
while the board is Looping. A board whose type has no health-check file is
Good at once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks import config
from tasks.keys import (
    ACTIVE_STATES,
    GROUP_REQUEST,
    LAB,
    DeviceState,
    Health,
    JobState,
    WorkerHealth,
    board_key,
    board_keys,
    group_key,
    job_key,
)
from tasks.state import Assignment, SubmitError, redis_now_ms

if TYPE_CHECKING:
    from tasks.scheduler import Lab

log = logging.getLogger("lava-dispatch.health")

DEFAULT_HOURS = 24.0  # LAVA's default health frequency
DEFAULT_INFRA_LIMIT = 3  # Infrastructure errors in a row that set a board Bad
SETTINGS = {"hours": float, "jobs": int, "infrastructure_errors": int}
HEALTH_CHECK_PRIORITY = 100


class HealthError(SubmitError):
    """A health change the lab refuses (no such board, an unknown health, Looping without a health check)."""


@dataclass
class HealthChange:
    board: str
    old: str
    new: str
    canceled: str = ""  # the job --force canceled
    health_check: str = ""  # the health-check job it submitted


def parse_health(value: str, kind: type[Health] | type[WorkerHealth] = Health) -> str:
    """A health as people type it (``maintenance``, ``MAINTENANCE``, ``Maintenance``) -> its display name."""
    names = {h.value.upper(): h.value for h in kind}
    text = str(value or "").strip().upper()
    if text not in names:
        raise HealthError(f"health {value!r} is not one of {', '.join(h.value for h in kind)}")
    return names[text]


# ---------------------------------------------------------------- health-check files


def check_settings(device_type: str, directory: Path | None = None) -> dict[str, Any]:
    """The health check of a device type: {definition ('' none), hours, jobs, infra_limit}.

    ``device_type`` comes from the board's own device file (a safe name), never from a job.
    """
    from pipeline.yamlload import load

    directory = directory or config.health_checks_dir()
    job_file, conf_file = directory / f"{device_type}.yaml", directory / f"{device_type}.conf"
    settings: dict[str, Any] = {"definition": "", "hours": DEFAULT_HOURS, "jobs": 0,
                                "infra_limit": config.infrastructure_error_limit()}
    if job_file.is_file():
        settings["definition"] = job_file.read_text(encoding="utf-8")
    if conf_file.is_file():
        data = load(conf_file.read_text(encoding="utf-8"), str(conf_file)) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{conf_file}: a mapping of {', '.join(SETTINGS)} is needed")
        for name, value in data.items():
            kind = SETTINGS.get(str(name))
            if kind is None or isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{conf_file}: {name}: {value!r} is not a setting ({', '.join(SETTINGS)}: "
                                 f"a number >= 0)")
            settings["infra_limit" if name == "infrastructure_errors" else str(name)] = kind(value)
    return settings


# ---------------------------------------------------------------- changes


def _answer(lab: Lab, board: str, answer: list[Any]) -> HealthChange:
    if answer[0] == "missing":
        raise HealthError(f"no board {board!r} is registered")
    if answer[0] == "nocheck":
        raise HealthError(f"board {board} cannot loop: its device type has no health check "
                          f"({config.health_checks_dir()}/<device-type>.yaml)")
    _, old, new, canceled, placed = answer
    lab.dispatch(Assignment.many(placed))
    change = HealthChange(board, old, new, canceled)
    change.health_check = ensure_health_check(lab, board) or ""
    if not change.health_check and new in (Health.UNKNOWN, Health.LOOPING):
        change.health_check = pending_check(lab, board) or ""  # the board's worker submitted it first
    return change


def pending_check(lab: Lab, board: str) -> str | None:
    """The board's health-check job when it is queued or running."""
    hc_job = lab.r.hget(board_key(board), "hc_job")
    if hc_job:
        state = lab.r.hget(job_key(hc_job), "state")
        if state == JobState.SUBMITTED or state in ACTIVE_STATES:
            return str(hc_job)
    return None


def set_health(lab: Lab, board: str, health: str, *, who: str = "", reason: str = "",
               force: bool = False) -> HealthChange:
    """Set a board's health (``who``: the user; '' the lab). The one rule for the CLI and the server's API.

    Maintenance, Bad and Retired let the running job finish (``force``: it is
    canceled), then the board takes no job. Good (from anything else) or
    Unknown runs the board's health check first, when its type has one.
    """
    new = parse_health(health)
    answer = lab.call("set_health", board, new, who, reason or f"set to {new}", int(force), "")
    return _answer(lab, board, answer)


def setup_board(lab: Lab, board: str, device_type: str) -> HealthChange:
    """A worker starts: store its type's health-check settings; a first registration gets its health."""
    try:
        settings = check_settings(device_type)
    except (OSError, ValueError) as exc:
        log.error("health check of %s: %s", device_type, exc)
        settings = {"definition": "", "hours": 0, "jobs": 0, "infra_limit": config.infrastructure_error_limit()}
    return _answer(lab, board, lab.call("set_health", board, "", "", "", 0, json.dumps(settings)))


def due_reason(lab: Lab, board: str) -> str | None:
    """Why the board needs a health check now (None: it does not, or one is queued or running)."""
    rec = lab.r.hmget(board_key(board), "health", "hc_definition", "hc_job", "hc_due", "hc_hours", "hc_last",
                      "stopped")
    health, definition, hc_job, hc_due, hours, last, stopped = rec
    if not definition or stopped == "1" or (hc_job and pending_check(lab, board)):
        return None
    if health in (Health.UNKNOWN, Health.LOOPING):
        return f"the board is {health}"
    if health in (None, Health.GOOD):
        if hc_due == "1":
            return "its health check is due (jobs since the last one)"
        if float(hours or 0) > 0 and redis_now_ms(lab.r) - int(last or 0) >= float(hours) * 3_600_000:
            return f"its health check is due (every {float(hours):g} hours)"
    return None


def ensure_health_check(lab: Lab, board: str) -> str | None:
    """Submit the board's health check if it needs one now; the job id (None: not needed or already there)."""
    reason = due_reason(lab, board)
    if reason is None:
        return None
    from pipeline.errors import ProblemList

    definition = lab.r.hget(board_key(board), "hc_definition") or ""
    try:
        submitted = lab.submit(definition, priority=HEALTH_CHECK_PRIORITY, health_check_board=board,
                               submitter="lava-health")
    except ProblemList as exc:
        lab.call("set_health", board, Health.BAD, "", "its health check job is invalid: " + "; ".join(exc.problems),
                 0, "")
        return None
    except SubmitError as exc:
        log.info("health check of %s not submitted: %s", board, exc)
        return None
    log.info("health check job %s submitted for %s: %s", submitted.job_id, board, reason)
    return submitted.job_id


def set_worker_health(lab: Lab, host: str, health: str, *, who: str = "", reason: str = "",
                      force: bool = False) -> tuple[str, list[str]]:
    """Maintenance or Retired: the host's boards finish their jobs (``force``: canceled) and take no more.

    Back to Active: each Good board whose type has a health check runs it before any other job.

    Returns (the old health, the jobs canceled).
    """
    new = parse_health(health, WorkerHealth)
    boards = [b["board"] for b in lab.boards() if b["host"] == host]
    if not boards and not lab.r.hexists(LAB.hosts, host):
        raise HealthError(f"no board of the lab runs on worker host {host!r} (`lava-dispatch workers` lists them)")
    _, old, canceled, placed = lab.call("set_host_health", host, new, who, reason or f"set to {new}", int(force),
                                        json.dumps(boards))
    lab.dispatch(Assignment.many(placed))
    if new == WorkerHealth.ACTIVE:
        for board in boards:  # back from Maintenance: the health checks the script made due go first
            ensure_health_check(lab, board)
    return old, list(canceled)


# ---------------------------------------------------------------- views


def history(lab: Lab, board: str, limit: int = 20) -> list[dict[str, Any]]:
    """The board's newest health changes in Redis: {old, new, who, reason, time (ms)}, newest first."""
    return [json.loads(entry) for entry in lab.r.lrange(board_keys(board).health, 0, limit - 1)]


def take_changes(r: Any, count: int = 500) -> list[dict[str, Any]]:
    """Take (remove) the oldest health changes from the lab-wide list, for an archive."""
    entries = r.lpop(LAB.health_changes, count) or []
    return [json.loads(entry) for entry in entries]


def device_state(job: str | None, job_state: str | None) -> str:
    """LAVA's device state: Idle, Reserved (a job placed, not started) or Running."""
    if not job:
        return DeviceState.IDLE.value
    running = job_state in (JobState.RUNNING, JobState.CANCELING)
    return (DeviceState.RUNNING if running else DeviceState.RESERVED).value


def workers(lab: Lab) -> list[dict[str, Any]]:
    """Every worker host: its health (with reason, who, when) and its boards."""
    from tasks.records import iso

    hosts: dict[str, dict[str, Any]] = {}
    for b in lab.boards():
        if b["host"]:
            hosts.setdefault(b["host"], {"host": b["host"], "health": WorkerHealth.ACTIVE.value,
                                         "boards": []})["boards"].append(b["board"])
    for host, raw in lab.r.hgetall(LAB.hosts).items():
        value = json.loads(raw)
        entry = hosts.setdefault(host, {"host": host, "boards": []})
        entry.update(health=value["health"], reason=value.get("reason", ""), by=value.get("by", ""),
                     changed=iso(value.get("changed")),
                     history=[{**h, "time": iso(h.get("time"))} for h in value.get("history") or []])
    return sorted(hosts.values(), key=lambda h: h["host"])





def device(lab: Lab, board: str, history_limit: int = 20) -> dict[str, Any]:
    """One board as ``devices show`` prints it: health (why, by whom, when), state, job, health check, history."""
    from tasks.records import iso

    listed = next((b for b in lab.boards() if b["board"] == board), None)
    if listed is None:
        raise HealthError(f"no board {board!r} is registered")
    rec = lab.r.hgetall(board_key(board))
    job = rec.get("job") or None
    job_state = lab.r.hget(job_key(job), "state") if job else None
    host = rec.get("host") or ""
    host_value = json.loads(lab.r.hget(LAB.hosts, host) or "{}") if host else {}
    return {
        "board": board, "device_type": rec.get("device_type"), "health": rec.get("health") or Health.GOOD.value,
        "health_reason": rec.get("health_reason", ""), "health_by": rec.get("health_by") or "lab",
        "health_changed": iso(rec.get("health_changed")), "state": device_state(job, job_state),
        "online": listed["state"] != "offline", "job": job, "job_state": job_state,
        "worker": rec.get("node"), "host": host, "host_health": host_value.get("health", WorkerHealth.ACTIVE.value),
        "tags": listed["tags"],
        "health_check": {"defined": bool(rec.get("hc_definition")), "hours": float(rec.get("hc_hours") or 0),
                         "jobs": int(rec.get("hc_jobs") or 0), "job": rec.get("hc_job") or None,
                         "due": rec.get("hc_due") == "1", "last_job": rec.get("hc_last_job") or None,
                         "last_result": rec.get("hc_last_result") or None, "last": iso(rec.get("hc_last"))},
        "jobs_since_health_check": int(rec.get("jobs_since_hc") or 0),
        "infrastructure_errors": int(rec.get("infra_errors") or 0),
        "infrastructure_error_limit": int(rec.get("infra_limit") or config.infrastructure_error_limit()),
        "history": [{"time": iso(e.get("time")), "old": e.get("old"), "new": e.get("new"),
                     "who": e.get("who") or "lab", "reason": e.get("reason", "")}
                    for e in history(lab, board, history_limit)],
    }


def queue_summary(lab: Lab, limit: int = 1000) -> dict[str, dict[str, Any]]:
    """Per device type: ``queued`` jobs, ``oldest_wait`` (s, None if none), ``boards``, ``good`` (Good and
    online), ``idle``, and ``waiting`` (why queued jobs cannot start: no board, no Good board; else None).

    For the dashboard, ``/metrics`` and ``status``: the first ``limit`` queued requests are read.
    """
    now = redis_now_ms(lab.r)
    summary: dict[str, dict[str, Any]] = {}

    def entry(device_type: str) -> dict[str, Any]:
        return summary.setdefault(device_type, {"queued": 0, "oldest_wait": None, "boards": 0, "good": 0,
                                                "idle": 0, "health": {}, "waiting": None})

    for b in lab.boards():
        e = entry(b["device_type"] or "")
        e["boards"] += 1
        e["health"][b["health"]] = e["health"].get(b["health"], 0) + 1
        if b["health"] == Health.GOOD and b["state"] != "offline":
            e["good"] += 1
            e["idle"] += b["state"] == "idle"
    requests = lab.r.zrange(LAB.pending, 0, limit - 1)
    pipe = lab.r.pipeline(transaction=False)
    for req in requests:
        group = req[len(GROUP_REQUEST):] if req.startswith(GROUP_REQUEST) else None
        pipe.hmget(group_key(group) if group else job_key(req), "needs", "submitted")
    for needs, submitted in pipe.execute():
        for device_type in {n["device_type"] for n in json.loads(needs or "[]")}:
            e = entry(device_type)
            e["queued"] += 1
            wait = round((now - int(submitted or now)) / 1000, 1)
            e["oldest_wait"] = max(e["oldest_wait"] or 0.0, wait)
    for device_type, e in summary.items():
        if e["queued"] and not e["good"]:
            e["waiting"] = waiting_reason_of(device_type, e)
    return summary


def waiting_reason_of(device_type: str, e: dict[str, Any]) -> str | None:
    if not e["boards"]:
        return f"no board of device type {device_type} is registered"
    if not e["good"]:
        shown = ", ".join(f"{n} {h}" for h, n in sorted(e["health"].items()))
        return f"no Good board of device type {device_type} is online ({shown})"
    return None


def waiting_reason(lab: Lab, device_type: str) -> str | None:
    """Why a job of ``device_type`` waits with no board to take it (None: a Good board will)."""
    e = queue_summary(lab).get(device_type) or {"boards": 0, "good": 0, "health": {}}
    return waiting_reason_of(device_type, e)


__all__ = ["HealthError", "HealthChange", "parse_health", "check_settings", "set_health", "setup_board",
           "due_reason", "ensure_health_check", "set_worker_health", "history", "take_changes", "device_state",
           "workers", "device", "queue_summary", "waiting_reason", "DEFAULT_HOURS", "DEFAULT_INFRA_LIMIT"]
