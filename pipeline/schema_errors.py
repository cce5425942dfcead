"""How pipeline.schema words a problem: the helpers that add one to a ValidationError (pipeline.errors).

Each problem is a dict with ``loc`` (the place: keys and list indexes),
``msg`` and ``type``; a value is quoted briefly, with YAML's words (null,
true, a mapping), so that no message grows with the input.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import ValidationError

__all__ = ["ValidationError", "add", "got", "short", "type_error"]


def add(errors: list[dict[str, Any]], loc: tuple[Any, ...], msg: str, kind: str = "value_error") -> None:
    errors.append({"loc": loc, "msg": msg, "type": kind})


def short(value: Any) -> str:
    """repr, at most 40 characters; an integer too long to print is named by its size."""
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 200 else f"<{value.bit_length()} bits>"
    return text if len(text) <= 40 else text[:37] + "..."


def got(value: Any) -> str:
    """How a wrong value is named in a message, with YAML's words."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, (str, int, float)):
        return f"{type(value).__name__} {short(value)}"
    return _CONTAINERS.get(type(value), type(value).__name__)


_CONTAINERS: dict[type, str] = {dict: "a mapping", list: "a list"}


def type_error(errors: list[dict[str, Any]], loc: tuple[Any, ...], what: str, value: Any) -> None:
    add(errors, loc, f"expected {what}, got {got(value)}", "type_error")
