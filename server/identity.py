"""Who calls the API, and what they may do.

lavacli sends ``http://USER:TOKEN@host/RPC2`` (HTTP basic), LAVA's REST
clients ``Authorization: Token <secret>``; both are checked against the
lab's tokens (``server.auth``). No credentials is the anonymous caller,
who may read public jobs; wrong credentials are refused (401), never taken
as anonymous.

The rules: submitting needs a user; a user cancels and resubmits their own
jobs, an admin any job; device health changes need an admin; a personal
job's log, results and definition are its submitter's and the admins'.
Jobs submitted outside the server (``lava-dispatch submit``, ``celery
call``: the broker credentials are the lab admin's) have a ``user@host``
submitter, so only admins manage them through the API.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from sqlalchemy import Engine

from server.errors import Forbidden, Unauthorized
from server.jobs import JobInfo


@dataclass(frozen=True)
class Caller:
    user: str | None = None
    admin: bool = False

    @property
    def authenticated(self) -> bool:
        return self.user is not None

    def __str__(self) -> str:
        return self.user or "anonymous"


ANONYMOUS = Caller()


class InvalidCredentials(Unauthorized):
    """Credentials were given and are wrong (HTTP 401, whatever the method)."""


def from_basic(header: str | None, engine: Engine | None = None) -> Caller:
    """The caller of an ``Authorization: Basic`` header (lavacli's ``USER:TOKEN@``); none: anonymous."""
    if not header:
        return ANONYMOUS
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise InvalidCredentials("Unsupported HTTP_AUTHORIZATION header, only Basic scheme is supported")
    try:
        user, _, secret = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidCredentials("Invalid token") from None
    from server.auth import authenticate

    found = authenticate(user, secret, engine=engine) if user and secret else None
    if found is None:
        raise InvalidCredentials("Invalid token")
    return Caller(found.username, found.is_admin)


def from_authorization(header: str | None, engine: Engine | None = None) -> Caller:
    """The caller of a REST request: ``Token <secret>`` (LAVA's), or HTTP basic; none: anonymous."""
    if not header:
        return ANONYMOUS
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        return from_basic(header, engine)
    if scheme.lower() != "token" or not value.strip():
        raise InvalidCredentials("Invalid token header. Use 'Token <secret>'.")
    from server.auth import user_for_token

    found = user_for_token(value.strip(), engine=engine)
    if found is None:
        raise InvalidCredentials("Invalid token.")
    return Caller(found.username, found.is_admin)


def require_user(caller: Caller) -> str:
    if caller.user is None:
        raise Unauthorized("Authentication with user and token required for this API.")
    return caller.user


def require_admin(caller: Caller, what: str) -> None:
    require_user(caller)
    if not caller.admin:
        raise Forbidden(f"User '{caller}' needs admin permission to {what}.")


def may_see_everything(caller: Caller, job: JobInfo) -> bool:
    """The job's log, results and definition: public, or the caller's own, or the caller is an admin."""
    return job.visibility == "public" or caller.admin or (caller.user is not None and caller.user == job.submitter)


def require_private_view(caller: Caller, job: JobInfo) -> None:
    if not may_see_everything(caller, job):
        raise Forbidden(f"Job '{job.id}' is personal: its log and results are its submitter's "
                        f"(user '{caller}' may not see them).")


def require_owner(caller: Caller, job: JobInfo, what: str) -> None:
    """Cancel, resubmit: the job's submitter or an admin."""
    require_user(caller)
    if not (caller.admin or caller.user == job.submitter):
        raise Forbidden(f"Permission denied: user '{caller}' may {what} only their own jobs "
                        f"(job {job.id} is {job.submitter or 'the lab'}'s).")


__all__ = ["Caller", "ANONYMOUS", "InvalidCredentials", "from_basic", "from_authorization", "require_user",
           "require_admin", "may_see_everything", "require_private_view", "require_owner"]
