"""Notify callbacks, as LAVA sends them: checked at submit, sent once the job is archived.

The payload is LAVA's job data: ``id``, ``status`` (LAVA's legacy number:
2 Complete, 3 Incomplete, 4 Canceled, which KernelCI reads), ``status_string``,
``state``/``health`` (LAVA's numbers) with their ``*_string`` names, the
times, ``submitter_username``, ``description``, ``actual_device_id``,
``definition``, ``metadata`` (the job's), ``health_check``, ``priority``,
``failure_comment``; with ``dataset: logs`` or ``all`` also ``log`` (the whole
output.yaml text), with ``results`` or ``all`` also ``results`` (``{suite: YAML
of its test cases}``, the ``lava`` suite included). ``method: GET`` sends no
body. ``content-type: json`` posts JSON; ``urlencoded`` (LAVA's default) posts
a form, its mapping values (metadata, results) as JSON text.

``token: NAME`` is the name of one of the submitter's remote tokens; its
secret goes, as it is, in the ``header`` (default ``Authorization``), as
KernelCI expects. The URL may name job fields: ``{ID}``, ``{STATUS}``,
``{STATUS_STRING}``, ``{STATE}``, ``{HEALTH}``, ``{DESCRIPTION}``, ``{SUBMITTER}``,
``{DEVICE_TYPE}``.

Callbacks may reach any host (127.0.0.1 included) unless
``LAVA_DISPATCH_NOTIFY_ALLOW`` lists the allowed host names, comma
separated, shell wildcards allowed (``ci.example.com,*.kernelci.org``). A
callback waits ``LAVA_DISPATCH_NOTIFY_TIMEOUT`` seconds (30) for an answer;
a failed one is tried again (``LAVA_DISPATCH_NOTIFY_RETRIES``, 5 more times,
after 10 s, 20 s, 40 s, ...: ``LAVA_DISPATCH_NOTIFY_RETRY_SECONDS``) and then
given up with a log line. A callback never changes the job's result.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
from typing import Any
from urllib.parse import urlsplit

import yaml

from pipeline.notify import Notify, NotifyCallback
from server import formats
from server.jobs import JobInfo

log = logging.getLogger("lava-dispatch.notify")
URL_FIELD = re.compile(r"{\s*([A-Z_-]*)\s*}")


class CallbackFailed(Exception):
    """The callback could not be delivered (worth trying again)."""


def allowed_hosts() -> list[str] | None:
    """``LAVA_DISPATCH_NOTIFY_ALLOW`` as patterns; None: every host is allowed."""
    value = os.environ.get("LAVA_DISPATCH_NOTIFY_ALLOW", "").strip()
    return [p.strip().lower() for p in value.split(",") if p.strip()] if value else None


def host_allowed(url: str) -> bool:
    patterns = allowed_hosts()
    if patterns is None:
        return True
    host = (urlsplit(url).hostname or "").lower()
    return any(fnmatch.fnmatchcase(host, pattern) for pattern in patterns)


def _number(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    try:
        return float(value) if value else default
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a number") from None


def timeout() -> float:
    return _number("LAVA_DISPATCH_NOTIFY_TIMEOUT", 30.0)


def retries() -> int:
    return int(_number("LAVA_DISPATCH_NOTIFY_RETRIES", 5))


def retry_delay(attempt: int) -> float:
    return float(_number("LAVA_DISPATCH_NOTIFY_RETRY_SECONDS", 10.0) * 2.0 ** attempt)


def job_notify(definition: str) -> Notify | None:
    """The job's notify block (None: none, or a definition that cannot be read any more)."""
    try:
        data = yaml.load(definition or "", Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        raw = data.get("notify") if isinstance(data, dict) else None
        return Notify.model_validate(raw) if isinstance(raw, dict) else None
    except (yaml.YAMLError, ValueError):
        return None


def submit_problems(notify: Notify | None, user: str, remote_secret: Any) -> list[str]:
    """What the server refuses in a job's notify block, one line each (``remote_secret(user, name)``)."""
    if notify is None:
        return []
    problems = []
    if notify.callback and notify.callbacks:
        problems.append("notify: give callback or callbacks, not both")
    if not notify.all_callbacks():
        problems.append("notify: without callbacks LAVA would email the submitter; this lab sends no email: "
                        "add a callback")
    places = ["notify.callback"] * bool(notify.callback) + [f"notify.callbacks[{i}]"
                                                             for i in range(len(notify.callbacks or []))]
    for place, callback in zip(places, notify.all_callbacks(), strict=True):
        if not host_allowed(callback.url):
            problems.append(f"{place}.url: the host of {callback.url!r} is not one LAVA_DISPATCH_NOTIFY_ALLOW "
                            f"allows ({', '.join(allowed_hosts() or [])})")
        if callback.token and remote_secret(user, callback.token) is None:
            problems.append(f"{place}.token: user {user} has no remote token named {callback.token!r} "
                            f"(the lab admin adds one: lava-dispatch tokens add-remote {user} NAME)")
    return problems


def substitute(url: str, job: JobInfo) -> str:
    status, status_string = formats.legacy_status(job)
    values = {"ID": job.id, "STATUS": status, "STATUS_STRING": status_string.lower(), "STATE": job.state,
              "HEALTH": job.health, "DESCRIPTION": job.description, "SUBMITTER": job.submitter or "",
              "DEVICE_TYPE": job.device_type or ""}
    return URL_FIELD.sub(lambda m: str(values.get(m.group(1), m.group(0))), url)


def payload(job: JobInfo, dataset: str, log_text: str | None, cases: list[dict[str, Any]] | None) -> dict[str, Any]:
    """LAVA's job data for a callback (``log_text``/``cases`` as the dataset asks)."""
    status, status_string = formats.legacy_status(job)
    try:
        data = yaml.load(job.definition or "", Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        data = None
    metadata = data.get("metadata") if isinstance(data, dict) and isinstance(data.get("metadata"), dict) else {}
    body: dict[str, Any] = {
        "id": formats.shown_id(job.id), "status": status, "status_string": status_string.lower(),
        "state": formats.STATE_NUMBERS.get(job.state, 0), "state_string": job.state,
        "health": formats.HEALTH_NUMBERS.get(job.health, 0), "health_string": job.health,
        "submit_time": str(job.submit_time), "start_time": str(job.start_time), "end_time": str(job.end_time),
        "submitter_username": job.submitter, "submitter_email": "", "failure_comment": job.failure_comment,
        "priority": job.priority, "description": job.description, "actual_device_id": job.device,
        "definition": job.definition, "metadata": metadata, "health_check": False}
    if dataset in ("logs", "all"):
        body["log"] = log_text or ""
    if dataset in ("results", "all"):
        body["results"] = formats.suites_yaml(cases or [])
    return body


def form(body: dict[str, Any]) -> dict[str, str]:
    """A payload as an urlencoded form: mappings and lists as JSON text."""
    return {key: json.dumps(value) if isinstance(value, (dict, list)) else "" if value is None else str(value)
            for key, value in body.items()}


def send(callback: NotifyCallback, job: JobInfo, secret: str | None, log_text: str | None,
         cases: list[dict[str, Any]] | None) -> int:
    """Sends one callback; returns the HTTP status, or raises CallbackFailed (worth another try)."""
    import requests

    url = substitute(callback.url, job)
    if not host_allowed(url):
        raise PermissionError(f"callback {url}: its host is not allowed by LAVA_DISPATCH_NOTIFY_ALLOW")
    headers = {"User-Agent": "lava-dispatch"}
    if secret is not None:
        headers[callback.header or "Authorization"] = secret
    try:
        if callback.method == "GET":
            response = requests.get(url, headers=headers, timeout=timeout())
        else:
            body = payload(job, callback.dataset, log_text, cases)
            if callback.content_type == "json":
                response = requests.post(url, json=body, headers=headers, timeout=timeout())
            else:
                response = requests.post(url, data=form(body), headers=headers, timeout=timeout())
    except requests.RequestException as exc:
        raise CallbackFailed(f"callback {url}: {type(exc).__name__}: {exc}") from None
    if response.status_code >= 500 or response.status_code in (408, 429):
        raise CallbackFailed(f"callback {url}: HTTP {response.status_code}")
    if response.status_code >= 400:
        log.warning("job %s: callback %s refused it: HTTP %s %s", job.id, url, response.status_code,
                    response.text[:200])
    return response.status_code


__all__ = ["submit_problems", "job_notify", "payload", "send", "substitute", "host_allowed", "CallbackFailed",
           "retries", "retry_delay", "timeout", "form"]
