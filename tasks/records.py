"""Job records, live logs and results in Redis.

The job record is the hash ``lava:{job:<id>}:record`` (``tasks.keys``):

``id``, ``name``, ``device_type``, ``tags``, ``priority``, ``submitter``, ``definition`` (the job YAML)
    what was submitted; ``id`` is the lab's (``tasks.ids``);
``client_ref``
    the task id of a ``celery call`` (a correlation handle only: never a key or a path);
``state``
    Submitted, Scheduled, Running, Canceling, Complete, Incomplete or Canceled;
``submitted``, ``scheduled``, ``started``, ``ended``, ``cancel_requested``
    Redis-clock times in ms;
``board``, ``worker``, ``worker_pid``, ``host``, ``output_dir``
    where it runs and where its files are (on the worker's host);
``attempt``, ``laststep``, ``nactions``, ``actions``
    the chain bookkeeping: each dispatch has a new attempt; every step claims
    ``laststep + 1`` of its attempt, so a duplicate or stale message does nothing;
``needs``, ``score``, ``group``, ``role``, ``member``, ``pipelines``
    what placement needs (device type and tags), the queue order, the
    multinode group and role, the action names per device configuration;
``current``, ``durations``, ``error_type``, ``error``
    the action running now, each finished top-level action's duration and
    result, the error that ended the job.

The log is the stream ``lava:{job:<id>}:log``: one entry ``r`` per record (the
same ``{dt, lvl, msg}`` mapping as ``output.yaml``), then a last entry
``end: <state>``. ``lava:{job:<id>}:steps`` lists every chain step that ran,
with its worker, process and times: the audit trail the tests check.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from tasks.ids import InvalidJobId, check_job_id
from tasks.keys import FINAL_STATES, STREAM_MAXLEN, SUBMIT_QUEUE, JobState, job_key, log_key, results_key, steps_key

TASK_ID = re.compile(r"[0-9a-fA-F-]{32,36}")  # what `celery call` prints


class JobNotFound(LookupError):
    pass


def resolve_job_id(r: Any, text: Any) -> str:
    """The job ``text`` names (a job id as a string or a number), or JobNotFound saying why."""
    try:
        job_id = check_job_id(text)
    except InvalidJobId as exc:
        # A `celery call` prints its task id: say so rather than only "not an id" (no key is built from it).
        if isinstance(text, str) and len(text) >= 8 and any(text in m for m in r.lrange(SUBMIT_QUEUE, 0, 999)):
            raise JobNotFound(f"the job of `celery call` task {text} is not recorded yet: its tasks.submit message "
                              f"waits in {SUBMIT_QUEUE} for a worker (every board worker is busy?); then "
                              "`celery -A tasks result <task id>` gives its job id") from None
        hint = "; `celery -A tasks result <task id>` gives the job id of a `celery call`" \
            if isinstance(text, str) and TASK_ID.fullmatch(text) else ""
        raise JobNotFound(f"{exc}{hint}") from None
    if r.exists(job_key(job_id)):
        return job_id
    raise JobNotFound(f"no job {job_id} (finished jobs are kept for LAVA_DISPATCH_KEEP_DAYS days)")


def get_job(r: Any, job_id: str) -> dict[str, Any]:
    raw = r.hgetall(job_key(job_id))
    if not raw:
        raise JobNotFound(f"no job {job_id!r}")
    record: dict[str, Any] = dict(raw)
    for name in ("tags", "actions", "durations", "needs"):
        if record.get(name):
            try:
                record[name] = json.loads(record[name])
            except ValueError:
                pass
    for name in ("priority", "attempt", "laststep", "nactions", "worker_pid"):
        if record.get(name) not in (None, ""):
            record[name] = int(record[name])
    return record


def iso(ms: Any) -> str | None:
    if ms in (None, "", "0"):
        return None
    return datetime.fromtimestamp(int(ms) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def shown_id(job_id: Any) -> int | str:
    """A job id as ``status`` prints it: 42 as a number (as LAVA does), a member's ``42.1`` as text."""
    return int(job_id) if isinstance(job_id, str) and job_id.isdigit() else job_id


