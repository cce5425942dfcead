"""What the APIs do, whichever protocol asked: submit, cancel, resubmit, validate, devices and their health.

XML-RPC (``server.xmlrpc``) and REST (``server.rest``) are two faces of
these operations; the refusals are ``server.errors`` with LAVA's codes.
Jobs go through the lab's own ``Lab.submit`` (the same validation, record
and placement as ``lava-dispatch submit``), with the caller as submitter.

Device health is LAVA's (Good, Unknown, Looping, Bad, Maintenance,
Retired). A change goes through the lab's ``Lab.set_health`` (the rule the
CLI follows too: placement honours it at once, Good runs a health check
first), which records it in Redis; the archive's SQL history takes it from
the lab's list of changes (``archive_health_changes``) before the call
returns. A board that never had a change is Good.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from server import formats
from server.archiver import archive_health_changes, keep_counter_ahead
from server.errors import BadRequest, NotFound
from server.identity import Caller, require_admin, require_owner, require_user
from server.jobs import JobInfo, JobStore, visibility_of
from tasks.health import HealthError
from tasks.keys import LAB, board_key, job_key
from tasks.scheduler import Lab, SubmitError

DEVICE_STATES = {"idle": "Idle", "offline": "Idle"}


class LabService:
    """The lab as the APIs see it: one Redis (the live lab) and one archive database."""

    def __init__(self, lab: Lab | None = None, engine: Engine | None = None):
        self.lab = lab or Lab()
        self.r = self.lab.r
        self.engine = engine
        self.jobs = JobStore(self.lab, engine)

    # -- jobs

    def job(self, job_id: Any) -> JobInfo:
        return self.jobs.get(job_id)

    def check(self, definition: Any, caller: Caller) -> Any:
        """The parsed job, or BadRequest with every problem (the validator's lines, and the server's)."""
        from pipeline.errors import ProblemList
        from pipeline.parser import parse_job
        from server.auth import remote_secret
        from server.notify import submit_problems

        if not isinstance(definition, str) or not definition.strip():
            raise _rejected(["definition: required but missing (the job's YAML text)"])
        try:
            job = parse_job(definition)
        except ProblemList as exc:
            raise _rejected(exc.problems) from None
        problems = submit_problems(job.header.notify, caller.user or "",
                                   lambda user, name: remote_secret(user, name, engine=self.engine))
        if problems:
            raise _rejected(problems)
        return job

    def submit(self, caller: Caller, definition: Any) -> list[str]:
        """Submit as ``caller``; the job ids (a multinode job: its members ``N.M``)."""
        from pipeline.errors import ProblemList

        user = require_user(caller)
        job = self.check(definition, caller)
        keep_counter_ahead(self.r, self.engine)
        try:
            submitted = self.lab.submit(definition, job=job, submitter=user,
                                        visibility=visibility_of(job.header.visibility))
        except ProblemList as exc:
            raise _rejected(exc.problems) from None
        except SubmitError as exc:
            raise BadRequest(f"Problem with submitted job data: {exc}", [str(exc)]) from None
        return list(submitted.members) or [submitted.job_id]

    def validate(self, definition: Any, caller: Caller) -> list[str]:
        """The problems of a definition ([] when valid)."""
        try:
            self.check(definition, caller)
        except BadRequest as exc:
            return exc.problems or [exc.message]
        return []

    def cancel(self, caller: Caller, job_id: Any) -> str:
        """Cancel a queued or running job (its submitter or an admin); the job's lab state after it."""
        require_user(caller)
        job = self.job(job_id)
        require_owner(caller, job, "cancel")
        if job.finished:
            return job.state
        target = job.id
        if not self.r.exists(job_key(target)):
            raise NotFound(f"Job '{job_id}' was not found.")
        state, _ = self.lab.cancel(target)
        return state

    def resubmit(self, caller: Caller, job_id: Any) -> list[str]:
        require_user(caller)
        job = self.job(job_id)
        require_owner(caller, job, "resubmit")
        return self.submit(caller, job.definition)

    # -- devices

    def _boards(self) -> list[dict[str, Any]]:
        self.lab.reap()
        boards = self.lab.boards()
        pipe = self.r.pipeline(transaction=False)
        for board in boards:
            pipe.hmget(board_key(board["board"]), "health", "description")
            pipe.hget(job_key(board["job"]), "state") if board["job"] else pipe.echo("")
        answers = pipe.execute()
        for board, (health, description), job_state in zip(boards, answers[0::2], answers[1::2], strict=True):
            board["health"] = health or "Good"  # as placement reads it: a board with no health is Good
            board["description"] = description or ""
            board["job_state"] = job_state or ""
        return boards

    @staticmethod
    def _state(board: dict[str, Any]) -> str:
        if board["state"] == "busy":
            return "Running" if board["job_state"] in ("Running", "Canceling") else "Reserved"
        return DEVICE_STATES.get(board["state"], "Idle")

    def devices(self, show_all: bool = False) -> list[dict[str, Any]]:
        """``scheduler.devices.list``: every board (Retired ones with ``show_all``)."""
        return [{"hostname": b["board"], "type": b["device_type"], "health": b["health"], "state": self._state(b),
                 "current_job": formats.shown_id(b["job"]) if b["job"] else None, "pipeline": True,
                 "online": b["state"] != "offline"}
                for b in self._boards() if show_all or b["health"] != "Retired"]

    def device(self, name: Any) -> dict[str, Any]:
        """``scheduler.devices.show``: what ``lavacli devices show`` prints."""
        board = next((b for b in self._boards() if b["board"] == name), None)
        if board is None:
            raise NotFound(f"Device '{name}' was not found.")
        return {"hostname": board["board"], "device_type": board["device_type"], "health": board["health"],
                "state": self._state(board), "description": board["description"],
                "health_job": bool(board["job"]) and self.r.hget(board_key(name), "hc_job") == board["job"],
                "last_health_report_job": self.r.hget(board_key(name), "hc_last_job") or None,
                "pipeline": True, "has_device_dict": True, "worker": board["host"] or board["worker"],
                "current_job": formats.shown_id(board["job"]) if board["job"] else None,
                "tags": sorted(board["tags"]), "permissions": [], "online": board["state"] != "offline",
                "worker_node": board["worker"]}

    def update_device(self, caller: Caller, name: Any, *, health: Any = None, description: Any = None,
                      reason: Any = None, worker: Any = None, device_type: Any = None) -> None:
        """``scheduler.devices.update``: health (recorded with who and why) and description; admins only."""
        require_admin(caller, f"change device {name}")
        if not isinstance(name, str) or not self.r.hexists(board_key(name), "device_type"):
            raise NotFound(f"Device '{name}' was not found.")
        if worker is not None or device_type is not None:
            raise BadRequest("a board's worker and device type are its worker's: restart its worker "
                             "(lava-dispatch worker --device ...) to change them")
        if health is not None:
            try:
                new = formats.device_health(health)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
            try:  # the lab's one rule (tasks.health.set_health): Good runs a health check first, ...
                self.lab.set_health(name, new, who=caller.user or "", reason=str(reason or "xmlrpc api"))
            except HealthError as exc:
                raise BadRequest(str(exc)) from None
            archive_health_changes(self.r, self.engine)  # the SQL history has it before the call returns
        if description is not None:
            self.r.hset(board_key(name), "description", str(description))

    def device_types(self) -> list[dict[str, Any]]:
        counts: dict[str, int] = {}
        for board in self.lab.boards():
            counts[board["device_type"]] = counts.get(board["device_type"], 0) + 1
        return [{"name": name, "devices": count, "installed": True, "template": True}
                for name, count in sorted(counts.items())]

    def tags(self) -> list[dict[str, Any]]:
        names = sorted({tag for board in self.lab.boards() for tag in board["tags"]})
        return [{"id": index, "name": name, "description": ""} for index, name in enumerate(names, 1)]

    def queued(self) -> int:
        return int(self.r.zcard(LAB.pending))


def _rejected(problems: list[str]) -> BadRequest:
    return BadRequest("Problem with submitted job data: " + "\n".join(problems), problems)


__all__ = ["LabService"]
