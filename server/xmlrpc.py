"""LAVA's XML-RPC API at ``/RPC2``: the methods lavacli and SQUAD call, with LAVA's answers and faults.

Faults carry LAVA's codes: 400 bad request, 401 authentication needed, 403
not allowed, 404 not found; -32601 no such method, -32602 wrong arguments,
-32603 an internal error. Credentials that do not match a token are an HTTP
401 (as LAVA answers), not a fault. ``system.listMethods``,
``system.methodHelp`` and ``system.methodSignature`` describe the methods.
"""

from __future__ import annotations

import inspect
import logging
import xmlrpc.client
from collections.abc import Callable
from typing import Any

from server import formats
from server.errors import ApiError, BadRequest, Unauthorized, Unavailable, unavailable_reason
from server.identity import Caller, require_private_view, require_user
from server.service import LabService

log = logging.getLogger("lava-dispatch.xmlrpc")
VERSION = "2025.12"  # the LAVA release whose API this server answers as (lavacli chooses its calls by it)
MAX_BODY = 16 * 1024 * 1024
Method = Callable[..., Any]


class Context:
    def __init__(self, service: LabService, caller: Caller):
        self.service = service
        self.caller = caller


METHODS: dict[str, Method] = {}


def method(*names: str) -> Callable[[Method], Method]:
    """Register ``func`` under each name (LAVA's current name first, then its older aliases)."""
    def register(func: Method) -> Method:
        for name in names:
            METHODS[name] = func
        return func

    return register


# ---------------------------------------------------------------- system


@method("system.version")
def system_version(ctx: Context) -> str:
    """The LAVA version this server's API matches (``YYYY.MM``)."""
    return VERSION


@method("system.whoami")
def system_whoami(ctx: Context) -> str | None:
    """The authenticated user's name, or None."""
    return ctx.caller.user


@method("system.listMethods")
def system_list_methods(ctx: Context) -> list[str]:
    return sorted(METHODS)


@method("system.methodHelp")
def system_method_help(ctx: Context, name: str) -> str:
    func = METHODS.get(name)
    return inspect.getdoc(func) or "" if func else ""


@method("system.methodSignature")
def system_method_signature(ctx: Context, name: str) -> str:
    return "undef"


# ---------------------------------------------------------------- jobs


def _shown_ids(ids: list[str]) -> int | list[str]:
    """A single job's id as a number, a multinode job's member ids as they are."""
    return ids if "." in ids[0] else int(ids[0])


@method("scheduler.jobs.submit", "scheduler.submit_job")
def jobs_submit(ctx: Context, definition: Any) -> int | list[str]:
    """Submit a job (YAML text); its id, or a multinode job's member ids (``N.M``)."""
    return _shown_ids(ctx.service.submit(ctx.caller, definition))


@method("scheduler.jobs.resubmit", "scheduler.resubmit_job")
def jobs_resubmit(ctx: Context, job_id: Any) -> int | list[str]:
    """Submit one of your jobs again (admins: any job)."""
    return _shown_ids(ctx.service.resubmit(ctx.caller, job_id))


@method("scheduler.jobs.cancel")
def jobs_cancel(ctx: Context, job_id: Any) -> bool:
    """Cancel one of your jobs (admins: any job): a queued one at once, a running one within seconds."""
    ctx.service.cancel(ctx.caller, job_id)
    return True


@method("scheduler.cancel_job")
def cancel_job(ctx: Context, job_id: Any) -> bool:
    if job_id in (None, ""):
        raise BadRequest("Bad request: TestJob id was not specified.")
    canceled: bool = jobs_cancel(ctx, job_id)
    return canceled


@method("scheduler.jobs.show")
def jobs_show(ctx: Context, job_id: Any) -> dict[str, Any]:
    """The job's details: every field lavacli jobs show prints."""
    return formats.show(ctx.service.job(job_id))


@method("scheduler.jobs.definition")
def jobs_definition(ctx: Context, job_id: Any) -> str:
    """The job definition as submitted (a multinode job's whole definition)."""
    job = ctx.service.job(job_id)
    require_private_view(ctx.caller, job)
    return job.definition


