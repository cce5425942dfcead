"""Which board runs which job: ``Lab``, the scheduler's face for the CLI, the workers and the server.

``Lab`` is the lab's state in Redis (``tasks.state``: the board registry,
queues, leases, claims, each change one Lua script) plus what the lab does
around it: submitting (``tasks.submission``), sending chains
(``tasks.chains``) and ending multinode groups (``tasks.groups``). There is
no polling loop: a job is placed when it is submitted, when a board finishes
(``finish`` takes the next queued job itself) and when a worker registers
or comes back to life.

The key names are in ``tasks.keys``; the names this module always exported
stay importable from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pipeline.errors import InfrastructureError
from tasks import chains, groups, health, submission
from tasks.chains import PipelineNames, send_chain
from tasks.keys import (
    ACTIVE_STATES,
    FINAL_STATES,
    SUBMIT_QUEUE,
    JobState,
    board_key,
    board_queue,
    control_channel,
    group_key,
    job_key,
)
from tasks.state import Assignment, LabState, LostJob, SubmitError, Submitted, device_sha, no_board_error, redis_now_ms
from tasks.submission import priority_value

if TYPE_CHECKING:
    from pipeline.job import Job


class Lab(LabState):
    """The scheduler's operations on one Redis database."""

    def submit(self, text: str, *, priority: str | int | None = None, queue_anyway: bool = False,
               submitter: str = "", dispatch: bool = True, job: Job | None = None, client_ref: str = "",
               job_id: str | None = None, visibility: str = "", health_check_board: str | None = None) -> Submitted:
        """Validate, record and place (or queue) a job under a new id. Raises ProblemList or SubmitError.

        ``client_ref`` (a ``celery call``'s task id) is only stored in the
        record; ``job_id``: an id this lab already assigned (``new_id``);
        ``visibility``: ``public`` or ``personal`` (the lab server's reading of the job's ``visibility:``).
        """
        self.reap()
        return submission.submit(self, text, priority=priority, queue_anyway=queue_anyway, submitter=submitter,
                                 dispatch=dispatch, job=job, client_ref=client_ref, job_id=job_id,
                                 visibility=visibility, health_check_board=health_check_board)

    def validate_for_type(self, job: Job, device_type: str, role: str | None = None) -> list[str]:
        """Build the job's pipeline on each distinct device config of the type's boards; the problems found."""
        return submission.validate_for_type(self, job, device_type, role)[0]

    def dispatch(self, assignments: Iterable[Assignment], jobs: dict[str, Job] | None = None,
                 first_step: int = 0, pipelines: dict[str, PipelineNames] | None = None) -> None:
        """Send each reserved job's chain to its board's queue: start, one task per action, finalize."""
        chains.dispatch(self, assignments, first_step, jobs=jobs, pipelines=pipelines)

    def pipeline_names(self, job: Job, board: str, role: str | None = None) -> list[str]:
        return chains.pipeline_names(self, job, board, role)

    def lose(self, job: str, board: str, reason: str, only_started: bool = True,
             error_type: str = InfrastructureError.error_type, token: str | None = None) -> str:
        """End an active job of ``board`` whose worker is gone (Incomplete, or Canceled if it was canceling)."""
        state = super().lose(job, board, reason, only_started, error_type, token)
        self.end_group_of(job)
        return state

    def reap(self, on_lost: Callable[[LostJob], None] | None = None) -> list[LostJob]:
        """Mark the jobs whose worker stopped renewing their lease; requeue those that never started."""
        lost, placed, timed_out = self.expire_leases()
        for item in lost:
            if on_lost:
                on_lost(item)
            self.end_group_of(item.job)
        for job in timed_out:  # a multinode group's members: its coordinator group ends
            self.end_group_of(job)
        if placed:
            self.dispatch(placed)
        return lost

    # -- health (tasks.health): one rule for the CLI, the workers and the lab server

    def set_health(self, board: str, value: str, *, who: str = "", reason: str = "",
                   force: bool = False) -> health.HealthChange:
        """Set a board's health, recorded with who and why; see ``tasks.health.set_health``."""
        return health.set_health(self, board, value, who=who, reason=reason, force=force)

    def set_worker_health(self, host: str, value: str, *, who: str = "", reason: str = "",
                          force: bool = False) -> tuple[str, list[str]]:
        """Set a worker host's health (Active, Maintenance, Retired); (old health, jobs canceled)."""
        return health.set_worker_health(self, host, value, who=who, reason=reason, force=force)

    def health_history(self, board: str, limit: int = 20) -> list[dict[str, Any]]:
        """The board's newest health changes {board, old, new, who, reason, time (ms)}, newest first."""
        return health.history(self, board, limit)

    def ensure_health_check(self, board: str) -> str | None:
        """Submit the board's health check when one is due; its job id."""
        return health.ensure_health_check(self, board)

    def queue_summary(self) -> dict[str, dict[str, Any]]:
        """Per device type: queued, oldest_wait (s), boards, good, idle, health counts, waiting (why)."""
        return health.queue_summary(self)

    def device(self, board: str) -> dict[str, Any]:
        """One board: health with reason/who/when, state (Idle, Reserved, Running), health check, history."""
        return health.device(self, board)

    def workers(self) -> list[dict[str, Any]]:
        """Every worker host with its health and boards."""
        return health.workers(self)

    # -- multinode groups

    def coordinator(self) -> Any:
        """The Multinode coordinator of this lab (the same Redis)."""
        return groups.coordinator(self)

    def group_members(self, group_id: str) -> dict[str, str]:
        """sub-job id -> role of a group's members ({} if ``group_id`` is not a group)."""
        return groups.group_members(self, group_id)

    def end_group_of(self, job_id: str) -> None:
        groups.end_group_of(self, job_id)

    def end_group_if_done(self, group_id: str) -> bool:
        """Once every sub-job of a group has ended, end its coordinator group (its keys then expire)."""
        return groups.end_group_if_done(self, group_id)


__all__ = ["Lab", "SubmitError", "Assignment", "Submitted", "LostJob", "JobState", "ACTIVE_STATES",
           "FINAL_STATES", "SUBMIT_QUEUE", "board_queue", "job_key", "group_key", "board_key",
           "control_channel", "send_chain", "priority_value", "no_board_error", "device_sha", "redis_now_ms"]
