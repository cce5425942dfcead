"""Running a job: start, each top-level action, finalize.

The three steps are separate so that the same engine runs a job in one
process (``lava-dispatch run``) or as a chain of Celery tasks on a board's
worker, where the runner lives in the worker process between tasks.
``finalize`` always runs and always leaves the board off and no helper
process behind.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.action import Action, cleanup_quietly, run_action
from pipeline.builder import build_pipeline, unknown_timeout_names
from pipeline.context import JobContext, TestCaseResult
from pipeline.coordination import MultinodeClient
from pipeline.device import Device
from pipeline.download import local_path
from pipeline.errors import Bug, Canceled, JobError, LavaError, ProblemList
from pipeline.job import Job
from pipeline.log import FileSink, JobLogger, Sink
from pipeline.multinode import MultinodeSupport
from pipeline.processes import ProcessRegistry
from pipeline.results import dump_yaml, junit_xml, write_results_yaml

COMPLETE, INCOMPLETE, CANCELED = "Complete", "Incomplete", "Canceled"


@dataclass
class Outcome:
    state: str
    error_type: str | None = None
    error: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    durations: list[dict[str, Any]] = field(default_factory=list)
    output_dir: Path | None = None


def describe_pipeline(job: Job, device: Device, role: str | None = None) -> list[dict[str, Any]]:
    """The pipeline as ``lava-dispatch validate`` prints it (raises ProblemList)."""
    return build_pipeline(job, device, role).describe()


def check_local_files(job: Job, roots: list[Path] | None) -> None:
    """Refuse, before anything runs, file:// URLs this worker may not read or that do not exist."""
    problems = []
    for place, url in job.urls():
        if url.startswith("file://"):
            try:
                local_path(url, roots)
            except JobError as exc:
                problems.append(f"{place}: {exc}")
    if problems:
        raise ProblemList(problems)


