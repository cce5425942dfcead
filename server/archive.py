"""The durable archive of finished jobs: records, results, logs, device health history, retention.

The archiver (next to the server) moves a job out of Redis with
``archive_job``; the server reads it back with ``get_job``, ``list_jobs``,
``get_results`` and ``read_lines``. Archiving is idempotent: the same job
archived again replaces its record, results and log in one transaction, so
an archiver may retry after a crash without leaving duplicates.

A record uses the field names of the ``jobs`` table (see ``JOB_FIELDS``;
LAVA's ``job_name``, ``board`` and ``device`` are accepted for
``description`` and ``actual_device``). Times are datetimes or ISO 8601
strings (UTC when no zone is given). Unknown fields are refused: a typo in
the archiver must not lose data silently.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Select, delete, func, insert, select
from sqlalchemy.orm import defer

from server.db import advisory_lock, session
from server.logstore import iter_lines, line_count, read_lines, write_log
from server.models import (
    DEVICE_HEALTHS,
    JOB_HEALTHS,
    JOB_STATES,
    VISIBILITIES,
    HealthChange,
    Job,
    Result,
    utcnow,
)

__all__ = ["archive_job", "get_job", "list_jobs", "get_results", "read_lines", "line_count", "iter_lines",
           "record_health_change", "health_history", "purge", "retention_days", "parse_job_id"]

JOB_ID = re.compile(r"^([0-9]{1,15})(?:\.([0-9]{1,6}))?$")
JOB_FIELDS = ("id", "description", "submitter", "device_type", "actual_device", "state", "health",
              "health_check", "priority", "visibility", "submit_time", "start_time", "end_time", "definition",
              "multinode_group", "error_type", "error_msg", "failure_comment", "tags", "output_dir")
ALIASES = {"job_name": "description", "board": "actual_device", "device": "actual_device"}
REQUIRED = ("id", "device_type", "state", "submit_time")
PRIORITIES = {"high": 100, "medium": 50, "low": 0}
RESULTS = ("pass", "fail", "skip", "unknown")
RESULT_FIELDS = ("suite", "name", "result", "measurement", "units", "level", "logged", "metadata")
FILTERS = ("state", "health", "device_type", "submitter", "actual_device")
INSERT_BATCH = 1000


def parse_job_id(job_id: str | int) -> tuple[int, int | None]:
    """``"12"`` -> (12, None); ``"12.3"`` -> (12, 3): LAVA's ids, a multinode member being ``N.M``."""
    match = JOB_ID.match(str(job_id))
    if not match:
        raise ValueError(f"{job_id!r} is not a job id (N, or N.M for a multinode member)")
    return int(match.group(1)), None if match.group(2) is None else int(match.group(2))


