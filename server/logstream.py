"""A job's log as Server-Sent Events, for the dashboard's job page: pushed as the board prints it.

A running job's log is its Redis stream: the lines it has so far, then a
blocking ``XREAD`` that returns as soon as the worker appends a line, so a
line reaches the page within the time of a Redis round trip (no polling).
Each event carries a batch of records (``{dt, lvl, msg}``, as output.yaml)
and the stream entry id as its SSE id, so a browser that reconnects goes on
from where it was (``Last-Event-ID``). An archived job's log comes from the
archive in one pass. ``end`` says the log is complete.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from server.jobs import JobInfo, JobStore
from tasks.keys import FINAL_STATES, job_key, log_key

BATCH = 500
# Each blocking read waits this long at most: then a keep-alive comment (proxies and the browser keep the
# stream open), and a stopping server ends the stream (the browser reconnects, resuming after its last id).
BLOCK_MS = 2_000
ENTRY_ID = "0123456789-"


def _event(kind: str, data: Any, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


def _record(raw: str | None) -> dict[str, Any] | None:
    try:
        record = json.loads(raw or "")
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def archived_records(lines: list[str]) -> list[dict[str, Any]]:
    """output.yaml lines (``- {json}``, as the archive keeps them) as records."""
    records = []
    for line in lines:
        record = _record(line[2:]) if line.startswith("- ") else None
        records.append(record if record is not None else {"lvl": "info", "msg": line})
    return records


def resume_from(header: str | None) -> str:
    """The stream entry id after which to go on (a Last-Event-ID the browser sends), else the start."""
    if header and len(header) <= 40 and all(c in ENTRY_ID for c in header) and header.count("-") == 1:
        return header
    return "0-0"


async def events(job: JobInfo, store: JobStore, aredis: Any, last_id: str = "0-0",
                 disconnected: Any = None, stopping: Callable[[], bool] = lambda: False) -> AsyncIterator[str]:
    """The SSE text of the job's log; ends with an ``end`` event once the log is complete (or without one
    when the server stops or the browser went away)."""
    if job.archived:
        start = 0
        while True:
            lines = await run_in_threadpool(store.log_lines, job, start, start + 5000)
            if lines:
                yield _event("lines", archived_records(lines))
            if len(lines) < 5000:
                break
            start += len(lines)
        yield _event("end", {"state": job.state, "health": job.health})
        return
    key, record_key = log_key(job.id), job_key(job.id)
    yield "retry: 2000\n\n"
    while True:
        answer = await aredis.xread({key: last_id}, count=BATCH, block=BLOCK_MS)
        entries = answer[0][1] if answer else []
        batch: list[dict[str, Any]] = []
        ended = False
        for entry_id, fields in entries:
            last_id = entry_id
            if "end" in fields:
                ended = True
                break
            record = _record(fields.get("r"))
            if record is not None:
                batch.append(record)
        if batch:
            yield _event("lines", batch, last_id)
        if stopping():
            return
        if not entries:
            if disconnected is not None and await disconnected():
                return
            state = await aredis.hget(record_key, "state")
            if state is None or state in FINAL_STATES:  # ended without its end marker (the stream expired)
                ended = not await aredis.xread({key: last_id}, count=1)
            if not ended:
                yield ": waiting for the board\n\n"
        if ended:
            yield _event("end", {"state": await aredis.hget(record_key, "state") or ""}, last_id)
            return


__all__ = ["events", "archived_records", "resume_from"]
