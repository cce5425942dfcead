"""A job as the API shows it: from the lab's Redis while it holds the job, from the archive once archived.

The lab's record states become LAVA's state and health, as ``lavacli``
shows them:

==========  ==========  ==========
Redis       state       health
==========  ==========  ==========
Submitted   Submitted   Unknown
Scheduled   Scheduled   Unknown
Running     Running     Unknown
Canceling   Canceling   Unknown
Complete    Finished    Complete
Incomplete  Finished    Incomplete
Canceled    Finished    Canceled
==========  ==========  ==========

A job the archive holds is always answered from the archive (its log pages
are read from compressed chunks, whatever the log's length), so what is
shown is the same before and after Redis forgets it (its keys expire, or
Redis is flushed). A multinode group's id ``N`` stands for its first member
``N.0``, as LAVA's job number does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select

from server import archive
from server.db import session
from server.errors import NotFound
from server.livelog import LiveLogs
from server.models import Job as ArchivedJob
from tasks.ids import InvalidJobId, check_job_id
from tasks.keys import GROUP_REQUEST, LAB, group_key, job_key
from tasks.scheduler import Lab

LAB_STATES = {"Submitted": ("Submitted", "Unknown"), "Scheduled": ("Scheduled", "Unknown"),
              "Running": ("Running", "Unknown"), "Canceling": ("Canceling", "Unknown"),
              "Complete": ("Finished", "Complete"), "Incomplete": ("Finished", "Incomplete"),
              "Canceled": ("Finished", "Canceled")}
STATES = ("Submitted", "Scheduling", "Scheduled", "Running", "Canceling", "Finished")
HEALTHS = ("Unknown", "Complete", "Incomplete", "Canceled")
LIST_FIELDS = ("id", "name", "submitter", "device_type", "board", "state", "priority", "visibility", "tags",
               "submitted", "started", "ended", "group", "error_type", "error", "host", "output_dir")
FILTERS = ("state", "health", "device_type", "submitter", "device")


@dataclass
class JobInfo:
    id: str
    description: str
    submitter: str | None
    device_type: str | None
    device: str | None
    state: str
    health: str
    priority: int = 50
    visibility: str = "public"
    tags: list[str] = field(default_factory=list)
    submit_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    definition: str = ""
    multinode_group: str | None = None
    error_type: str | None = None
    error_msg: str | None = None
    failure_comment: str | None = None
    output_dir: str | None = None
    archived: bool = False  # answered from the archive
    health_check: bool = False  # the health check of its board (tasks.health)
    lab_state: str = ""  # the Redis record's state ("" once archived)

    @property
    def key(self) -> tuple[int, int]:
        """The listing order (newest first is this, descending)."""
        number, sub = archive.parse_job_id(self.id)
        return number, -1 if sub is None else sub

    @property
    def finished(self) -> bool:
        return self.state == "Finished"


def _time(ms: Any) -> datetime | None:
    if ms in (None, "", "0", 0):
        return None
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


def visibility_of(value: Any) -> str:
    """LAVA's ``visibility:`` (public, personal, or ``{group: [...]}``) as the archive keeps it."""
    if value in (None, "", "public"):
        return "public"
    return "personal"  # personal; a group visibility is the submitter's and the admins' here (no groups)