def status_view(record: dict[str, Any]) -> dict[str, Any]:
    """What ``lava-dispatch status`` prints."""
    view: dict[str, Any] = {"id": shown_id(record.get("id")), "name": record.get("name"),
                            "state": record.get("state"), "device_type": record.get("device_type"),
                            "priority": record.get("priority"), "board": record.get("board") or None}
    if record.get("health_check") == "1":
        view["health_check"] = True  # the health check of its board
    if record.get("queue_timeout"):
        view["queue_timeout"] = float(record["queue_timeout"])
    if record.get("current"):
        view["current_action"] = record["current"]
    for name in ("submitted", "scheduled", "started", "ended"):
        if iso(record.get(name)):
            view[name] = iso(record[name])
    if record.get("started") and record.get("ended"):
        view["duration"] = round((int(record["ended"]) - int(record["started"])) / 1000, 3)
    if record.get("durations"):
        view["actions"] = record["durations"]
    elif record.get("actions"):
        view["actions"] = [{"name": name} for name in record["actions"]]
    if record.get("error_type"):
        view["error_type"] = record["error_type"]
        view["error"] = record.get("error")
    if record.get("worker"):
        view["worker"] = f"{record['worker']} (pid {record.get('worker_pid')})"
    if record.get("output_dir"):
        view["output"] = f"{record.get('host')}:{record['output_dir']}"
    if record.get("submitter"):
        view["submitter"] = record["submitter"]
    return view


def append_step(r: Any, job_id: str, entry: dict[str, Any]) -> None:
    r.rpush(steps_key(job_id), json.dumps(entry))


def steps(r: Any, job_id: str) -> list[dict[str, Any]]:
    return [json.loads(item) for item in r.lrange(steps_key(job_id), 0, -1)]


def job_results(r: Any, job_id: str) -> list[dict[str, Any]]:
    """The final results, or for a job that ended without its worker: what it logged plus the job's failure."""
    raw = r.get(results_key(job_id))
    if raw:
        stored: list[dict[str, Any]] = json.loads(raw)
        return stored
    record = get_job(r, job_id)
    results = [rec["msg"] for rec in read_log(r, job_id)
               if rec.get("lvl") == "results" and isinstance(rec.get("msg"), dict)]
    if record.get("state") in FINAL_STATES and not any(x.get("suite") == "lava" and x.get("case") == "job"
                                                       for x in results):
        entry: dict[str, Any] = {"suite": "lava", "definition": "lava", "case": "job",
                                 "result": "pass" if record["state"] == JobState.COMPLETE else "fail"}
        if record.get("error_type"):
            entry.update({"error_type": record["error_type"], "error_msg": record.get("error")})
        results.append(entry)
    return results


# ---------------------------------------------------------------- the live log


