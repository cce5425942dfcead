"""Moving finished jobs from the lab's Redis into the archive, next to the server (never on a board host).

The lab lists every job that reaches its final state in ``lava:ended``, in
the same Lua step that ends it. A server's ``Relay`` thread takes the ids
with a blocking ``BLMOVE`` into its own ``lava:ended:<node>`` list and sends
each as the Celery task ``server.archive_job`` on the ``archive`` queue,
which the server's child worker runs; a server that stops mid-way hands its
leftovers back when it starts again. ``sweep`` (at start, then every
``LAVA_DISPATCH_ARCHIVE_SWEEP_SECONDS``, 600) sends any ended job Redis
still holds that was never archived, so a lost id costs a delay, not a job.

``archive`` copies the record, results and whole log (the stream, as
output.yaml lines) in one transaction, marks the Redis record ``archived``,
and asks for the job's notify callbacks; the job's figures for ``/metrics``
are counted then (``server.jobmetrics``, once per job). Archiving twice is harmless. The
lab's id counter is kept above the archive's newest job, so a Redis that
was flushed never gives an archived job's id to a new one; a job whose id
the archive already holds for another submission is refused, not replaced.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from pipeline.log import record_line
from server import archive as store
from server import jobmetrics
from server.db import session
from server.models import Job
from tasks.ids import is_job_id
from tasks.keys import FINAL_STATES, ID_COUNTER, LAB, job_key, notified_key
from tasks.records import JobNotFound, get_job, iso, job_results, read_log

log = logging.getLogger("lava-dispatch.archiver")
ENDED = LAB.ended
ARCHIVE_TASK, NOTIFY_TASK, QUEUE = "server.archive_job", "server.notify_job", "archive"
HEALTH = {"Complete": "Complete", "Incomplete": "Incomplete", "Canceled": "Canceled"}
LUA_AT_LEAST = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) return tonumber(ARGV[1]) end
return current
"""


def sweep_seconds() -> float:
    value = os.environ.get("LAVA_DISPATCH_ARCHIVE_SWEEP_SECONDS", "").strip()
    return float(value) if value else 600.0


def newest_archived(engine: Engine | None = None) -> int:
    with session(engine) as s:
        return s.execute(select(func.max(Job.number))).scalar_one() or 0


def keep_counter_ahead(r: Any, engine: Engine | None = None) -> int:
    """Raise the lab's id counter to the archive's newest job number (after a flush of Redis); the counter."""
    return int(r.eval(LUA_AT_LEAST, 1, ID_COUNTER, newest_archived(engine)))


def archive_values(record: dict[str, Any]) -> dict[str, Any]:
    """The archive's fields for an ended Redis job record."""
    output = record.get("output_dir") or None
    visibility = record.get("visibility") or ""
    if not visibility:
        from server.jobs import definition_visibility

        visibility = definition_visibility(record.get("definition") or "")
    return {"id": record["id"], "description": record.get("name") or "", "submitter": record.get("submitter") or None,
            "device_type": record.get("device_type") or "unknown", "actual_device": record.get("board") or None,
            "state": "Finished", "health": HEALTH[record["state"]], "priority": int(record.get("priority") or 50),
            "visibility": visibility, "submit_time": iso(record.get("submitted")) or iso(record.get("ended")),
            "start_time": iso(record.get("started")), "end_time": iso(record.get("ended")),
            "definition": record.get("definition") or "", "multinode_group": record.get("group") or None,
            "error_type": record.get("error_type") or None, "error_msg": record.get("error") or None,
            "tags": record.get("tags") if isinstance(record.get("tags"), list) else [],
            "health_check": jobmetrics.is_health_check(record),
            "output_dir": f"{record.get('host')}:{output}" if output and record.get("host") else output}


def archive(r: Any, job_id: str, engine: Engine | None = None) -> str:
    """Archives one ended job; returns what happened: archived, not-ended, missing, refused."""
    if not is_job_id(job_id):
        return "refused"
    try:
        record = get_job(r, job_id)
    except JobNotFound:
        return "missing"
    if record.get("state") not in FINAL_STATES:
        return "not-ended"
    values = archive_values(record)
    known = store.get_job(job_id, engine=engine)
    submitted = datetime.fromisoformat(values["submit_time"]) if values["submit_time"] else None
    if known is not None and submitted is not None and known.submit_time is not None and \
            abs(known.submit_time.timestamp() - submitted.timestamp()) > 1:
        log.error("job %s: the archive holds another job %s (submitted %s): the lab's ids were reused after a "
                  "Redis flush; this one is not archived", job_id, job_id, known.submit_time)
        r.hset(job_key(job_id), "archived", "refused")
        return "refused"
    lines = (record_line(item).rstrip("\n") for item in read_log(r, job_id))
    results = job_results(r, job_id)
    store.archive_job(values, results, lines, engine=engine)
    if r.exists(job_key(job_id)):
        r.hset(job_key(job_id), "archived", int(time.time() * 1000))
        jobmetrics.count_job(r, record, results)  # once per job, whoever archives it
    keep_counter_ahead(r, engine)
    return "archived"


