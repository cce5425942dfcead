"""The lab: board workers, jobs as Celery chains, Redis as the source of truth.

``celery -A tasks worker|call|flower ...`` finds the Celery app here: Celery
looks for the attribute ``app`` (or ``celery``) of this package, which is
resolved lazily so that ``import tasks.cli`` (``lava-dispatch validate``,
``run``) never imports Celery.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # After `import tasks.app` the attribute `app` is the submodule: Celery's
    # app discovery then falls back to `celery`, which is always the app.
    if name in ("app", "celery"):
        from tasks.app import app as celery_app

        return celery_app
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
