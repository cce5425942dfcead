"""The Celery tasks: ``tasks.submit``, and a job's chain ``tasks.start`` -> ``tasks.action`` (one per
top-level action) -> ``tasks.finalize``.

Each is thin: it checks its arguments, finds this worker's board runtime
(``tasks.board.current``) and runs the step of the job's session
(``tasks.session``), which claims the step, never raises from an action, and
always finalizes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from tasks.app import app
from tasks.board import BoardRuntime, current
from tasks.scheduler import Lab, SubmitError
from tasks.session import Outcome, run_action
from tasks.session import finalize as finalize_step
from tasks.session import start as start_step
from tasks.submission import chain_arguments_problem, client_ref_of, record_rejection, submit_arguments

log = logging.getLogger("lava-dispatch.jobs")

CONTINUING = ("ran", "failed", "skipped")  # outcomes after which the chain's next task is sent
F = TypeVar("F", bound=Callable[..., Any])


def task(**options: Any) -> Callable[[F], F]:
    """``app.task``, typed (Celery has no type hints): the function becomes a Celery task of this app."""
    decorator: Callable[[F], F] = app.task(**options)
    return decorator


class JobRejected(Exception):
    """``tasks.submit`` refused the job (the reason is the message; the job's record says it too)."""


_LAB: Lab | None = None


def process_lab() -> Lab:
    global _LAB
    rt = current()
    if rt is not None:
        return rt.lab
    if _LAB is None:
        _LAB = Lab()
    return _LAB


@task(name="tasks.submit", bind=True, ignore_result=False)
def submit(self: Any, *args: Any, **kwargs: Any) -> str:
    """Submit a job exactly as ``lava-dispatch submit`` does; the result is the job id the lab assigned.

    Arguments: ``definition`` (the job's YAML text), ``priority`` (high,
    medium, low or 0-100), ``queue_anyway`` (true/false). ``celery -A tasks
    call tasks.submit --args '["<job yaml>"]'`` prints the task id; ``celery
    -A tasks result <task id>`` then prints the job id. The task id is kept
    in the record as ``client_ref`` only: it never becomes a key or a path.
    Wrong arguments are refused, never coerced, and leave an Incomplete
    record saying why (they are checked here, not by Celery, which would
    fail the task without a record).
    """
    from pipeline.errors import ProblemList

    lab = process_lab()
    if self.request.id:
        earlier = self.AsyncResult(self.request.id)  # a message delivered twice gets the first answer back
        if earlier.state == "SUCCESS" and isinstance(earlier.result, str):
            return earlier.result
    client_ref = client_ref_of(self.request.id)
    job_id = lab.new_id()
    definition = args[0] if args else kwargs.get("definition")
    try:
        definition, priority, queue_anyway = submit_arguments(args, kwargs)
        lab.submit(definition, priority=priority, queue_anyway=queue_anyway, job_id=job_id, client_ref=client_ref,
                   submitter=f"celery ({self.request.hostname or 'worker'})")
    except (ProblemList, SubmitError) as exc:
        problems = exc.problems if isinstance(exc, ProblemList) else [str(exc)]
        message = "the job is rejected: " + "; ".join(problems)
        record_rejection(lab, job_id, definition, message, client_ref)
        raise JobRejected(f"job {job_id}: {message}") from None
    return job_id


# ---------------------------------------------------------------- the chain


def _board_runtime(board: str, job_id: str, *numbers: int) -> BoardRuntime | None:
    """This worker's runtime if the task is for its board and its arguments can be used, else None."""
    problem = chain_arguments_problem(job_id, board, *numbers)
    if problem:
        log.error("a chain task with unusable arguments was ignored: %s", problem)
        return None
    rt = current()
    if rt is None or rt.board != board:
        log.error("a task for board %s reached a worker that does not serve it (%s): ignored", board,
                  rt.board if rt else "not a board worker")
        return None
    return rt


def _end_chain_if_stopping(task: Any, rt: BoardRuntime, outcome: Outcome) -> Outcome:
    """A stopping worker finalizes its job itself (``shutdown``): the rest of the chain is not sent.

    Sending it would be retried for a minute while Redis is down, and the
    worker could not obey SIGTERM meanwhile.
    """
    if rt.stopping and outcome.get("outcome") in CONTINUING:
        task.request.chain = None
        task.request.callbacks = None
    return outcome


@task(name="tasks.start", bind=True)
def start(self: Any, job_id: str, board: str, attempt: int, nactions: int) -> Outcome:
    t0 = time.time()
    rt = _board_runtime(board, job_id, attempt, nactions)
    if rt is None:
        return {"outcome": "ignored"}
    return _end_chain_if_stopping(self, rt, start_step(rt, job_id, attempt, nactions, self.request.id, t0))


@task(name="tasks.action", bind=True)
def action(self: Any, job_id: str, board: str, attempt: int, index: int, name: str) -> Outcome:
    """Run one top-level action; never raises (a failure is recorded, the chain goes on to finalize)."""
    t0 = time.time()
    rt = _board_runtime(board, job_id, attempt, index)
    if rt is None:
        return {"outcome": "ignored"}
    return _end_chain_if_stopping(self, rt, run_action(rt, job_id, attempt, index, name, self.request.id, t0))


@task(name="tasks.finalize", bind=True)
def finalize(self: Any, job_id: str, board: str, attempt: int, nactions: int) -> Outcome:
    """Always runs last: power off, stop helpers, store state and results, free the board, take the next job."""
    t0 = time.time()
    rt = _board_runtime(board, job_id, attempt, nactions)
    if rt is None:
        return {"outcome": "ignored"}
    return finalize_step(rt, job_id, attempt, nactions, self.request.id, t0)


__all__ = ["submit", "start", "action", "finalize", "JobRejected"]
