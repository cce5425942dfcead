"""Submitting a job: what a submission may carry, its validation, its record, its placement.

Anything can arrive in a Celery message (``celery call`` takes any JSON), so
every argument of ``tasks.submit`` and of a job's chain tasks is checked for
its type before it is used; nothing is coerced (``"no"`` is not false,
``1.5`` is not a priority). A ``tasks.submit`` that is refused still leaves a
record saying why (``record_rejection``).

A submitted job is parsed once, and its pipeline built once on each distinct
device configuration of the boards of its device type: that is the
validation, and the action names it gives are kept in the job record
(``pipelines``) for whichever board the job lands on (``tasks.chains``).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from pipeline.errors import JobError
from tasks import chains, groups
from tasks.ids import is_job_id, member_id, require_group_id, require_job_id
from tasks.keys import LAB, JobState, job_key
from tasks.state import Assignment, LabState, SubmitError, Submitted, no_board_error

if TYPE_CHECKING:
    from pipeline.job import Job

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
    given = dict(zip(SUBMIT_PARAMETERS, args, strict=False))  # fewer args than parameters
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


def record_rejection(lab: LabState, job_id: str, definition: Any, message: str, client_ref: str = "") -> None:
    """A job refused by ``tasks.submit`` still gets a record, so ``status <id>`` says why."""
    key = job_key(job_id)
    if lab.r.exists(key):
        return
    now = int(time.time() * 1000)
    pipe = lab.r.pipeline()
    pipe.hset(key, mapping={"id": job_id, "name": "", "state": JobState.INCOMPLETE, "submitted": now, "ended": now,
                            "error_type": JobError.error_type, "error": message,
                            "definition": definition if isinstance(definition, str) else "",
                            "submitter": "celery", "client_ref": client_ref})
    pipe.expire(key, lab.keep_s)
    pipe.zadd(LAB.jobs, {job_id: now})  # listed by `lava-dispatch status` like any job
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


def priority_value(value: str | int | None) -> int | None:
    """A priority given outside the job file, by the job file's own rule; None: the job's own."""
    from pipeline.job import job_priority

    if value is None:
        return None
    try:
        return job_priority(value)
    except ValueError as exc:
        raise SubmitError(str(exc)) from None


def validate_for_type(lab: LabState, job: Job, device_type: str,
                      role: str | None = None) -> tuple[list[str], chains.PipelineNames, dict[str, str]]:
    """Build the job's pipeline on each distinct device config of the type's boards.

    (the problems found, device sha -> the action names, board -> device sha).
    """
    from pipeline.builder import build_pipeline
    from pipeline.errors import ProblemList

    shas = lab.type_board_shas(device_type)
    names: chains.PipelineNames = {}
    problems: list[str] = []
    for board, sha in shas.items():
        if sha in names:
            continue
        names[sha] = []
        try:
            device = lab.device_of(board, sha)
            built = build_pipeline(job, device, role)
            names[sha] = [a.name for a in built.pipeline.actions]
        except ProblemList as exc:
            problems += [f"{p} (on board {board})" if len(names) > 1 else p for p in exc.problems]
    return problems, names, shas


def submit(lab: LabState, text: str, *, priority: str | int | None = None, queue_anyway: bool = False,
           submitter: str = "", dispatch: bool = True, job: Job | None = None, client_ref: str = "",
           job_id: str | None = None, visibility: str = "", health_check_board: str | None = None) -> Submitted:
    """Validate, record and place (or queue) a job under a new id. Raises ProblemList or SubmitError.

    ``client_ref`` (a ``celery call``'s task id) is only stored in the
    record; ``job_id``: an id this lab already assigned (``new_id``);
    ``visibility``: ``public`` or ``personal`` (the lab server's reading of the job's ``visibility:``);
    ``health_check_board``: the job is that board's health check (record ``health_check``), placed on it only.
    """
    from pipeline.errors import ProblemList
    from pipeline.parser import parse_job

    prio = priority_value(priority)
    job = job or parse_job(text)
    if job.multinode and job.multinode.subjob:
        raise ProblemList(["protocols.lava-multinode.role: this is one member's sub-job (the form lava-server "
                           "hands to lava-run): submit the multinode job with all its roles"])
    if job.multinode and not health_check_board:
        return submit_group(lab, text, job, priority=prio, queue_anyway=queue_anyway, submitter=submitter,
                            dispatch=dispatch, client_ref=client_ref, group_id=job_id, visibility=visibility)
    device_type = job.header.device_type or ""
    problems, names, shas = validate_for_type(lab, job, device_type)
    if problems:
        raise ProblemList(problems)
    job_id = require_job_id(job_id) if job_id else lab.new_id()
    if prio is None:
        prio = job.header.priority
    need: dict[str, Any] = {"job": job_id, "device_type": device_type, "tags": list(job.header.tags)}
    fields = {"id": job_id, "name": job.name, "device_type": device_type, "tags": json.dumps(job.header.tags),
              "definition": text, "submitter": submitter, "timeout": job.header.timeouts.job,
              "client_ref": client_ref, "visibility": visibility, "pipelines": json.dumps(names)}
    queue_timeout = job.header.timeouts.queue or 0
    if queue_timeout:
        fields["queue_timeout"] = f"{queue_timeout:g}"
    if health_check_board:
        if job.multinode:
            raise SubmitError("a health check is a single job, not a multinode one")
        need.update(board=health_check_board, health_check=True)
        fields.update(health_check="1", health_board=health_check_board)
    answer = lab.call("submit", job_id, json.dumps(fields), json.dumps([need]), prio, int(queue_anyway), device_type,
                      int(queue_timeout * 1000))
    kind = answer[0]
    if kind == "exists":
        raise SubmitError(f"a job with id {job_id} already exists")
    if kind == "checking":
        raise SubmitError(f"board {health_check_board}'s health check job {answer[1]} is queued or running")
    if kind == "noboard":
        raise no_board_error(answer[1], "job")
    assignments = Assignment.many(answer[1])
    if dispatch and assignments:
        chains.dispatch(lab, assignments, jobs={job_id: job}, pipelines={job_id: names}, board_shas=shas)
    board = next((a.board for a in assignments if a.job == job_id), None)
    return Submitted(job_id, JobState.SCHEDULED if board else JobState.SUBMITTED, board, assignments)


def submit_group(lab: LabState, text: str, job: Job, *, priority: int | None, queue_anyway: bool, submitter: str,
                 dispatch: bool, client_ref: str = "", group_id: str | None = None,
                 visibility: str = "") -> Submitted:
    """A multinode job: one sub-job per member (role x count), placed all together or queued together.

    Every board of the group is reserved in one script before any sub-job
    starts, so two groups can never each hold half of the boards they need.
    """
    from pipeline.errors import ProblemList
    from pipeline.multinode_local import members_of

    assert job.multinode is not None
    roles = job.multinode.roles
    problems: list[str] = []
    names: dict[str, chains.PipelineNames] = {}
    shas: dict[str, str] = {}
    for role, spec in roles.items():
        found, names[role], type_shas = validate_for_type(lab, job, spec.device_type or "", role)
        problems += [f"{p} (role {role})" for p in found]
        shas.update(type_shas)
    if problems:
        raise ProblemList(problems)
    group_id = require_group_id(group_id) if group_id else lab.new_id()
    prio = job.header.priority if priority is None else priority
    members = members_of(job)
    needs: list[dict[str, Any]] = []
    fields: dict[str, dict[str, Any]] = {}
    sub_jobs: dict[str, str] = {}
    for index, (member, role) in enumerate(members.items()):
        sub_job = sub_jobs[member] = member_id(group_id, index)
        spec = roles[role]
        needs.append({"job": sub_job, "device_type": spec.device_type, "tags": list(spec.tags)})
        fields[sub_job] = {"id": sub_job, "name": f"{job.name} [{member}]", "device_type": spec.device_type,
                           "tags": json.dumps(spec.tags), "definition": text, "submitter": submitter,
                           "timeout": job.header.timeouts.job, "role": role, "member": member,
                           "client_ref": client_ref, "visibility": visibility,
                           "pipelines": json.dumps(names[role])}
    group_fields = {"id": group_id, "name": job.name, "submitter": submitter, "client_ref": client_ref,
                    "members": json.dumps({sub_jobs[m]: r for m, r in members.items()})}
    queue_timeout = job.header.timeouts.queue or 0
    if queue_timeout:
        group_fields["queue_timeout"] = f"{queue_timeout:g}"
    device_types = sorted({need["device_type"] for need in needs})
    groups.coordinator(lab).create_group(group_id, members)
    answer = lab.call("submit_group", group_id, json.dumps(group_fields), json.dumps(needs), prio,
                      int(queue_anyway), json.dumps(fields), json.dumps(device_types), int(queue_timeout * 1000))
    if answer[0] == "exists":
        raise SubmitError(f"a group with id {group_id} already exists")
    if answer[0] == "noboard":
        groups.coordinator(lab).end_group(group_id)
        raise no_board_error(answer[1], "group")
    assignments = Assignment.many(answer[1])
    if dispatch and assignments:
        role_of = {sub_jobs[m]: r for m, r in members.items()}
        chains.dispatch(lab, assignments, jobs={a.job: job for a in assignments},
                        pipelines={a.job: names[role_of[a.job]] for a in assignments}, board_shas=shas)
    return Submitted(group_id, JobState.SCHEDULED if assignments else JobState.SUBMITTED, None, assignments,
                     members=[need["job"] for need in needs])


__all__ = ["submit_arguments", "client_ref_of", "record_rejection", "chain_arguments_problem", "priority_value",
           "validate_for_type", "submit", "submit_group"]
