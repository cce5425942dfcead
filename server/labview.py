"""The lab as an operator looks at it: boards with their health and state, the queue per device type.

The dashboard and ``/metrics`` read the same figures from here, at the
moment they are asked (Redis for the live lab, the archive for the last
health check), so every server of a lab answers the same thing.

A queued job counts for the device type it asked for (each member of a
multinode group for its own role's type); its waiting time runs from its
submission. A device type with queued jobs but no Good board is shown as
such: nothing will take those jobs until a board is back.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import defer

from server.db import session
from server.models import DEVICE_HEALTHS, Job
from tasks.keys import GROUP_REQUEST, LAB, group_key, job_key

DEVICE_STATES = ("Idle", "Reserved", "Running")
TAKES_JOBS = ("Good",)  # the healths a board takes ordinary jobs in


@dataclass
class TypeQueue:
    """One device type: its boards and the jobs waiting for it."""

    name: str
    queued: int = 0
    oldest_ms: int | None = None  # submit time of the longest-waiting job (ms since the epoch)
    boards: int = 0
    good: int = 0  # boards in Good health
    online_good: int = 0  # of them, with a live worker
    healths: dict[str, int] = field(default_factory=dict)

    def oldest_seconds(self, now_ms: int | None = None) -> float:
        if self.oldest_ms is None:
            return 0.0
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        return max(0.0, (now_ms - self.oldest_ms) / 1000)

    @property
    def no_good_board(self) -> bool:
        return self.online_good == 0

    @property
    def oldest(self) -> datetime | None:
        from datetime import UTC

        return None if self.oldest_ms is None else datetime.fromtimestamp(self.oldest_ms / 1000, UTC)


def queued_jobs(r: Any) -> list[tuple[str, str, int | None]]:
    """(job id, device type, submit ms) of every queued job: the lab's pending requests, groups by member."""
    requests = r.zrange(LAB.pending, 0, -1)
    if not requests:
        return []
    jobs: list[str] = []
    groups = [req.removeprefix(GROUP_REQUEST) for req in requests if req.startswith(GROUP_REQUEST)]
    if groups:
        pipe = r.pipeline(transaction=False)
        for group in groups:
            pipe.hget(group_key(group), "members")
        for members in pipe.execute():
            jobs.extend(json.loads(members) if members else [])
    jobs.extend(req for req in requests if not req.startswith(GROUP_REQUEST))
    pipe = r.pipeline(transaction=False)
    for job_id in jobs:
        pipe.hmget(job_key(job_id), "device_type", "submitted", "state")
    found = []
    for job_id, (device_type, submitted, state) in zip(jobs, pipe.execute(), strict=True):
        if device_type and state in (None, "Submitted"):
            found.append((job_id, device_type, int(submitted) if submitted and submitted.isdigit() else None))
    return found


def queues(r: Any, devices: list[dict[str, Any]]) -> list[TypeQueue]:
    """Every device type that has a board or a queued job, by name."""
    types: dict[str, TypeQueue] = {}
    for device in devices:
        entry = types.setdefault(device["type"], TypeQueue(device["type"]))
        entry.boards += 1
        entry.healths[device["health"]] = entry.healths.get(device["health"], 0) + 1
        if device["health"] in TAKES_JOBS:
            entry.good += 1
            entry.online_good += bool(device["online"])
    for _, device_type, submitted in queued_jobs(r):
        entry = types.setdefault(device_type, TypeQueue(device_type))
        entry.queued += 1
        if submitted is not None and (entry.oldest_ms is None or submitted < entry.oldest_ms):
            entry.oldest_ms = submitted
    return [types[name] for name in sorted(types)]


def active_jobs(r: Any) -> list[tuple[str, str, str]]:
    """(job id, device type, state) of every job holding a board: Scheduled, Running or Canceling."""
    ids = r.zrange(LAB.leases, 0, -1)
    pipe = r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(job_key(job_id), "device_type", "state")
    return [(job_id, device_type or "unknown", state) for job_id, (device_type, state)
            in zip(ids, pipe.execute(), strict=True) if state in ("Scheduled", "Running", "Canceling")]


def last_health_checks(boards: list[str], engine: Engine | None = None) -> dict[str, Job]:
    """Each board's newest archived health-check job (boards without one are left out): two queries."""
    if not boards:
        return {}
    newest = (select(Job.actual_device, func.max(Job.number))
              .where(Job.health_check == True, Job.actual_device.in_(boards))  # noqa: E712 - the index's
              .group_by(Job.actual_device))
    with session(engine) as s:
        numbers = {str(board): int(number) for board, number in s.execute(newest).all()}
        if not numbers:
            return {}
        rows = s.execute(select(Job).options(defer(Job.definition))
                         .where(Job.number.in_(set(numbers.values())), Job.health_check == True,  # noqa: E712
                                Job.actual_device.in_(list(numbers)))).scalars().all()
    found: dict[str, Job] = {}
    for job in sorted(rows, key=lambda row: (row.number, row.sub_id or 0)):
        if job.actual_device is not None and job.number == numbers.get(job.actual_device):
            found[job.actual_device] = job
    return found


__all__ = ["TypeQueue", "queues", "queued_jobs", "active_jobs", "last_health_checks", "DEVICE_STATES",
           "DEVICE_HEALTHS", "TAKES_JOBS"]
