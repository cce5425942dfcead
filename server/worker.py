"""The lab server's Celery worker: ``server.archive_job`` and ``server.notify_job`` on the ``archive`` queue.

``lava-dispatch server`` runs it as its child process (``celery -A
server.worker worker -Q archive``), so the database credentials stay with
the server; board workers never consume this queue. The settings are the
lab's (JSON only, early acknowledgement, the same ``visibility_timeout`` as
every other process of the lab), with a thread pool: archiving is database
work and callbacks wait on the network.

``celery -A server.worker call server.archive_job --args '["42"]'`` archives
job 42 again (harmless: archiving replaces it whole).
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Any

from celery import Celery

from server import archiver
from server.archiver import ARCHIVE_TASK, NOTIFY_TASK, QUEUE

lab_app_module = importlib.import_module("tasks.app")  # the module (``tasks.app`` the attribute is the app)

log = logging.getLogger("lava-dispatch.server")
logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines on every first use say nothing here

app = Celery("lava-dispatch-server", broker=lab_app_module.target.celery_url,
             backend=lab_app_module.target.celery_url, set_as_current=False)
app.conf.update({key: value for key, value in lab_app_module.app.conf.changes.items()
                 if key not in ("broker_url", "result_backend", "include", "task_routes", "task_default_queue",
                                "worker_disable_prefetch", "worker_prefetch_multiplier", "worker_concurrency")})
app.conf.update(task_default_queue=QUEUE, task_routes={"server.*": {"queue": QUEUE}},
                worker_prefetch_multiplier=4, task_ignore_result=True)
if lab_app_module.target.ssl:
    app.conf.broker_use_ssl = dict(lab_app_module.target.ssl)
    app.conf.redis_backend_use_ssl = dict(lab_app_module.target.ssl)

_shared: dict[str, Any] = {}
_lock = threading.Lock()


def redis_client() -> Any:
    with _lock:
        if "r" not in _shared:
            from tasks.config import redis_client as make

            _shared["r"] = make()
        return _shared["r"]


def engine() -> Any:
    from server.db import get_engine

    return get_engine()


@app.task(name=ARCHIVE_TASK, bind=True, max_retries=None)  # type: ignore[untyped-decorator]  # Celery has no types
def archive_job(self: Any, job_id: Any) -> str:
    """Move an ended job into the archive, then send its notify callbacks (each its own task)."""
    from redis.exceptions import RedisError
    from sqlalchemy.exc import OperationalError

    if not isinstance(job_id, str):
        log.error("server.archive_job: %r is not a job id", job_id)
        return "refused"
    r = redis_client()
    try:
        outcome = archiver.archive(r, job_id, engine())
        if outcome != "archived":
            log.info("job %s: not archived (%s)", job_id, outcome)
            return outcome
        indexes = archiver.callbacks_to_send(r, job_id, engine())
    except (OperationalError, RedisError) as exc:  # the database or Redis away: later, not never
        raise self.retry(countdown=min(60, 2 ** min(self.request.retries, 6)), exc=exc) from exc
    log.info("job %s archived", job_id)
    for index in indexes:
        notify_job.apply_async((job_id, index), queue=QUEUE)
    return outcome


@app.task(name=NOTIFY_TASK, bind=True, max_retries=None)  # type: ignore[untyped-decorator]  # Celery has no types
def notify_job(self: Any, job_id: str, index: int) -> str:
    """Send callback ``index`` of an archived job; tried again with growing delays, then given up (logged)."""
    from server import archive, formats, notify
    from server.auth import remote_secret
    from server.jobs import archived_result, from_archive

    row = archive.get_job(job_id, engine=engine())
    block = notify.job_notify(row.definition) if row is not None else None
    if row is None or block is None or not 0 <= index < len(block.all_callbacks()):
        log.error("job %s: no callback %s to send", job_id, index)
        return "missing"
    job = from_archive(row)
    callback = block.all_callbacks()[index]
    secret = remote_secret(job.submitter or "", callback.token, engine=engine()) if callback.token else None
    if callback.token and secret is None:
        log.warning("job %s: callback %s: %s has no remote token %r any more: sent without it", job_id,
                    callback.url, job.submitter, callback.token)
    log_text = cases = None
    if callback.method == "POST" and callback.dataset in ("logs", "all"):
        log_text = "".join(line + "\n" for line in archive.iter_lines(job_id, engine=engine()))
    if callback.method == "POST" and callback.dataset in ("results", "all"):
        results = [archived_result(r) for r in archive.get_results(job_id, engine=engine())]
        cases = formats.testcases(job.id, results, job.end_time)
    try:
        status = notify.send(callback, job, secret, log_text, cases)
    except PermissionError as exc:
        log.error("job %s: %s", job_id, exc)
        return "refused"
    except notify.CallbackFailed as exc:
        if self.request.retries < notify.retries():
            delay = notify.retry_delay(self.request.retries)
            log.warning("job %s: %s; trying again in %g s", job_id, exc, delay)
            raise self.retry(countdown=delay, exc=exc) from exc
        log.error("job %s: %s; given up after %d tries (the job's result is unchanged)", job_id, exc,
                  self.request.retries + 1)
        return "failed"
    log.info("job %s: callback %s answered HTTP %s", job_id, notify.substitute(callback.url, job), status)
    return str(status)


__all__ = ["app", "archive_job", "notify_job"]