@method("scheduler.jobs.logs")
def jobs_logs(ctx: Context, job_id: Any, start: Any = 0, end: Any = None) -> tuple[bool, xmlrpc.client.Binary]:
    """(finished, the log's lines ``start`` to ``end - 1`` as output.yaml text)."""
    job = ctx.service.job(job_id)
    require_private_view(ctx.caller, job)
    start, end = _line(start, "start"), None if end in (None, "") else _line(end, "end")
    lines = ctx.service.jobs.log_lines(job, start, end)
    text = "".join(line + "\n" for line in lines) if lines else "[]\n"
    return job.finished, xmlrpc.client.Binary(text.encode("utf-8"))


@method("scheduler.jobs.list")
def jobs_list(ctx: Context, state: Any = None, health: Any = None, start: Any = 0, limit: Any = 25,
              since: Any = None, verbose: Any = False) -> list[dict[str, Any]]:
    """Jobs, newest first (``state``, ``health``: LAVA's names, any case)."""
    filters = {"state": _choice(state, "state", formats.STATE_NUMBERS),
               "health": _choice(health, "health", formats.HEALTH_NUMBERS)}
    try:
        _, page = ctx.service.jobs.listing(limit=min(_line(limit, "limit"), 1000), offset=_line(start, "start"),
                                        **filters)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return [formats.listed(job) for job in page]


@method("scheduler.jobs.validate")
def jobs_validate(ctx: Context, definition: Any, strict: Any = False) -> dict[str, str]:
    """{} when the definition is valid, else {path, msg}: the first problem's place, and every problem."""
    problems = ctx.service.validate(definition, ctx.caller)
    if not problems:
        return {}
    path = problems[0].split(":", 1)[0] if ":" in problems[0] else ""
    return {"path": path, "msg": "\n".join(problems)}


def _job_field(ctx: Context, job_id: Any, field: str) -> dict[str, Any]:
    """``{job_id, job_<field>}`` (and ``sub_id`` for a multinode member), as LAVA answers."""
    job = ctx.service.job(job_id)
    answer: dict[str, Any] = {"job_id": formats.shown_id(job.id.split(".")[0]), f"job_{field}": getattr(job, field)}
    if "." in job.id:
        answer["sub_id"] = job.id
    return answer


@method("scheduler.job_state")
def job_state(ctx: Context, job_id: Any) -> dict[str, Any]:
    return _job_field(ctx, job_id, "state")


@method("scheduler.job_health")
def job_health(ctx: Context, job_id: Any) -> dict[str, Any]:
    return _job_field(ctx, job_id, "health")


@method("scheduler.job_details")
def job_details(ctx: Context, job_id: Any) -> dict[str, Any]:
    job = ctx.service.job(job_id)
    data = formats.details(job)
    if not _sees(ctx, job):
        data.update(definition="", original_definition="", multinode_definition="")
    return data


# ---------------------------------------------------------------- devices, device types, tags


@method("scheduler.devices.list")
def devices_list(ctx: Context, show_all: Any = False, offline_info: Any = False) -> list[dict[str, Any]]:
    """Every board: hostname, type, health, state, current_job."""
    return ctx.service.devices(bool(show_all))


@method("scheduler.devices.show")
def devices_show(ctx: Context, hostname: Any) -> dict[str, Any]:
    """A board's details: every field lavacli devices show prints."""
    return ctx.service.device(hostname)


@method("scheduler.devices.update")
def devices_update(ctx: Context, hostname: Any, worker_hostname: Any = None, user_name: Any = None,
                   group_name: Any = None, public: Any = True, health: Any = None, description: Any = None,
                   device_type: Any = None, reason: Any = None) -> None:
    """Change a board's health (recorded with who and why) or description; admins only."""
    ctx.service.update_device(ctx.caller, hostname, health=health, description=description, reason=reason,
                              worker=worker_hostname, device_type=device_type)


@method("scheduler.device_types.list")
def device_types_list(ctx: Context, show_all: Any = False) -> list[dict[str, Any]]:
    return ctx.service.device_types()


@method("scheduler.tags.list")
def tags_list(ctx: Context) -> list[dict[str, Any]]:
    return [{"name": tag["name"], "description": tag["description"]} for tag in ctx.service.tags()]


