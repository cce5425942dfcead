"""What a Celery message may carry: the arguments of ``tasks.submit`` and of a job's chain tasks.

Anything can arrive in a message (``celery call`` takes any JSON), so every
argument is checked for its type before it is used; nothing is coerced
(``"no"`` is not false, ``1.5`` is not a priority). A ``tasks.submit`` that
is refused still leaves a record saying why (``record_rejection``).
"""

from __future__ import annotations

import time
from typing import Any

from tasks.ids import is_job_id
from tasks.scheduler import PREFIX, Lab, SubmitError, job_key, priority_value

SUBMIT_PARAMETERS = ("definition", "priority", "queue_anyway")
CLIENT_REF_LENGTH = 200  # a correlation handle, stored only: long enough for any task id


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def submit_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, int | None, bool]:
    """(definition, priority or None, queue_anyway) from a ``tasks.submit`` message, or SubmitError."""
    if len(args) > len(SUBMIT_PARAMETERS):
        raise SubmitError(f"tasks.submit takes at most {len(SUBMIT_PARAMETERS)} arguments "
                          f"({', '.join(SUBMIT_PARAMETERS)}), got {len(args)}")
    given = dict(zip(SUBMIT_PARAMETERS, args))
    twice = sorted(set(given) & set(kwargs))
    unknown = sorted(set(kwargs) - set(SUBMIT_PARAMETERS), key=str)
    if twice:
        raise SubmitError(f"tasks.submit got {', '.join(twice)} twice (as an argument and as a keyword)")
    if unknown:
        raise SubmitError(f"tasks.submit got unknown keyword argument(s) {', '.join(map(repr, unknown))}; "
                          f"it takes {', '.join(SUBMIT_PARAMETERS)}")
    given.update(kwargs)
    if "definition" not in given:
        raise SubmitError("tasks.submit needs the job's YAML text (its first argument, `definition`)")
    definition = given["definition"]
    if not isinstance(definition, str):
        raise SubmitError(f"definition must be the job's YAML text (a string), got {_shown(definition)}")
    queue_anyway = given.get("queue_anyway", False)
    if not isinstance(queue_anyway, bool):
        raise SubmitError(f"queue_anyway must be true or false, got {_shown(queue_anyway)}")
    return definition, priority_value(given.get("priority")), queue_anyway


def client_ref_of(task_id: Any) -> str:
    """The caller's task id as the record keeps it (text, bounded); never a key or a path."""
    return str(task_id or "")[:CLIENT_REF_LENGTH]


def record_rejection(lab: Lab, job_id: str, definition: Any, message: str, client_ref: str = "") -> None:
    """A job refused by ``tasks.submit`` still gets a record, so ``status <id>`` says why."""
    key = job_key(job_id)
    if lab.r.exists(key):
        return
    now = int(time.time() * 1000)
    pipe = lab.r.pipeline()
    pipe.hset(key, mapping={"id": job_id, "name": "", "state": "Incomplete", "submitted": now, "ended": now,
                            "error_type": "Job", "error": message,
                            "definition": definition if isinstance(definition, str) else "",
                            "submitter": "celery", "client_ref": client_ref})
    pipe.expire(key, lab.keep_s)
    pipe.zadd(f"{PREFIX}jobs", {job_id: now})  # listed by `lava-dispatch status` like any job
    pipe.execute()


def chain_arguments_problem(job_id: Any, board: Any, *numbers: Any) -> str | None:
    """Why the arguments of a chain task (start, action, finalize) cannot be used; None if they can."""
    if not is_job_id(job_id):
        return f"job id {_shown(job_id)} is not one of the lab's"
    if not isinstance(board, str):
        return f"board {_shown(board)} is not a board name"
    bad = [n for n in numbers if isinstance(n, bool) or not isinstance(n, int)]
    if bad:
        return f"{_shown(bad[0])} is not a step or attempt number"
    return None


__all__ = ["submit_arguments", "client_ref_of", "record_rejection", "chain_arguments_problem"]
