"""The Celery application of the lab.

Settings and why:

- JSON only (``task_serializer``, ``result_serializer``, ``accept_content``,
  ``event_serializer``): nothing in the broker can make a worker unpickle code.
- Early acknowledgement (``task_acks_late=False``): on the Redis broker an
  unacknowledged message comes back after ``visibility_timeout`` and after a
  connection blip, so a late-acked 20-minute boot could run on two workers.
  A lost step is our problem, not the broker's: every step claims itself in
  the job record (compare-and-set) and the worker's watchdog resends a chain
  whose next message went missing.
- ``worker_disable_prefetch`` plus ``worker_prefetch_multiplier=1``: a board
  worker takes a message only when it is free to run it; nothing waits in a
  busy worker's memory.
- The same ``visibility_timeout`` in every process (broker and result
  backend), as kombu requires.
- Task events on (``worker_send_task_events``, ``task_send_sent_event``) so
  Flower shows every start, action and finalize of every job.
- Results are ignored except for ``tasks.submit`` (its result is the job id):
  the lab's state lives in the job records, not in ``celery-task-meta-*``.
- The broker connection is retried for ever (a worker outlives a Redis
  restart); publishing the next step of a chain retries for about a minute.
- Behind Redis Sentinel (``redis+sentinel://``) the broker and the result
  backend are kombu's and Celery's ``sentinel://`` with the master's name in
  their transport options; both ask a sentinel for the primary on every
  reconnect, so a failover is one more reconnect.

``celery -A tasks ...`` finds this app through ``tasks.__getattr__``.
"""

from __future__ import annotations

from celery import Celery

from tasks import config
from tasks.keys import SUBMIT_QUEUE

VISIBILITY_TIMEOUT = 3600

try:
    target = config.redis_target()
except config.ConfigError as exc:  # `celery -A tasks ...` says why in one line, not with a traceback
    raise SystemExit(f"lava-dispatch: {exc}") from None

app = Celery("lava-dispatch", broker=target.celery_url, backend=target.celery_url, include=["tasks.celery_tasks"])

transport_options = {
    "visibility_timeout": VISIBILITY_TIMEOUT,
    "socket_timeout": 30,
    "socket_connect_timeout": 5,
    "socket_keepalive": True,
    "health_check_interval": 10,
    "client_name": "lava-dispatch-celery",
    **target.transport_options(),
}

app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    event_serializer="json",
    task_acks_late=False,
    task_reject_on_worker_lost=False,
    task_acks_on_failure_or_timeout=True,
    worker_prefetch_multiplier=1,
    worker_disable_prefetch=True,
    worker_concurrency=1,
    worker_send_task_events=True,
    task_send_sent_event=True,
    task_track_started=True,
    task_ignore_result=True,
    result_expires=86400,
    result_extended=False,
    broker_transport_options=transport_options,
    result_backend_transport_options=dict(transport_options),
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    broker_channel_error_retry=True,
    result_backend_always_retry=True,
    result_backend_max_retries=20,
    redis_backend_health_check_interval=10,
    redis_socket_keepalive=True,
    task_publish_retry=True,
    task_publish_retry_policy={"max_retries": 60, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
    worker_cancel_long_running_tasks_on_connection_loss=False,
    task_routes={"tasks.submit": {"queue": SUBMIT_QUEUE}},
    task_default_queue=SUBMIT_QUEUE,
    task_create_missing_queues=True,
    worker_hijack_root_logger=True,
    worker_redirect_stdouts=False,
    enable_utc=True,
    timezone="UTC",
)

if target.ssl:
    app.conf.broker_use_ssl = dict(target.ssl)
    app.conf.redis_backend_use_ssl = dict(target.ssl)

_apps: dict[str, Celery] = {target.url: app}


def app_for(url: str | None = None) -> Celery:
    """The app for another lab database (a process that talks to several labs, such as the tests)."""
    if url is None:
        return app
    wanted = config.redis_target(url)
    if wanted.url not in _apps:
        other = Celery("lava-dispatch", broker=wanted.celery_url, backend=wanted.celery_url,
                       include=["tasks.celery_tasks"], set_as_current=False)
        other.conf.update({key: value for key, value in app.conf.changes.items()
                           if key not in ("broker_url", "result_backend")})
        options = {k: v for k, v in transport_options.items() if k not in ("master_name", "sentinel_kwargs")}
        options.update(wanted.transport_options())
        other.conf.broker_transport_options = options
        other.conf.result_backend_transport_options = dict(options)
        other.conf.broker_use_ssl = dict(wanted.ssl) if wanted.ssl else None
        other.conf.redis_backend_use_ssl = dict(wanted.ssl) if wanted.ssl else None
        _apps[wanted.url] = other
    return _apps[wanted.url]


__all__ = ["app", "app_for"]
