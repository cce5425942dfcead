"""The Celery tasks: ``tasks.submit``, and a job's chain ``tasks.start`` ->
``tasks.action`` (one per top-level action) -> ``tasks.finalize``.

Rules (see docs/lab.md):

- Every chain task first claims its step in the job record (a Lua
  compare-and-set on board, attempt and step number). A duplicate or stale
  delivery returns at once, so no action ever runs twice.
- Action tasks never raise: Celery would stop the chain and ``finalize``
  would never run. A failed or canceled job records its error; the
  remaining action tasks return at once; ``finalize`` always runs: it powers
  the board off, closes the console, kills helper processes, stores the final
  state and results, frees the board and sends the next queued job's chain.
- The ``JobRunner`` lives in the board worker's process between the tasks of
  a job: that is why every task of a job goes to the same ``board.<name>``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from typing import Any

from pipeline.errors import Bug, Canceled, InfrastructureError, JobError, LavaError
from tasks import config
from tasks.app import app
from tasks.ids import job_dir, new_id, path_under
from tasks.records import RedisLogSink, append_step
from tasks.scheduler import Lab, SubmitError, job_key
from tasks.submission import chain_arguments_problem, client_ref_of, record_rejection, submit_arguments
from tasks.worker import ActiveJob, BoardRuntime, retry_redis, runtime, work_root_for

log = logging.getLogger("lava-dispatch.jobs")


class JobRejected(Exception):
    """``tasks.submit`` refused the job (the reason is the message; the job's record says it too)."""


_LAB: Lab | None = None


def process_lab() -> Lab:
    global _LAB
    rt = runtime()
    if rt is not None:
        return rt.lab
    if _LAB is None:
        _LAB = Lab()
    return _LAB


@app.task(name="tasks.submit", bind=True, ignore_result=False)
def submit(self, *args: Any, **kwargs: Any) -> str:
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
    job_id = new_id(lab.r)
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
    rt = runtime()
    if rt is None or rt.board != board:
        log.error("a task for board %s reached a worker that does not serve it (%s): ignored", board,
                  rt.board if rt else "not a board worker")
        return None
    return rt


def _claim(rt: BoardRuntime, job_id: str, attempt: int, step: int, name: str, task_id: str | None) -> tuple[str, str]:
    token = uuid.uuid4().hex  # one token for every try: a retried claim is never counted twice
    kind, state = retry_redis("claim", lambda: rt.lab.claim(job_id, rt.board, attempt, step, name, rt.node, rt.pid,
                                                            token=token))
    return kind, state


def _audit_entry(rt: BoardRuntime, step: int, name: str, outcome: str, t0: float,
                 task_id: str | None, engine: float | None = None) -> dict[str, Any]:
    """One step as the audit trail shows it; ``engine``: seconds spent in the engine (runner setup, finalize)."""
    entry = {"step": step, "name": name, "outcome": outcome, "board": rt.board, "node": rt.node, "pid": rt.pid,
             "task_id": task_id, "t0": round(t0, 6), "t1": round(time.time(), 6)}
    if engine is not None:
        entry["engine"] = round(engine, 6)
    return entry


def _audit(rt: BoardRuntime, job_id: str, step: int, name: str, outcome: str, t0: float, task_id: str | None,
           engine: float | None = None) -> None:
    entry = _audit_entry(rt, step, name, outcome, t0, task_id, engine)
    try:
        retry_redis("audit", lambda: append_step(rt.r, job_id, entry), 60)
    except Exception as exc:  # noqa: BLE001 - the audit trail must not break a job
        log.warning("job %s: could not record step %d: %s", job_id, step, exc)


def _end_chain_if_stopping(task: Any, rt: BoardRuntime) -> None:
    """A stopping worker finalizes its job itself (``shutdown``): the rest of the chain is not sent.

    Sending it would be retried for a minute while Redis is down, and the
    worker could not obey SIGTERM meanwhile.
    """
    if rt.stopping:
        task.request.chain = None
        task.request.callbacks = None


def _mine(rt: BoardRuntime, job_id: str, attempt: int) -> ActiveJob | None:
    active = rt.active
    if active is not None and active.job_id == job_id and active.attempt == attempt:
        return active
    return None


@app.task(name="tasks.start", bind=True)
def start(self, job_id: str, board: str, attempt: int, nactions: int) -> dict[str, Any]:
    t0 = time.time()
    rt = _board_runtime(board, job_id, attempt, nactions)
    if rt is None:
        return {"outcome": "ignored"}
    kind, state = _claim(rt, job_id, attempt, 0, "start", self.request.id)
    t_claimed = time.time()
    if kind != "ok":
        _audit(rt, job_id, 0, "start", kind, t0, self.request.id)
        return {"step": 0, "outcome": kind, "state": state}
    if rt.active is not None and rt.active.job_id != job_id:
        # A job this worker still holds was reserved away from it (it was declared lost): end it here.
        finalize_locally(rt, rt.active, "the board was given to another job")
    active = rt.active = ActiveJob(job_id, attempt)
    if state == "Canceling":
        active.setup_error = Canceled("the job was canceled before it started")
        active.cancel.set()
    else:
        try:
            setup_runner(rt, active, nactions)
        except Exception as exc:  # noqa: BLE001 - Redis away for minutes: the job still reaches finalize
            active.setup_error = active.setup_error or InfrastructureError(f"cannot start the job: {exc}")
    _audit(rt, job_id, 0, "start", "ran" if active.setup_error is None else "failed", t0, self.request.id,
           engine=time.time() - t_claimed)
    _end_chain_if_stopping(self, rt)
    return {"step": 0, "outcome": "ran"}


def setup_runner(rt: BoardRuntime, active: ActiveJob, nactions: int) -> None:
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
    fields = {"output_dir": str(output_dir or ""), "host": config.hostname()}
    if active.names:
        fields.update(actions=json.dumps(active.names), nactions=len(active.names))
    error = active.setup_error or (active.runner.error if active.runner else None)
    if error is not None:
        fields.update(error_type=error.error_type, error=str(error))
    retry_redis("record", lambda: rt.r.hset(job_key(job_id), mapping=fields), 120)
    if active.setup_error is not None:
        active.sink({"dt": _now_dt(), "lvl": "error",
                     "msg": f"{type(active.setup_error).__name__}: {active.setup_error}"})


def _now_dt() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")


def top_level_durations(runner: Any) -> list[dict[str, Any]]:
    return [{"level": a.level, "name": a.name, "duration": round(a.duration, 3), "result": a.result}
            for a in runner.actions if a.duration is not None]


@app.task(name="tasks.action", bind=True)
def action(self, job_id: str, board: str, attempt: int, index: int, name: str) -> dict[str, Any]:
    """Run one top-level action; never raises (a failure is recorded, the chain goes on to finalize)."""
    t0 = time.time()
    rt = _board_runtime(board, job_id, attempt, index)
    if rt is None:
        return {"outcome": "ignored"}
    step = index + 1
    kind, state = _claim(rt, job_id, attempt, step, name, self.request.id)
    active = _mine(rt, job_id, attempt)
    if kind != "ok":
        _audit(rt, job_id, step, name, kind, t0, self.request.id)
        if kind in ("final", "stale") and active is not None:
            active.cancel.set()  # the job ended without this worker (lost lease): stop driving the board
        return {"step": step, "outcome": kind, "state": state}
    if active is None:
        # The claim succeeded but this process does not hold the job: it was started by a worker that died.
        token = uuid.uuid4().hex
        retry_redis("lose", lambda: rt.lab.lose(job_id, board, f"worker lost: {rt.node} (pid {rt.pid}) does not "
                                                "hold the job's runner (the worker restarted)", token=token))
        _audit(rt, job_id, step, name, "lost", t0, self.request.id)
        return {"step": step, "outcome": "lost"}
    if index in active.ran:
        # This process already ran it (the claim was lost with the last second of a crashed Redis): never twice.
        _audit(rt, job_id, step, name, "already-ran", t0, self.request.id)
        return {"step": step, "outcome": "already-ran"}
    active.ran.add(index)
    runner = active.runner
    if runner is None or runner.error is not None or active.setup_error is not None:
        _audit(rt, job_id, step, name, "skipped", t0, self.request.id)
        _end_chain_if_stopping(self, rt)
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
    _audit(rt, job_id, step, name, "ran" if ok else "failed", t0, self.request.id)
    _end_chain_if_stopping(self, rt)
    return {"step": step, "outcome": "ran" if ok else "failed"}


@app.task(name="tasks.finalize", bind=True)
def finalize(self, job_id: str, board: str, attempt: int, nactions: int) -> dict[str, Any]:
    """Always runs last: power off, stop helpers, store state and results, free the board, take the next job."""
    t0 = time.time()
    rt = _board_runtime(board, job_id, attempt, nactions)
    if rt is None:
        return {"outcome": "ignored"}
    step = nactions + 1
    kind, state = _claim(rt, job_id, attempt, step, "finalize", self.request.id)
    active = _mine(rt, job_id, attempt)
    if kind != "ok" and active is None:
        _audit(rt, job_id, step, "finalize", kind, t0, self.request.id)
        return {"step": step, "outcome": kind, "state": state}
    outcome = "ran" if kind == "ok" else f"ran-after-{kind}"
    # The audit entry is stored with the end, so a reader who sees the final state sees every step.
    final = finish_job(rt, job_id, attempt, active, None,
                       audit=lambda: _audit_entry(rt, step, "finalize", outcome, t0, self.request.id,
                                                  active.finalize_s if active else None))
    return {"step": step, "outcome": outcome, "state": final}


def end_group_quietly(rt: BoardRuntime, job_id: str) -> None:
    """The last member of a multinode group to end closes the group's coordination."""
    try:
        rt.lab.end_group_of(job_id)
    except Exception as exc:  # noqa: BLE001 - the group's keys still expire with their safety TTL
        log.warning("job %s: could not end its group: %s", job_id, exc)


def finish_job(rt: BoardRuntime, job_id: str, attempt: int, active: ActiveJob | None, reason: str | None,
               audit: Any = None) -> str:
    """Finalize the engine (if any), store the end, free the board and send the next queued job's chain."""
    from pipeline.runner import CANCELED, COMPLETE, INCOMPLETE

    runner = active.runner if active else None
    results = durations = None
    if runner is not None:
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
        state = CANCELED if isinstance(error_obj, Canceled) else INCOMPLETE
        error_type, error = error_obj.error_type, str(error_obj)
        if active and active.sink is not None:
            active.sink.close()  # (runner.finalize closes it: its records are in Redis before the end marker)
    if active is not None and active.workdir is not None:
        shutil.rmtree(active.workdir, ignore_errors=True)
    if state not in (COMPLETE, INCOMPLETE, CANCELED):
        state = INCOMPLETE
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
    return final


def finalize_locally(rt: BoardRuntime, active: ActiveJob, reason: str) -> None:
    """End a job outside its chain (the worker stops, or the job was taken from it)."""
    try:
        finish_job(rt, active.job_id, active.attempt, active, reason)
    except Exception as exc:  # noqa: BLE001
        log.error("job %s: could not finalize: %s", active.job_id, exc)
        if active.runner is not None:
            active.runner.ctx.processes.kill_all()


__all__ = ["submit", "start", "action", "finalize", "JobRejected"]