class JobRunner:
    def __init__(self, job: Job, device: Device, *, output_dir: Path, job_id: str = "local",
                 board_name: str = "local", role: str | None = None, sinks: list[Sink] | None = None,
                 cancel_requested: Callable[[], bool] = lambda: False, file_roots: list[Path] | None = None,
                 workdir: Path | None = None, processes: ProcessRegistry | None = None,
                 multinode: MultinodeClient | None = None):
        self.job, self.device, self.role = job, device, role
        self.built = build_pipeline(job, device, role)
        check_local_files(job, file_roots)
        output_dir.mkdir(parents=True, exist_ok=True)
        self.file_sink = FileSink(output_dir / "output.yaml")
        logger = JobLogger([self.file_sink, *(sinks or [])], role=role)
        self.own_workdir = workdir is None
        workdir = workdir or Path(tempfile.mkdtemp(prefix=f"lava-dispatch-{job_id}-"))
        self.ctx = JobContext(job=job, device=device, logger=logger, workdir=workdir, output_dir=output_dir,
                              processes=processes or ProcessRegistry(), cancel_requested=cancel_requested,
                              file_roots=file_roots, board_name=board_name, job_id=job_id)
        self.multinode: MultinodeSupport | None = None
        if job.multinode is not None:
            if multinode is None or role is None:
                raise ProblemList(["protocols.lava-multinode: a multinode job runs as one member per role "
                                   "(lava-dispatch run runs every role; a lab submits it as a group)"])
            self.multinode = MultinodeSupport(job, role, multinode, self.built.blocks, self.actions)
            self.multinode.install(self.ctx)
        self.error: LavaError | None = None
        self.started_at: float | None = None
        self.finalized = False

    @property
    def actions(self) -> list[Action]:
        return self.built.pipeline.actions

    def start(self) -> None:
        ctx = self.ctx
        self.started_at = time.monotonic()
        (ctx.output_dir / "job.yaml").write_text(self.job.text)
        (ctx.output_dir / "device.yaml").write_text(dump_yaml(self.device.model_dump(mode="json")))
        ctx.job_deadline = self.started_at + self.job.header.timeouts.job
        ctx.logger.info(f"start: job {ctx.job_id} {self.job.name!r} on {ctx.board_name} "
                        f"({self.device.device_type}), timeout {self.job.header.timeouts.job:g} s"
                        + (f", role {self.role}" if self.role else ""))
        for warning in unknown_timeout_names(self.job):
            ctx.logger.warning(warning)
        if self.multinode is not None:
            try:
                with ctx.job_timer(self.job.header.timeouts.job):
                    self.multinode.wait_for_start(ctx)
            except LavaError as exc:
                self.fail(exc)

    def run_action(self, index: int) -> bool:
        """Run one top-level action; False once the job has failed (the rest are skipped)."""
        if self.error is not None:
            return False
        action = self.actions[index]
        ctx = self.ctx
        try:
            with ctx.job_timer(self.job.header.timeouts.job):
                run_action(action, ctx)
        except LavaError as exc:
            self.fail(exc)
        except KeyboardInterrupt:
            self.fail(Canceled("interrupted (Ctrl-C)"))
        except Exception as exc:  # noqa: BLE001 - a bug must still end in a finalized job
            self.fail(Bug(f"{type(exc).__name__}: {exc}"))
        return self.error is None

    def fail(self, error: LavaError) -> None:
        if self.error is None:
            self.error = error
            level = "warning" if isinstance(error, Canceled) else "error"
            self.ctx.logger.log(level, f"{type(error).__name__}: {error}")

    def run(self) -> Outcome:
        """Run the whole job in this process."""
        try:
            self.start()
            for index in range(len(self.actions)):
                if not self.run_action(index):
                    break
        except KeyboardInterrupt:
            self.fail(Canceled("interrupted (Ctrl-C)"))
        return self.finalize()

    def finalize(self) -> Outcome:
        """Clean up, power off, stop every helper, write the results. Safe to call twice."""
        ctx = self.ctx
        if self.finalized:
            return self.outcome()
        self.finalized = True
        ctx.deadlines.clear()
        try:
            self.run_finalize()
            for action in reversed([a for top in self.actions for a in top.walk()]):
                cleanup_quietly(action, ctx)
            ctx.close_connection()
            ctx.close_file_server()
        finally:
            left = ctx.processes.kill_all(log=ctx.logger.debug)
            if left:
                # The board is the host for a local shell: what a test started must end with the job.
                shown = ", ".join(left[:8]) + (f", ... ({len(left) - 8} more)" if len(left) > 8 else "")
                ctx.logger.info(f"stopped {len(left)} process(es) the job left running: {shown}")
            if ctx.multinode is not None:
                ctx.multinode.close()
        state = self.state()
        if self.error is not None:
            ctx.add_result(TestCaseResult("lava", "job", "fail", definition="lava",
                                          extra={"error_type": self.error.error_type,
                                                 "error_msg": str(self.error)}))
        else:
            ctx.add_result(TestCaseResult("lava", "job", "pass", definition="lava"))
        elapsed = time.monotonic() - (self.started_at or time.monotonic())
        ctx.logger.info(f"end: job {ctx.job_id} {state} in {elapsed:.2f} s")
        self.write_files()
        ctx.logger.close()
        if self.own_workdir:
            shutil.rmtree(ctx.workdir, ignore_errors=True)
        return self.outcome()

    def run_finalize(self) -> None:
        """``finalize``'s steps (power-off, read-feedback), each logged and never raising: the result is decided."""
        final = self.built.finalize
        began = time.monotonic()
        self.ctx.logger.info(f"start: {final.level} {final.name}")
        final.result = "pass"
        for step in final.pipeline.actions if final.pipeline else []:
            started = time.monotonic()
            try:
                step.run(self.ctx)
                step.result = "pass"
            except LavaError as exc:
                step.result = final.result = "fail"
                self.ctx.logger.error(f"{step.name} failed: {exc}")
            step.duration = time.monotonic() - started
        final.duration = time.monotonic() - began

    def state(self) -> str:
        if self.error is None:
            return COMPLETE
        return CANCELED if isinstance(self.error, Canceled) else INCOMPLETE

    def outcome(self) -> Outcome:
        error = self.error
        return Outcome(self.state(), error.error_type if error else None, str(error) if error else None,
                       [r.as_dict() for r in self.ctx.results], list(self.ctx.durations), self.ctx.output_dir)

    def write_files(self) -> None:
        ctx = self.ctx
        results = [r.as_dict() for r in ctx.results]
        write_results_yaml(results, ctx.output_dir / "results.yaml")
        (ctx.output_dir / "results.xml").write_text(junit_xml(results, self.job.name))
        description = {"job": self.job.name, "device_type": self.device.device_type, "board": ctx.board_name,
                       "state": self.state(), "pipeline": self.built.describe()}
        (ctx.output_dir / "description.yaml").write_text(dump_yaml(description))


__all__ = ["JobRunner", "Outcome", "describe_pipeline", "COMPLETE", "INCOMPLETE", "CANCELED"]
