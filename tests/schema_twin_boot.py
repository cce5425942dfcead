"""A model module of its own for tests/test_schema_rules.py: a base class naming a type of this module."""

from __future__ import annotations

from typing import Annotated, Any

from pipeline.schema import BeforeValidator, Model


def _seconds(value: Any) -> Any:
    return int(value[:-1]) if isinstance(value, str) and value.endswith("s") else value


Seconds = Annotated[int, BeforeValidator(_seconds)]  # a name only this module has


class Boot(Model):
    """A base class whose annotation names this module's Seconds (tests subclass it elsewhere)."""

    timeout: Seconds = 60