# ---------------------------------------------------------------- results


def _results(ctx: Context, job_id: Any, suite: str | None = None) -> str:
    require_user(ctx.caller)  # as LAVA: the results API needs a user
    if job_id in (None, ""):
        raise BadRequest("Bad request: TestJob id was not specified.")
    job = ctx.service.job(job_id)
    if not _sees(ctx, job):
        raise Unauthorized(f"Permission denied for user to job {job_id}")
    results = ctx.service.jobs.results(job)
    if suite is not None:
        results = [r for r in results if r["suite"] == suite]
        if not results:
            from server.errors import NotFound

            raise NotFound("Specified test suite not found.")
    return formats.results_yaml(formats.testcases(job.id, results, job.end_time))


@method("results.get_testjob_results_yaml")
def testjob_results_yaml(ctx: Context, job_id: Any) -> str:
    """Every test case of the job (the lava suite included), as YAML."""
    return _results(ctx, job_id)


@method("results.get_testsuite_results_yaml")
def testsuite_results_yaml(ctx: Context, job_id: Any, suite_name: Any, limit: Any = None,
                           offset: Any = None) -> str:
    text = _results(ctx, job_id, str(suite_name))
    if limit is None and offset is None:
        return text
    import yaml

    cases = yaml.safe_load(text) or []
    first = _line(offset or 0, "offset")
    return formats.results_yaml(cases[first:first + _line(limit, "limit")] if limit is not None else cases[first:])


@method("results.get_testcase_results_yaml")
def testcase_results_yaml(ctx: Context, job_id: Any, suite_name: Any, case_name: Any) -> str:
    """One test case of a suite (every result of that name), as YAML."""
    import yaml

    cases = [c for c in yaml.safe_load(_results(ctx, job_id, str(suite_name))) or [] if c["name"] == str(case_name)]
    if not cases:
        from server.errors import NotFound

        raise NotFound("Specified test case not found.")
    return formats.results_yaml(cases)


# ---------------------------------------------------------------- plumbing


def _sees(ctx: Context, job: Any) -> bool:
    from server.identity import may_see_everything

    return may_see_everything(ctx.caller, job)


def _line(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise BadRequest(f"{name}: {value!r} is not a whole number")
    return int(value)


def _choice(value: Any, name: str, allowed: dict[str, int]) -> str | None:
    if value in (None, ""):
        return None
    for choice in allowed:
        if str(value).lower() == choice.lower():
            return choice
    raise BadRequest(f"Invalid {name} '{value}'")


def fault(code: int, message: str) -> bytes:
    return xmlrpc.client.dumps(xmlrpc.client.Fault(code, message), methodresponse=True, allow_none=True).encode()


def dispatch(body: bytes, service: LabService, caller: Caller) -> bytes:
    """One XML-RPC call: the response document (a fault for any refusal; Unavailable when Redis or the
    database cannot be reached)."""
    try:
        params, name = xmlrpc.client.loads(body, use_builtin_types=False)
    except Exception:  # noqa: BLE001 - anything the parser refuses
        return fault(-32600, "Unable to decode request")
    func = METHODS.get(name or "")
    if func is None:
        return fault(-32601, f"Method {name!r} is not supported")
    try:
        inspect.signature(func).bind(None, *params)
    except TypeError as exc:
        return fault(-32602, f"{name}: {exc}")
    try:
        result = func(Context(service, caller), *params)
        return xmlrpc.client.dumps((result,), methodresponse=True, allow_none=True).encode()
    except ApiError as exc:
        return fault(exc.code, exc.message)
    except Exception as exc:  # noqa: BLE001 - the client gets a fault, the log gets the traceback
        reason = unavailable_reason(exc)
        if reason:  # an HTTP 503, which lavacli tries again
            log.warning("XML-RPC %s: %s: %s", name, reason, exc)
            raise Unavailable(reason) from None
        log.exception("XML-RPC %s failed", name)
        return fault(-32603, f"Internal error in {name}: {type(exc).__name__}")


__all__ = ["dispatch", "METHODS", "VERSION", "MAX_BODY", "fault"]
