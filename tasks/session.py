"""A job's session on its board: what the chain's start, action and finalize steps do.

Rules (see docs/lab.md):

- Every step first claims itself in the job record (a Lua compare-and-set
  on board, attempt and step number). A duplicate or stale delivery returns
  at once, so no action ever runs twice.
- An action step never raises: Celery would stop the chain and ``finalize``
  would never run. A failed or canceled job records its error; the
  remaining action steps return at once; ``finalize`` always runs: it powers
  the board off, closes the console, kills helper processes, stores the final
  state and results, frees the board and sends the next queued job's chain.
- The ``JobRunner`` lives in the board worker's process between the steps of
  a job (``ActiveJob``): that is why every task of a job goes to the same
  ``board.<name>``.

The functions take the board's runtime (``tasks.board.BoardRuntime``, seen
here through ``Runtime``) explicitly.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pipeline.device import Device
from pipeline.errors import Bug, Canceled, InfrastructureError, JobError, LavaError
from tasks import config
from tasks.helpers import work_root_for
from tasks.ids import job_dir, path_under
from tasks.keys import JobState, job_key
from tasks.records import RedisLogSink, append_step
from tasks.retry import retry_redis
from tasks.scheduler import Lab

log = logging.getLogger("lava-dispatch.jobs")

Outcome = dict[str, Any]  # what a chain task returns (Flower shows it)


@dataclass
class ActiveJob:
    """The job this worker drives now; its runner lives here between the chain's tasks."""

    job_id: str
    attempt: int
    cancel: threading.Event = field(default_factory=threading.Event)
    runner: Any = None
    sink: Any = None
    setup_error: LavaError | None = None
    names: list[str] = field(default_factory=list)
    deadline: float | None = None  # monotonic: job timeout
    last_progress: float = field(default_factory=time.monotonic)
    stop_reason: str | None = None
    finalize_s: float | None = None  # time in the engine's finalize (for the audit trail)
    ran: set[int] = field(default_factory=set)  # the indexes of the actions whose step was claimed here
    workdir: Path | None = None  # the job's scratch space (removed after finalize)


class Runtime(Protocol):
    """What a job's session needs of its board worker."""

    board: str
    node: str
    pid: int
    r: Any
    lab: Lab
    device: Device
    pid_file: Path
    active: ActiveJob | None
    stopping: bool


def claim(rt: Runtime, job_id: str, attempt: int, step: int, name: str) -> tuple[str, str]:
    token = uuid.uuid4().hex  # one token for every try: a retried claim is never counted twice
    return retry_redis("claim", lambda: rt.lab.claim(job_id, rt.board, attempt, step, name, rt.node, rt.pid,
                                                     token=token))


def audit_entry(rt: Runtime, step: int, name: str, outcome: str, t0: float, task_id: str | None,
                engine: float | None = None) -> dict[str, Any]:
    """One step as the audit trail shows it; ``engine``: seconds spent in the engine (runner setup, finalize)."""
    entry = {"step": step, "name": name, "outcome": outcome, "board": rt.board, "node": rt.node, "pid": rt.pid,
             "task_id": task_id, "t0": round(t0, 6), "t1": round(time.time(), 6)}
    if engine is not None:
        entry["engine"] = round(engine, 6)
    return entry


def audit(rt: Runtime, job_id: str, step: int, name: str, outcome: str, t0: float, task_id: str | None,
          engine: float | None = None) -> None:
    entry = audit_entry(rt, step, name, outcome, t0, task_id, engine)
    try:
        retry_redis("audit", lambda: append_step(rt.r, job_id, entry), 60)
    except Exception as exc:  # noqa: BLE001 - the audit trail must not break a job
        log.warning("job %s: could not record step %d: %s", job_id, step, exc)


def mine(rt: Runtime, job_id: str, attempt: int) -> ActiveJob | None:
    active = rt.active
    if active is not None and active.job_id == job_id and active.attempt == attempt:
        return active
    return None


def start(rt: Runtime, job_id: str, attempt: int, nactions: int, task_id: str | None, t0: float) -> Outcome:
    """Step 0: claim the job, build its runner (the engine starts: output directory, log)."""
    kind, state = claim(rt, job_id, attempt, 0, "start")
    t_claimed = time.time()
    if kind != "ok":
        audit(rt, job_id, 0, "start", kind, t0, task_id)
        return {"step": 0, "outcome": kind, "state": state}
    if rt.active is not None and rt.active.job_id != job_id:
        # A job this worker still holds was reserved away from it (it was declared lost): end it here.
        finalize_locally(rt, rt.active, "the board was given to another job")
    active = rt.active = ActiveJob(job_id, attempt)
    if state == JobState.CANCELING:
        active.setup_error = Canceled("the job was canceled before it started")
        active.cancel.set()
    else:
        try:
            setup_runner(rt, active, nactions)
        except Exception as exc:  # noqa: BLE001 - Redis away for minutes: the job still reaches finalize
            active.setup_error = active.setup_error or InfrastructureError(f"cannot start the job: {exc}")
    audit(rt, job_id, 0, "start", "ran" if active.setup_error is None else "failed", t0, task_id,
          engine=time.time() - t_claimed)
    return {"step": 0, "outcome": "ran"}


