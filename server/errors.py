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


__all__ = ["ApiError", "BadRequest", "Unauthorized", "Forbidden", "NotFound"]
