"""The API's refusals, each with the status LAVA gives it (an XML-RPC fault code, an HTTP status)."""

from __future__ import annotations


class ApiError(Exception):
    """A refusal with LAVA's code: 400 bad request, 401 not authenticated, 403 not allowed, 404 not found."""

    code = 400

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.problems = problems or []


class BadRequest(ApiError):
    code = 400


class Unauthorized(ApiError):
    code = 401


class Forbidden(ApiError):
    code = 403


class NotFound(ApiError, LookupError):
    code = 404


class Unavailable(ApiError):
    """The lab's Redis or the archive database cannot be reached: try again later (HTTP 503)."""

    code = 503


def unavailable_reason(exc: BaseException) -> str | None:
    """Why ``exc`` means the server cannot answer now (Redis or the database away), or None."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from sqlalchemy.exc import OperationalError

    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return "the lab's Redis cannot be reached now; try again later"
    if isinstance(exc, OperationalError):
        return "the lab's archive database cannot be used now; try again later"
    return None


__all__ = ["ApiError", "BadRequest", "Unauthorized", "Forbidden", "NotFound", "Unavailable", "unavailable_reason"]