def setup_runner(rt: Runtime, active: ActiveJob, nactions: int) -> None:
    from pipeline.download import file_roots_from_env
    from pipeline.errors import ProblemList
    from pipeline.parser import parse_job
    from pipeline.processes import ProcessRegistry
    from pipeline.runner import JobRunner

    job_id = active.job_id
    definition, dispatch_error, group, role, member = retry_redis(
        "read job", lambda: rt.r.hmget(job_key(job_id), "definition", "dispatch_error", "group", "role", "member"))
    active.sink = RedisLogSink(rt.r, job_id)
    output_dir = None
    try:
        output_dir = job_dir(config.output_root(), job_id)
        # The scratch space is in the board's work root, so a worker that restarts after a crash removes it.
        active.workdir = path_under(work_root_for(rt.board), job_id)
        active.workdir.mkdir(parents=True, exist_ok=True)
        job = parse_job(definition or "")
        # A member of a multinode group talks to the others through the lab's coordinator.
        multinode = rt.lab.coordinator().client(group, member) if group else None
        runner = JobRunner(job, rt.device, output_dir=output_dir, job_id=job_id, board_name=rt.board,
                           sinks=[active.sink], cancel_requested=active.cancel.is_set,
                           file_roots=file_roots_from_env(lab=True), processes=ProcessRegistry(pid_file=rt.pid_file),
                           workdir=active.workdir, role=role or None, multinode=multinode)
    except ProblemList as exc:
        active.setup_error = JobError(f"the job cannot run on board {rt.board}: " + "; ".join(exc.problems))
    except LavaError as exc:
        active.setup_error = exc
    except Exception as exc:  # noqa: BLE001 - a start step never raises: finalize must run
        active.setup_error = Bug(f"{type(exc).__name__}: {exc}")
    else:
        active.runner = runner
        active.names = [a.name for a in runner.actions]
        if active.stop_reason:  # SIGTERM arrived while the runner was being built
            runner.fail(InfrastructureError(active.stop_reason))
        if len(active.names) != nactions:
            runner.fail(Bug(f"the pipeline has {len(active.names)} actions on {rt.board} but the chain has "
                            f"{nactions}{': ' + dispatch_error if dispatch_error else ''}"))
        active.deadline = time.monotonic() + job.header.timeouts.job
        try:
            runner.start()
        except Exception as exc:  # noqa: BLE001 - e.g. the output directory cannot be written
            runner.fail(InfrastructureError(f"cannot start the job: {type(exc).__name__}: {exc}"))
    fields: dict[str, Any] = {"output_dir": str(output_dir or ""), "host": config.hostname()}
    if active.names:
        fields.update(actions=json.dumps(active.names), nactions=len(active.names))
    error = active.setup_error or (active.runner.error if active.runner else None)
    if error is not None:
        fields.update(error_type=error.error_type, error=str(error))
    retry_redis("record", lambda: rt.r.hset(job_key(job_id), mapping=fields), 120)
    if active.setup_error is not None:
        active.sink({"dt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f"), "lvl": "error",
                     "msg": f"{type(active.setup_error).__name__}: {active.setup_error}"})


def top_level_durations(runner: Any) -> list[dict[str, Any]]:
    return [{"level": a.level, "name": a.name, "duration": round(a.duration, 3), "result": a.result}
            for a in runner.actions if a.duration is not None]


def run_action(rt: Runtime, job_id: str, attempt: int, index: int, name: str, task_id: str | None,
               t0: float) -> Outcome:
    """Steps 1..n: run one top-level action; never raises (a failure is recorded, the chain goes on)."""
    step = index + 1
    kind, state = claim(rt, job_id, attempt, step, name)
    active = mine(rt, job_id, attempt)
    if kind != "ok":
        audit(rt, job_id, step, name, kind, t0, task_id)
        if kind in ("final", "stale") and active is not None:
            active.cancel.set()  # the job ended without this worker (lost lease): stop driving the board
        return {"step": step, "outcome": kind, "state": state}
    if active is None:
        # The claim succeeded but this process does not hold the job: it was started by a worker that died.
        token = uuid.uuid4().hex
        retry_redis("lose", lambda: rt.lab.lose(job_id, rt.board, f"worker lost: {rt.node} (pid {rt.pid}) does not "
                                                "hold the job's runner (the worker restarted)", token=token))
        audit(rt, job_id, step, name, "lost", t0, task_id)
        return {"step": step, "outcome": "lost"}
    if index in active.ran:
        # This process already ran it (the claim was lost with the last second of a crashed Redis): never twice.
        audit(rt, job_id, step, name, "already-ran", t0, task_id)
        return {"step": step, "outcome": "already-ran"}
    active.ran.add(index)
    runner = active.runner
    if runner is None or runner.error is not None or active.setup_error is not None:
        audit(rt, job_id, step, name, "skipped", t0, task_id)
        return {"step": step, "outcome": "skipped"}
    try:
        ok = runner.run_action(index)
    except BaseException as exc:  # noqa: BLE001 - never let the chain stop before finalize
        runner.fail(Bug(f"{type(exc).__name__}: {exc}"))
        ok = False
    update: dict[str, Any] = {"durations": json.dumps(top_level_durations(runner))}
    if not ok and runner.error is not None:
        update.update(error_type=runner.error.error_type, error=str(runner.error))
    try:
        retry_redis("record", lambda: rt.r.hset(job_key(job_id), mapping=update), 120)
    except Exception as exc:  # noqa: BLE001
        log.warning("job %s: could not record action %s: %s", job_id, name, exc)
    audit(rt, job_id, step, name, "ran" if ok else "failed", t0, task_id)
    return {"step": step, "outcome": "ran" if ok else "failed"}