class RedisLogSink:
    """A log sink that appends records to the job's stream from a background thread.

    The engine never waits on Redis: records are queued, written in batches,
    and kept (up to ``limit``) while Redis is unreachable, then written in
    order when it is back. ``close`` flushes what it can within ``timeout``.
    """

    def __init__(self, r: Any, job_id: str, limit: int = 100_000):
        self.r = r
        self.key = log_key(job_id)
        self.queue: queue.Queue[Any] = queue.Queue()
        self.limit = limit
        self.dropped = 0
        self.stop_deadline = float("inf")
        self.close_deadline: float | None = None  # monotonic; a stopping worker sets it: Redis may be down
        self.thread = threading.Thread(target=self._run, name=f"log-{job_id[:8]}", daemon=True)
        self.thread.start()

    def __call__(self, record: dict[str, Any]) -> None:
        self.queue.put(record)

    def _run(self) -> None:
        pending: list[dict[str, Any]] = []
        waiters: list[threading.Event] = []
        stop = False
        while not stop or pending:
            try:
                item = self.queue.get(timeout=0.5 if pending else None)
                while True:
                    if item is None:
                        stop = True
                    elif isinstance(item, threading.Event):
                        waiters.append(item)
                    else:
                        pending.append(item)
                    item = self.queue.get_nowait()
            except queue.Empty:
                pass
            if len(pending) > self.limit:
                self.dropped += len(pending) - self.limit
                del pending[: len(pending) - self.limit]
            while pending:
                try:
                    pipe = self.r.pipeline(transaction=False)
                    for record in pending[:500]:
                        pipe.xadd(self.key, {"r": json.dumps(record, default=str)}, maxlen=STREAM_MAXLEN,
                                  approximate=True)
                    pipe.execute()
                    del pending[:500]
                except Exception:  # noqa: BLE001 - Redis away: keep the records, try again
                    if stop and time.monotonic() > self.stop_deadline:
                        return
                    time.sleep(0.5)
                    break
            if not pending:
                for waiter in waiters:
                    waiter.set()
                waiters.clear()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every record so far is in Redis (False if Redis stayed away)."""
        marker = threading.Event()
        self.queue.put(marker)
        return marker.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        if self.close_deadline is not None:
            timeout = min(timeout, max(0.5, self.close_deadline - time.monotonic()))
        self.stop_deadline = time.monotonic() + timeout
        self.queue.put(None)
        self.thread.join(timeout)


def read_log(r: Any, job_id: str, follow: bool = False, block_ms: int = 1000,
             start: str = "0-0") -> Iterator[dict[str, Any]]:
    """The job's log records; with ``follow``, wait for new ones until the job ends (XREAD BLOCK)."""
    key = log_key(job_id)
    last = start
    while True:
        if follow:
            answer = r.xread({key: last}, count=500, block=block_ms)
            entries = answer[0][1] if answer else []
        else:
            entries = r.xrange(key, min=f"({last}" if last != "0-0" else "-", count=1000)
        for entry_id, fields in entries:
            last = entry_id
            if "end" in fields:
                return
            try:
                yield json.loads(fields["r"])
            except (KeyError, ValueError):
                continue
        if not entries:
            if not follow:
                return
            # A job can end without its end marker (its key expired): check the record too.
            state = r.hget(job_key(job_id), "state")
            if state is None or state in FINAL_STATES:
                if not r.xread({key: last}, count=1):
                    return


def read_logs(r: Any, job_ids: list[str], follow: bool = False, block_ms: int = 1000) -> Iterator[dict[str, Any]]:
    """The logs of several jobs (a multinode group), each line marked with its member.

    Following reads every stream in one blocking XREAD until each job has ended.
    """
    if len(job_ids) == 1:
        yield from read_log(r, job_ids[0], follow=follow, block_ms=block_ms)
        return
    job_of = {log_key(job_id): job_id for job_id in job_ids}
    member_of = {key: r.hget(job_key(job_id), "member") or job_id for key, job_id in job_of.items()}
    last = dict.fromkeys(job_of, "0-0")
    while last:
        if follow:
            answer = r.xread(dict(last), count=500, block=block_ms)
        else:
            answer = [(key, r.xrange(key, min=f"({last[key]}" if last[key] != "0-0" else "-", count=1000))
                      for key in list(last)]
        progressed = False
        for key, entries in answer or []:
            for entry_id, fields in entries:
                progressed = True
                last[key] = entry_id
                if "end" in fields:
                    del last[key]
                    break
                try:
                    record = json.loads(fields["r"])
                except (KeyError, ValueError):
                    continue
                if isinstance(record.get("msg"), str):
                    record["msg"] = f"[{member_of[key]}] {record['msg']}"
                record["member"] = member_of[key]
                yield record
        if progressed:
            continue
        if not follow:
            return
        # A job can end without its end marker (its key expired): drop streams of ended jobs.
        for key in list(last):
            state = r.hget(job_key(job_of[key]), "state")
            if (state is None or state in FINAL_STATES) and not r.xread({key: last[key]}, count=1):
                del last[key]
