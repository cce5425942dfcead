"""The job's ``notify`` block, as LAVA's job schema has it, and what this lab does with it.

A lab sends the callbacks of a finished job (``callback`` or ``callbacks``:
``url``, ``method`` GET/POST, ``dataset`` minimal/logs/results/all,
``content-type`` json/urlencoded, ``token``: the name of one of the
submitter's remote tokens, whose secret goes in the ``header``, default
``Authorization``). The criteria are the end of the job: ``status``
``finished`` (any end), ``complete``, ``incomplete``, ``canceled`` (and
``canceling``, older LAVA's name for it: sent once the cancel has ended the
job).

What this lab cannot do is refused with the reason, never accepted and
silently dropped: email and IRC ``recipients`` (and ``compare``, which only
shapes emails), ``dependency_query``, regression/progression ``type``, and
``running``/``all`` (a notification when the job starts). ``verbosity`` only
shapes emails and is accepted.

``lava-dispatch run`` ignores the block; the lab's server checks at submit
what only it knows (the token names, the allowed callback hosts, ``callback``
and ``callbacks`` not both given).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pipeline.fields import Field
from pipeline.schema import BeforeValidator, Model

CALLBACK_METHODS = ("GET", "POST")
DATASETS = ("minimal", "logs", "results", "all")
CONTENT_TYPES = ("json", "urlencoded")
END_STATUSES = ("finished", "complete", "incomplete", "canceled", "canceling")
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")  # an HTTP field name (RFC 9110 token)


def _callback_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a URL string, got {type(value).__name__}")
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r}: a callback URL is http:// or https:// with a host")
    if any(c in value for c in "\r\n\t "):
        raise ValueError(f"{value!r}: spaces and line breaks are not allowed in a callback URL")
    return value


def _header_name(value: Any) -> str:
    if not isinstance(value, str) or not HEADER_NAME.match(value):
        raise ValueError(f"{value!r} is not an HTTP header name")
    return value


def _status(value: Any) -> str:
    if value in ("running", "all"):
        raise ValueError(f"status {value!r}: this lab notifies when a job ends, not when it starts: "
                         f"use one of {', '.join(END_STATUSES)}")
    if value not in END_STATUSES:
        raise ValueError(f"{value!r} is not one of {', '.join(END_STATUSES)}")
    return str(value)


def _refused(reason: str) -> Any:
    def refuse(value: Any) -> Any:
        raise ValueError(reason)

    return BeforeValidator(refuse)


CallbackUrl = Annotated[str, BeforeValidator(_callback_url)]
HeaderName = Annotated[str, BeforeValidator(_header_name)]
EndStatus = Annotated[str, BeforeValidator(_status, lambda own: {"enum": list(END_STATUSES)})]


class NotifyCallback(Model, extra="forbid"):
    url: CallbackUrl
    method: Literal["GET", "POST"] = "GET"
    token: str | None = Field(None, min_length=1, max_length=200)
    header: HeaderName | None = None
    dataset: Literal["minimal", "logs", "results", "all"] = "minimal"
    content_type: Literal["json", "urlencoded"] = Field("urlencoded", alias="content-type")


class NotifyCriteria(Model, extra="forbid"):
    status: EndStatus
    dependency_query: Annotated[Any, _refused(
        "dependency_query is not supported: each job's callback is sent when that job ends")] = None
    type: Annotated[Any, _refused(
        "regression/progression notifications are not supported: the callback is sent at the end of every "
        "job the status matches")] = None


class Notify(Model, extra="forbid"):
    criteria: NotifyCriteria
    verbosity: Literal["verbose", "quiet", "status-only"] | None = None
    recipients: Annotated[Any, _refused(
        "email and IRC notifications are not sent by this lab: use callbacks (a URL the lab calls when the "
        "job ends)")] = None
    compare: Annotated[Any, _refused(
        "compare only shapes email notifications, which this lab does not send")] = None
    callback: NotifyCallback | None = None
    callbacks: list[NotifyCallback] | None = None

    def all_callbacks(self) -> list[NotifyCallback]:
        """``callback`` and ``callbacks`` together, in order."""
        return ([self.callback] if self.callback else []) + list(self.callbacks or [])

    def matches(self, health: str) -> bool:
        """Whether the criteria ask for a notification of a job that ended with LAVA's ``health``."""
        status = self.criteria.status
        if status == "finished":
            return True
        return {"complete": "Complete", "incomplete": "Incomplete", "canceled": "Canceled",
                "canceling": "Canceled"}[status] == health


__all__ = ["Notify", "NotifyCallback", "NotifyCriteria", "CALLBACK_METHODS", "DATASETS", "CONTENT_TYPES",
           "END_STATUSES"]