def finalize(rt: Runtime, job_id: str, attempt: int, nactions: int, task_id: str | None, t0: float) -> Outcome:
    """Step n + 1, always last: power off, stop helpers, store state and results, free the board."""
    step = nactions + 1
    kind, state = claim(rt, job_id, attempt, step, "finalize")
    active = mine(rt, job_id, attempt)
    if kind != "ok" and active is None:
        audit(rt, job_id, step, "finalize", kind, t0, task_id)
        return {"step": step, "outcome": kind, "state": state}
    outcome = "ran" if kind == "ok" else f"ran-after-{kind}"
    # The audit entry is stored with the end, so a reader who sees the final state sees every step.
    final = finish_job(rt, job_id, attempt, active, None,
                       audit=lambda: audit_entry(rt, step, "finalize", outcome, t0, task_id,
                                                 active.finalize_s if active else None))
    return {"step": step, "outcome": outcome, "state": final}


def end_group_quietly(rt: Runtime, job_id: str) -> None:
    """The last member of a multinode group to end closes the group's coordination."""
    try:
        rt.lab.end_group_of(job_id)
    except Exception as exc:  # noqa: BLE001 - the group's keys still expire with their safety TTL
        log.warning("job %s: could not end its group: %s", job_id, exc)


def finish_job(rt: Runtime, job_id: str, attempt: int, active: ActiveJob | None, reason: str | None,
               audit: Callable[[], dict[str, Any]] | None = None) -> str:
    """Finalize the engine (if any), store the end, free the board and send the next queued job's chain."""
    runner = active.runner if active else None
    results = durations = None
    if active is not None and runner is not None:
        missing = [name for i, name in enumerate(active.names) if i not in active.ran]
        if missing and not reason and runner.error is None:
            reason = f"the job's chain ended before {', '.join(missing)} ran"
        if reason:
            if runner.error is None:
                runner.fail(InfrastructureError(reason))
            else:
                runner.ctx.logger.error(reason)
        t_engine = time.time()
        outcome = runner.finalize()
        active.finalize_s = time.time() - t_engine
        state, error_type, error = outcome.state, outcome.error_type, outcome.error
        results, durations = outcome.results, top_level_durations(runner)
    else:
        error_obj = active.setup_error if active and active.setup_error else InfrastructureError(reason or "no runner")
        state = JobState.CANCELED if isinstance(error_obj, Canceled) else JobState.INCOMPLETE
        error_type, error = error_obj.error_type, str(error_obj)
        if active and active.sink is not None:
            active.sink.close()  # (runner.finalize closes it: its records are in Redis before the end marker)
    if active is not None and active.workdir is not None:
        shutil.rmtree(active.workdir, ignore_errors=True)
    if state not in (JobState.COMPLETE, JobState.INCOMPLETE, JobState.CANCELED):
        state = JobState.INCOMPLETE
    entry = audit() if audit else None
    token = uuid.uuid4().hex
    final, placed = retry_redis("finish", lambda: rt.lab.finish(job_id, rt.board, attempt, state, error_type, error,
                                                                 durations, results, entry, token=token))
    if rt.active is active:
        rt.active = None
    end_group_quietly(rt, job_id)
    if placed and not rt.stopping:
        try:
            rt.lab.dispatch(placed)
        except Exception as exc:  # noqa: BLE001 - the heartbeat's watchdog sends a lost chain again
            log.error("could not send the chains of %s: %s", [a.job for a in placed], exc)
    if not rt.stopping:
        try:  # a health check due now (its outcome, a count of jobs, Looping) goes first in the board's queue
            rt.lab.ensure_health_check(rt.board)
        except Exception as exc:  # noqa: BLE001 - the heartbeat asks again
            log.error("health check of %s: %s", rt.board, exc)
    return final


def finalize_locally(rt: Runtime, active: ActiveJob, reason: str) -> None:
    """End a job outside its chain (the worker stops, or the job was taken from it)."""
    try:
        finish_job(rt, active.job_id, active.attempt, active, reason)
    except Exception as exc:  # noqa: BLE001
        log.error("job %s: could not finalize: %s", active.job_id, exc)
        if active.runner is not None:
            active.runner.ctx.processes.kill_all()


__all__ = ["ActiveJob", "Runtime", "start", "run_action", "finalize", "finish_job", "finalize_locally",
           "setup_runner", "top_level_durations"]