def callbacks_to_send(r: Any, job_id: str, engine: Engine | None = None) -> list[int]:
    """The indexes of the archived job's callbacks its criteria ask for, each claimed once (so a job
    archived twice notifies once)."""
    from server.notify import job_notify

    job = store.get_job(job_id, engine=engine)
    if job is None:
        return []
    notify = job_notify(job.definition)
    if notify is None or not notify.matches(job.health):
        return []
    from tasks.config import keep_seconds

    keep = int(keep_seconds())
    return [index for index in range(len(notify.all_callbacks()))
            if r.set(notified_key(job_id, index), "1", nx=True, ex=keep)]


def sweep(r: Any, send: Callable[[str], None], engine: Engine | None = None, batch: int = 1000) -> int:
    """Sends every ended, unarchived job Redis holds to the archiver; returns how many."""
    keep_counter_ahead(r, engine)
    sent = 0
    start = 0
    while True:
        ids = r.zrange(LAB.jobs, start, start + batch - 1)
        if not ids:
            return sent
        pipe = r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(job_key(job_id), "state", "archived")
        for job_id, (state, archived) in zip(ids, pipe.execute(), strict=True):
            if state in FINAL_STATES and not archived:
                send(job_id)
                sent += 1
        start += batch


def archive_health_changes(r: Any, engine: Engine | None = None, batch: int = 500) -> int:
    """Moves the lab's health changes (``lava:{lab}:health_changes``, in order) into the archive's history.

    The lab writes each change once, in the script that makes it (with the
    board's own capped history in Redis); this is the only writer of the SQL
    history. Entries not stored (the database away) go back to the list's head.
    """
    from datetime import UTC

    from tasks.health import take_changes

    moved = 0
    while True:
        changes = take_changes(r, batch)
        if not changes:
            return moved
        for index, change in enumerate(changes):
            try:
                store.record_health_change(change["board"], change["old"], change["new"], who=change.get("who") or None,
                                           reason=change.get("reason") or "",
                                           when=datetime.fromtimestamp(int(change["time"]) / 1000, UTC), engine=engine)
            except Exception:
                r.lpush(LAB.health_changes, *[json.dumps(c) for c in reversed(changes[index:])])
                raise
            moved += 1


class Relay(threading.Thread):
    """Takes ended job ids from ``lava:ended`` (blocking) and sends each to the archiver."""

    def __init__(self, r: Any, node: str, send: Callable[[str], None], engine: Engine | None = None):
        super().__init__(name="archive-relay", daemon=True)
        self.r = r
        self.processing = f"{ENDED}:{node}"
        self.send = send
        self.engine = engine
        self.stopping = threading.Event()

    def run(self) -> None:
        next_sweep = 0.0
        while not self.stopping.is_set():
            try:
                while self.r.lmove(self.processing, ENDED, "RIGHT", "LEFT"):  # a previous run's leftovers
                    pass
                if time.monotonic() >= next_sweep:
                    count = sweep(self.r, self.send, self.engine)
                    if count:
                        log.info("sweep: %d ended job(s) were not archived yet: sent to the archiver", count)
                    next_sweep = time.monotonic() + sweep_seconds()
                archive_health_changes(self.r, self.engine)
                job_id = self.r.blmove(ENDED, self.processing, 2, "LEFT", "RIGHT")
                if job_id:
                    self.send(job_id)
                    self.r.lrem(self.processing, 1, job_id)
            except Exception as exc:  # noqa: BLE001 - Redis or the database away: try again shortly
                log.warning("archive relay: %s: %s", type(exc).__name__, exc)
                self.stopping.wait(2)

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        self.join(timeout)


__all__ = ["archive", "archive_values", "sweep", "archive_health_changes",
           "Relay", "keep_counter_ahead", "callbacks_to_send", "ENDED",
           "ARCHIVE_TASK", "NOTIFY_TASK", "QUEUE"]
