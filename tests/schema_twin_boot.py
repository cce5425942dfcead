"""A model module of its own for the schema tests.

``Parameters`` as a boot method names it: tests/schema_twin_deploy.py has a
``Parameters`` too, with other fields, as two action modules of pipeline/
may each have theirs (tests/test_schema_defs.py). ``Boot`` is a base class
naming a type only this module has (tests/test_schema_rules.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from pipeline.schema import BeforeValidator, Field, Model


def _seconds(value: Any) -> Any:
    return int(value[:-1]) if isinstance(value, str) and value.endswith("s") else value


Seconds = Annotated[int, BeforeValidator(_seconds)]  # a name only this module has


class Parameters(Model):
    """How the board boots."""

    method: str
    wait: Seconds = Field(5, ge=0)
    retry: Parameters | None = None  # refers to itself


class Boot(Model):
    """A base class whose annotation names this module's Seconds (tests subclass it elsewhere)."""

    timeout: Seconds = 60
