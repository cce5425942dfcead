"""A model module of its own for tests/test_schema_defs.py: ``Parameters`` as a deploy method names it."""

from __future__ import annotations

from pipeline.schema import Model


class Parameters(Model):
    """Where the image goes."""

    to: str
    image: str | None = None


class Image(Model):
    """A model of a name no other module uses."""

    url: str