def definition_visibility(text: str) -> str:
    """The visibility a job definition asks for (public when it cannot be read)."""
    import yaml

    try:
        data = yaml.load(text or "", Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return "public"
    return visibility_of(data.get("visibility")) if isinstance(data, dict) else "public"


def from_record(record: dict[str, Any]) -> JobInfo:
    """A job of the lab's Redis (a ``lava:job:<id>`` hash, fields as text)."""
    lab_state = record.get("state") or "Submitted"
    state, health = LAB_STATES.get(lab_state, (lab_state, "Unknown"))
    try:
        tags = json.loads(record.get("tags") or "[]")
    except ValueError:
        tags = []
    visibility = record.get("visibility") or ""
    if not visibility:
        visibility = definition_visibility(record["definition"]) if record.get("definition") else "public"
    output = record.get("output_dir") or None
    return JobInfo(
        id=record["id"], description=record.get("name") or "", submitter=record.get("submitter") or None,
        device_type=record.get("device_type") or None, device=record.get("board") or None, state=state,
        health=health, priority=int(record.get("priority") or 50), visibility=visibility,
        tags=tags if isinstance(tags, list) else [], submit_time=_time(record.get("submitted")),
        start_time=_time(record.get("started")), end_time=_time(record.get("ended")),
        definition=record.get("definition") or "", multinode_group=record.get("group") or None,
        error_type=record.get("error_type") or None, error_msg=record.get("error") or None,
        output_dir=f"{record.get('host')}:{output}" if output and record.get("host") else output,
        lab_state=lab_state, health_check=record.get("health_check") == "1")


def from_archive(job: ArchivedJob, definition: bool = True) -> JobInfo:
    return JobInfo(
        id=job.id, description=job.description, submitter=job.submitter, device_type=job.device_type,
        device=job.actual_device, state=job.state, health=job.health, priority=job.priority,
        visibility=job.visibility, tags=list(job.tags or []), submit_time=job.submit_time,
        start_time=job.start_time, end_time=job.end_time, definition=job.definition if definition else "",
        multinode_group=job.multinode_group, error_type=job.error_type, error_msg=job.error_msg,
        failure_comment=job.failure_comment, output_dir=job.output_dir, archived=True,
        health_check=bool(job.health_check))


def archived_result(row: Any) -> dict[str, Any]:
    """An archived result row as results.yaml has it (the lava suite's error_type and error_msg included)."""
    item: dict[str, Any] = {"suite": row.suite, "case": row.name, "result": row.result}
    for name in ("measurement", "units", "level"):
        if getattr(row, name) is not None:
            item[name] = getattr(row, name)
    item.update(row.extra or {})
    if row.logged is not None:
        item["logged"] = row.logged
    return item


class JobStore:
    """Reads jobs for the API: the lab's Redis and the archive, one answer."""

    def __init__(self, lab: Lab, engine: Engine | None = None):
        self.lab = lab
        self.r = lab.r
        self.engine = engine
        self.live_logs = LiveLogs(lab.r)

    # -- one job

    def resolve(self, job_id: Any) -> str:
        try:
            return check_job_id(job_id)
        except InvalidJobId:
            raise NotFound(f"Job '{job_id}' was not found.") from None

    def get(self, job_id: Any) -> JobInfo:
        """The job (NotFound when neither Redis nor the archive has it)."""
        text = self.resolve(job_id)
        found = self._find(text)
        if found is None and "." not in text and self.r.exists(group_key(text)):
            found = self._find(f"{text}.0")
        if found is None and "." not in text:
            found = self._archived(f"{text}.0")
        if found is None:
            raise NotFound(f"Job '{job_id}' was not found.")
        return found

    def _find(self, job_id: str) -> JobInfo | None:
        record = self.r.hgetall(job_key(job_id))
        if record.get("archived") or not record:
            archived = self._archived(job_id)
            if archived is not None:
                return archived
        return from_record(record) if record.get("id") else None

    def _archived(self, job_id: str) -> JobInfo | None:
        job = archive.get_job(job_id, engine=self.engine)
        return None if job is None else from_archive(job)

    def results(self, job: JobInfo) -> list[dict[str, Any]]:
        """The job's results as results.yaml has them (the lava suite last)."""
        if job.archived:
            return [archived_result(row) for row in archive.get_results(job.id, engine=self.engine)]
        from tasks.records import JobNotFound, job_results

        try:
            return job_results(self.r, job.id)
        except JobNotFound:
            return []

    def log_lines(self, job: JobInfo, start: int = 0, end: int | None = None) -> list[str]:
        """Lines ``start`` to ``end - 1`` of the job's output.yaml (each a ``- {dt, lvl, msg}`` item)."""
        if job.archived:
            return archive.read_lines(job.id, start, end, engine=self.engine)
        return self.live_logs.read(job.id, start, end)

    # -- listing

    def listing(self, *, limit: int = 50, offset: int = 0, **filters: str | None) -> tuple[int, list[JobInfo]]:
        """(how many jobs match, the page), newest first: the lab's unarchived jobs and the archive's, merged.

        The lab's jobs not yet archived are few (queued, running, just ended):
        each one's place among the archived jobs is one indexed count, and
        the archive's part of the page is one indexed page query.
        """
        unknown = set(filters) - set(FILTERS)
        if unknown:
            raise ValueError(f"cannot filter jobs by {', '.join(sorted(unknown))}")
        for name, allowed in (("state", STATES), ("health", HEALTHS)):
            if filters.get(name) is not None and filters[name] not in allowed:
                raise ValueError(f"{name}: {filters[name]!r} is not one of {', '.join(allowed)}")
        unarchived, newest = self._unarchived()
        live = sorted((job for job in unarchived if _matches(job, filters)), key=lambda job: job.key, reverse=True)
        where = _where(filters)
        with session(self.engine) as s:
            total_archived = s.execute(select(func.count()).select_from(ArchivedJob).where(*where)).scalar_one()
            # A job newer than every archived one comes before all of them: no count needed (the usual case).
            ranks = [index + (s.execute(select(func.count()).select_from(ArchivedJob)
                                        .where(*where, _after(job.key))).scalar_one()
                              if total_archived and job.key[0] <= newest else 0)
                     for index, job in enumerate(live)]
        page_live = [job for job, rank in zip(live, ranks, strict=True) if offset <= rank < offset + limit]
        archived_offset = offset - sum(1 for rank in ranks if rank < offset)
        wanted = limit - len(page_live)
        rows: list[JobInfo] = []
        if wanted > 0 and archived_offset < total_archived:
            archive_filters = {("actual_device" if k == "device" else k): v for k, v in filters.items()}
            _, _, query = archive.list_queries(archive_filters, wanted, max(archived_offset, 0))
            with session(self.engine) as s:
                rows = [from_archive(job, definition=False) for job in s.execute(query).scalars()]
        page = sorted(page_live + rows, key=lambda job: job.key, reverse=True)
        return total_archived + len(live), page

    def _unarchived(self) -> tuple[list[JobInfo], int]:
        """(the lab's jobs the archive does not have yet: queued, active and the newest ones; the archive's
        newest job number)."""
        candidates: set[str] = set(self.r.zrange(LAB.leases, 0, -1))
        for request in self.r.zrange(LAB.pending, 0, -1):
            if request.startswith(GROUP_REQUEST):
                members = self.r.hget(group_key(request.removeprefix(GROUP_REQUEST)), "members")
                candidates.update(json.loads(members) if members else {})
            else:
                candidates.add(request)
        with session(self.engine) as s:
            newest = s.execute(select(func.max(ArchivedJob.number))).scalar_one() or 0
        start = 0
        while True:  # the newest jobs of the lab (ids above the archive's newest are not archived)
            chunk = self.r.zrevrange(LAB.jobs, start, start + 199)
            fresh = [job_id for job_id in chunk if int(job_id.split(".")[0]) > newest]
            candidates.update(fresh)
            if len(chunk) < 200 or not fresh:
                break
            start += 200
        ids = sorted(candidates)
        if not ids:
            return [], newest
        pipe = self.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(job_key(job_id), *LIST_FIELDS, "archived")
        records = [dict(zip((*LIST_FIELDS, "archived"), row, strict=True)) for row in pipe.execute()]
        records = [rec for rec in records if rec["id"] and not rec["archived"]]
        with session(self.engine) as s:
            known = set(s.execute(select(ArchivedJob.id).where(ArchivedJob.id.in_([r["id"] for r in records])))
                        .scalars()) if records else set()
        return [from_record({k: v for k, v in rec.items() if v is not None}) for rec in records
                if rec["id"] not in known], newest


def _matches(job: JobInfo, filters: dict[str, str | None]) -> bool:
    return all(value is None or getattr(job, name) == value for name, value in filters.items())


def _where(filters: dict[str, str | None]) -> list[Any]:
    columns = {"state": ArchivedJob.state, "health": ArchivedJob.health, "device_type": ArchivedJob.device_type,
               "submitter": ArchivedJob.submitter, "device": ArchivedJob.actual_device}
    return [columns[name] == value for name, value in filters.items() if value is not None]


def _after(key: tuple[int, int]) -> Any:
    """Archived jobs listed before a job of this key (newer: a greater number, or a later member)."""
    number, sub = key
    return or_(ArchivedJob.number > number,
               and_(ArchivedJob.number == number, func.coalesce(ArchivedJob.sub_id, -1) > sub))


__all__ = ["JobInfo", "JobStore", "NotFound", "LAB_STATES", "STATES", "HEALTHS", "from_record", "from_archive",
           "visibility_of", "definition_visibility", "archived_result"]
