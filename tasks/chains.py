"""Sending a reserved job's chain: ``tasks.start`` -> one ``tasks.action`` per top-level action ->
``tasks.finalize``, every task on the board's queue ``board.<name>``.

A chain names its actions, so sending one needs the job's pipeline on the
board's device. ``tasks.submission`` builds it once per distinct device
configuration when it validates the job and keeps the names in the job
record (``pipelines``: device sha -> action names); a board that takes a
queued job reads them from there. Only a board whose device configuration
changed since the job was submitted builds the pipeline again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from tasks.keys import board_key, board_queue, job_key
from tasks.state import Assignment, LabState, SubmitError

if TYPE_CHECKING:
    from pipeline.job import Job

PipelineNames = dict[str, list[str]]  # device sha -> the names of the job's top-level actions on that device


def send_chain(job_id: str, board: str, attempt: int, names: list[str], first_step: int = 0,
               url: str | None = None) -> None:
    """start -> one task per top-level action -> finalize, every task on ``board.<board>``.

    Step numbers: 0 is start, 1..n the actions, n + 1 finalize. ``first_step``
    resends the rest of a chain whose next message was lost; a step that was
    already claimed does nothing when it arrives twice.
    """
    from celery import chain

    from tasks.app import app_for

    app = app_for(url)
    # ignore_result: no result-backend subscription per message (the job record is the result).
    options = {"immutable": True, "queue": board_queue(board), "ignore_result": True}
    steps = [app.signature("tasks.start", args=(job_id, board, attempt, len(names)), **options)]
    for index, name in enumerate(names):
        steps.append(app.signature("tasks.action", args=(job_id, board, attempt, index, name), **options))
    steps.append(app.signature("tasks.finalize", args=(job_id, board, attempt, len(names)), **options))
    steps = steps[first_step:]
    if len(steps) == 1:
        steps[0].apply_async()
    else:
        chain(*steps).apply_async()


def pipeline_names(lab: LabState, job: Job, board: str, role: str | None = None) -> list[str]:
    from pipeline.builder import build_pipeline

    return [a.name for a in build_pipeline(job, lab.board_device(board), role).pipeline.actions]


def _rebuilt_names(lab: LabState, job_id: str, board: str, job: Job | None, role: str | None) -> list[str]:
    """The pipeline built now (the board's device is not one the job was validated on)."""
    from pipeline.errors import ProblemList
    from pipeline.parser import parse_job

    try:
        if job is None:
            job = parse_job(lab.r.hget(job_key(job_id), "definition") or "")
        return pipeline_names(lab, job, board, role)
    except (ProblemList, SubmitError) as exc:
        # The board's device cannot run it after all (its config changed): the chain's start reports it.
        lab.r.hset(job_key(job_id), mapping={"dispatch_error": str(exc)})
        return []


def dispatch(lab: LabState, assignments: Iterable[Assignment], first_step: int = 0, *,
             jobs: dict[str, Job] | None = None, pipelines: dict[str, PipelineNames] | None = None,
             board_shas: dict[str, str] | None = None) -> None:
    """Send each reserved job's chain to its board's queue.

    ``pipelines`` (job -> device sha -> names) and ``board_shas`` (board ->
    device sha): what the caller already knows (a submit); anything else is
    read from the job record and the board in one round trip.
    """
    assignments = list(assignments)
    pipelines = dict(pipelines or {})
    board_shas = dict(board_shas or {})
    unknown = [a for a in assignments if a.job not in pipelines or a.board not in board_shas]
    roles: dict[str, str | None] = {}
    if unknown:
        pipe = lab.r.pipeline(transaction=False)
        for a in unknown:
            pipe.hmget(job_key(a.job), "pipelines", "role")
            pipe.hget(board_key(a.board), "device_sha")
        answers = pipe.execute()
        for n, a in enumerate(unknown):
            (stored, role), sha = answers[2 * n], answers[2 * n + 1]
            roles[a.job] = role or None
            if a.job not in pipelines:
                pipelines[a.job] = json.loads(stored) if stored else {}
            board_shas.setdefault(a.board, sha or "")
    for a in assignments:
        names = pipelines[a.job].get(board_shas[a.board])
        if names is None:
            role = roles[a.job] if a.job in roles else lab.r.hget(job_key(a.job), "role") or None
            names = _rebuilt_names(lab, a.job, a.board, (jobs or {}).get(a.job), role)
        lab.r.hset(job_key(a.job), mapping={"nactions": len(names), "actions": json.dumps(names)})
        send_chain(a.job, a.board, a.attempt, names, first_step, url=lab.url)


__all__ = ["send_chain", "dispatch", "pipeline_names", "PipelineNames"]