def _time(name: str, value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not an ISO 8601 time") from None
    if not isinstance(value, datetime):
        raise ValueError(f"{name}: a datetime or an ISO 8601 string is needed, not {type(value).__name__}")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
    return str(value)


def job_values(record: Mapping[str, Any]) -> dict[str, Any]:
    """The checked column values of a job record (raises ValueError naming every problem)."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in record.items():
        field = ALIASES.get(key, key)
        if field not in JOB_FIELDS:
            problems.append(f"{key}: not a field of an archived job")
        elif field in values and values[field] != value:
            problems.append(f"{key}: given twice (as {field})")
        else:
            values[field] = value
    problems += [f"{name}: required but missing" for name in REQUIRED if values.get(name) in (None, "")]
    if problems:
        raise ValueError("the job record is refused: " + "; ".join(problems))
    values["id"] = str(values["id"])
    values["number"], values["sub_id"] = parse_job_id(values["id"])
    for name in ("submit_time", "start_time", "end_time"):
        if name in values:
            values[name] = _time(name, values[name])
    values["state"] = _choice("state", values["state"], JOB_STATES)
    values["health"] = _choice("health", values.get("health", "Unknown"), JOB_HEALTHS)
    values["visibility"] = _choice("visibility", str(values.get("visibility", "public")).lower(), VISIBILITIES)
    priority = values.get("priority", 50)
    priority = PRIORITIES.get(priority, priority) if isinstance(priority, str) else priority
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 100:
        raise ValueError(f"priority: {values.get('priority')!r} is not high, medium, low or 0-100")
    values["priority"] = priority
    tags = values.get("tags") or []
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise ValueError(f"tags: {tags!r} is not a list of strings")
    values["tags"] = list(tags)
    values["health_check"] = bool(values.get("health_check", False))
    for name in ("description", "definition"):
        values[name] = values.get(name) or ""
    values["archived"] = utcnow()
    return values


def result_values(job_id: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """One result row: LAVA's ``case`` is the ``name``; keys without a column (definition...) go to metadata."""
    data = dict(item)
    if "case" in data and "name" not in data:
        data["name"] = data.pop("case")
    extra = dict(data.pop("metadata", None) or {})
    extra.update({k: v for k, v in data.items() if k not in RESULT_FIELDS})
    for name in ("suite", "name", "result"):
        if data.get(name) in (None, ""):
            raise ValueError(f"a result of job {job_id} has no {name}: {item!r}")
    measurement = data.get("measurement")
    return {
        "job_id": job_id, "suite": str(data["suite"]), "name": str(data["name"]),
        "result": _choice("result", str(data["result"]).lower(), RESULTS),
        "measurement": None if measurement in (None, "") else float(measurement),
        "units": None if data.get("units") in (None, "") else str(data["units"]),
        "level": None if data.get("level") in (None, "") else str(data["level"]),
        "logged": _time("logged", data.get("logged")),
        "extra": json.loads(json.dumps(extra, default=str)),
    }


def archive_job(record: Mapping[str, Any], results: Iterable[Mapping[str, Any]],
                log_lines: Iterable[str | bytes], *, engine: Engine | None = None) -> Job:
    """Stores (or replaces) a job with its results and log, all or nothing; returns the stored record.

    The job's old rows go first (their results and log with them, by
    cascade), under a per-job lock, so two archivers of one job serialise
    and the last one wins whole. The log is streamed from ``log_lines``.
    """
    values = job_values(record)
    job_id = values["id"]
    with session(engine, write=True) as s:
        advisory_lock(s, f"job:{job_id}")
        s.execute(delete(Job).where(Job.id == job_id))
        s.execute(insert(Job), [values])
        batch: list[dict[str, Any]] = []
        for item in results:
            batch.append(result_values(job_id, item))
            if len(batch) >= INSERT_BATCH:
                s.execute(insert(Result), batch)
                batch = []
        if batch:
            s.execute(insert(Result), batch)
        write_log(s, job_id, log_lines)
        job = s.get(Job, job_id)
        assert job is not None
        return job


def get_job(job_id: str | int, *, engine: Engine | None = None) -> Job | None:
    """The archived job, or None."""
    with session(engine) as s:
        return s.get(Job, str(job_id))


def _where(filters: Mapping[str, str | None]) -> list[Any]:
    unknown = set(filters) - set(FILTERS)
    if unknown:
        raise ValueError(f"cannot filter jobs by {', '.join(sorted(unknown))} (only by {', '.join(FILTERS)})")
    if filters.get("state") is not None:
        _choice("state", filters["state"], JOB_STATES)
    if filters.get("health") is not None:
        _choice("health", filters["health"], JOB_HEALTHS)
    return [getattr(Job, name) == value for name, value in filters.items() if value is not None]


def list_queries(filters: Mapping[str, str | None], limit: int,
                 offset: int) -> tuple[Select[Any], Select[Any], Select[Any]]:
    """``list_jobs``'s queries: the count, the page's ids, the page (apart, so tests can read their plans).

    The ids come from an index alone however deep the page (skipping rows
    of an index is cheap, skipping table rows is not); only the page's own
    rows are then read, by primary key.
    """
    where = _where(filters)
    count = select(func.count()).select_from(Job).where(*where)
    order = (Job.number.desc(), Job.sub_id.desc())
    ids = select(Job.id).where(*where).order_by(*order).limit(limit).offset(offset)
    chosen = ids.subquery("page")
    page = (select(Job).options(defer(Job.definition, raiseload=True))
            .join(chosen, Job.id == chosen.c.id).order_by(*order))
    return count, ids, page


def list_jobs(*, state: str | None = None, health: str | None = None, device_type: str | None = None,
              submitter: str | None = None, actual_device: str | None = None, limit: int = 50, offset: int = 0,
              engine: Engine | None = None) -> tuple[int, list[Job]]:
    """(how many jobs match, the page of them), newest number first; ``definition`` is not loaded.

    Each filter is served by an index in the listing order: the count and
    the page's ids are index-only scans, the rows are read by key.
    """
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset cannot be negative")
    filters = {"state": state, "health": health, "device_type": device_type, "submitter": submitter,
               "actual_device": actual_device}
    count, _, page = list_queries(filters, limit, offset)
    with session(engine) as s:
        total = s.execute(count).scalar_one()
        rows = list(s.execute(page).scalars()) if limit else []
    return total, rows


def get_results(job_id: str | int, suite: str | None = None, *, engine: Engine | None = None) -> list[Result]:
    """The job's results in the order they were archived (optionally one suite's)."""
    query = select(Result).where(Result.job_id == str(job_id))
    if suite is not None:
        query = query.where(Result.suite == suite)
    with session(engine) as s:
        return list(s.execute(query.order_by(Result.id)).scalars())


def record_health_change(board: str, old: str, new: str, *, who: str | None = None, reason: str = "",
                         when: datetime | None = None, engine: Engine | None = None) -> HealthChange:
    """Records that ``board``'s health went from ``old`` to ``new`` (``who`` None: the lab decided)."""
    if not board:
        raise ValueError("a health change needs its board")
    change = HealthChange(board=board, old=_choice("old health", old, DEVICE_HEALTHS),
                          new=_choice("new health", new, DEVICE_HEALTHS), who=who, reason=reason or "",
                          changed=_time("when", when) or utcnow())
    with session(engine, write=True) as s:
        s.add(change)
    return change


def health_history(board: str, *, limit: int = 100, engine: Engine | None = None) -> list[HealthChange]:
    """The board's health changes, newest first."""
    query = (select(HealthChange).where(HealthChange.board == board)
             .order_by(HealthChange.changed.desc(), HealthChange.id.desc()).limit(limit))
    with session(engine) as s:
        return list(s.execute(query).scalars())


def retention_days() -> float:
    """``LAVA_DISPATCH_RETENTION_DAYS`` (default 365): how long finished jobs stay; 0 keeps them for ever."""
    value = os.environ.get("LAVA_DISPATCH_RETENTION_DAYS", "").strip() or "365"
    try:
        days = float(value)
    except ValueError:
        raise ValueError(f"LAVA_DISPATCH_RETENTION_DAYS={value!r} is not a number of days") from None
    if days < 0:
        raise ValueError(f"LAVA_DISPATCH_RETENTION_DAYS={value!r} cannot be negative")
    return days


def purge(now: datetime | None = None, *, days: float | None = None, engine: Engine | None = None,
          batch: int = 500) -> int:
    """Deletes the jobs that finished more than ``days`` (default ``retention_days()``) before ``now``.

    Their results and logs go with them. Deleted in batches, each its own
    transaction, so a large purge never holds the write lock for long.
    Returns how many jobs were deleted.
    """
    days = retention_days() if days is None else days
    if days <= 0:
        return 0
    cutoff = (_time("now", now) or utcnow()) - timedelta(days=days)
    old = select(Job.id).where(Job.state == "Finished", Job.end_time < cutoff).limit(batch)
    deleted = 0
    while True:
        with session(engine, write=True) as s:
            ids = list(s.execute(old).scalars())
            if ids:
                s.execute(delete(Job).where(Job.id.in_(ids)))
        deleted += len(ids)
        if len(ids) < batch:
            return deleted
