"""LAVA's REST API v0.2 at ``/api/v0.2/``: jobs, their logs and results, devices, device types, tags.

Lists are DRF pages, ``{count, next, previous, results}``, chosen by
``limit`` (default 50, at most 1000) and ``offset``. ``Authorization: Token
<secret>`` (or HTTP basic) authenticates; a wrong token is 401 on every
route, none reads what is public. Submitting is ``POST jobs/`` with
``{"definition": "<yaml>"}`` (JSON or a form): 201 ``{"job_ids": [...]}``, or
400 with the validator's lines (``message``, and one per item in
``problems``). Job ids are numbers or text (``42``, ``"42"``, ``42.1``).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from server import formats
from server.identity import Caller, may_see_everything, require_private_view
from server.service import LabService
from server.xmlrpc import VERSION

PAGE, MAX_PAGE = 50, 1000


class Json(JSONResponse):
    """JSON as it is (FastAPI's encoder walk of a returned dict costs more than the query of a page)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, default=str, separators=(",", ":")).encode("utf-8")


async def service(request: Request) -> LabService:  # async: no thread hop for what never blocks
    found: LabService = request.app.state.service
    return found


async def caller(request: Request) -> Caller:
    found: Caller = request.state.caller
    return found


router = APIRouter(prefix="/api/v0.2", tags=["LAVA REST API v0.2"], default_response_class=Json)
Service = Depends(service)
Who = Depends(caller)


def _page_args(request: Request) -> tuple[int, int]:
    def number(name: str, default: int) -> int:
        text = request.query_params.get(name)
        if text is None or text == "":
            return default
        if not text.isdigit():
            from server.errors import BadRequest

            raise BadRequest(f"{name}: {text!r} is not a whole number")
        return int(text)

    return min(number("limit", PAGE), MAX_PAGE), number("offset", 0)


def _page(request: Request, count: int, items: list[Any], limit: int, offset: int) -> dict[str, Any]:
    def link(at: int) -> str:
        query = dict(request.query_params)
        query.update(limit=str(limit), offset=str(at))
        return f"{str(request.url).split('?')[0]}?{urlencode(query)}"

    return {"count": count, "next": link(offset + limit) if offset + limit < count else None,
            "previous": link(max(offset - limit, 0)) if offset > 0 else None, "results": items}


def _local_page(request: Request, items: list[Any]) -> dict[str, Any]:
    limit, offset = _page_args(request)
    return _page(request, len(items), items[offset:offset + limit], limit, offset)


async def _definition(request: Request) -> Any:
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            from server.errors import BadRequest

            raise BadRequest("the body is not JSON") from None
        return body.get("definition") if isinstance(body, dict) else None
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
        values = form.get("definition")
        return values[0] if values else None
    from server.errors import BadRequest

    raise BadRequest("send the definition as JSON ({\"definition\": \"<yaml>\"}) or as a urlencoded form")


@router.get("/", summary="The API's collections")
def root(request: Request) -> dict[str, str]:
    base = str(request.url).rstrip("/")
    return {name: f"{base}/{name}/" for name in ("jobs", "devices", "devicetypes", "tags", "system")}


@router.get("/system/version/", summary="The LAVA version this API matches")
def system_version() -> dict[str, str]:
    return {"version": VERSION}


@router.get("/jobs/", summary="Jobs, newest first")
def jobs(request: Request, lab: LabService = Service, who: Caller = Who) -> Json:
    limit, offset = _page_args(request)
    params = request.query_params
    filters = {"state": params.get("state"), "health": params.get("health"), "submitter": params.get("submitter"),
               "device_type": params.get("requested_device_type") or params.get("device_type"),
               "device": params.get("actual_device")}
    for name in ("state", "health"):
        value = filters[name]
        if value:
            filters[name] = value.capitalize()
    try:
        count, page = lab.jobs.listing(limit=limit, offset=offset, **filters)
    except ValueError as exc:
        from server.errors import BadRequest

        raise BadRequest(str(exc)) from None
    return Json(_page(request, count, [formats.rest_job(job, definition=False) for job in page], limit, offset))


@router.post("/jobs/", status_code=201, summary="Submit a job: {\"definition\": \"<yaml>\"}")
async def submit(request: Request, lab: LabService = Service, who: Caller = Who) -> Json:
    from starlette.concurrency import run_in_threadpool

    definition = await _definition(request)
    ids = await run_in_threadpool(lab.submit, who, definition)
    return Json({"message": "job(s) successfully submitted", "job_ids": [formats.shown_id(i) for i in ids]},
                status_code=201)


@router.post("/jobs/validate/", summary="Check a job definition")
async def validate(request: Request, lab: LabService = Service, who: Caller = Who) -> dict[str, Any]:
    from starlette.concurrency import run_in_threadpool

    problems = await run_in_threadpool(lab.validate, await _definition(request), who)
    if not problems:
        return {"message": "Job valid."}
    return {"message": "Job invalid: " + "\n".join(problems), "problems": problems}


@router.get("/jobs/{job_id}/", summary="A job")
def job(job_id: str, lab: LabService = Service, who: Caller = Who) -> Json:
    found = lab.job(job_id)
    return Json(formats.rest_job(found, definition=may_see_everything(who, found)))


@router.get("/jobs/{job_id}/logs/", summary="The job's log (output.yaml lines start to end - 1)")
def logs(job_id: str, request: Request, lab: LabService = Service, who: Caller = Who) -> Response:
    found = lab.job(job_id)
    require_private_view(who, found)
    start = _int(request.query_params.get("start"), 0)
    end = request.query_params.get("end")
    lines = lab.jobs.log_lines(found, start, None if end in (None, "") else _int(end, 0))
    return PlainTextResponse("".join(line + "\n" for line in lines), media_type="application/yaml",
                             headers={"Content-Disposition": f"attachment; filename=job_{found.id}.yaml"})


def _results(job_id: str, lab: LabService, who: Caller) -> tuple[Any, list[dict[str, Any]]]:
    found = lab.job(job_id)
    require_private_view(who, found)
    return found, lab.jobs.results(found)


@router.get("/jobs/{job_id}/junit/", summary="The job's results as JUnit XML")
def junit(job_id: str, lab: LabService = Service, who: Caller = Who) -> Response:
    from pipeline.results import junit_xml

    found, results = _results(job_id, lab, who)
    return Response(junit_xml(results, found.description or found.id), media_type="application/xml",
                    headers={"Content-Disposition": f"attachment; filename=job_{found.id}.xml"})


@router.get("/jobs/{job_id}/tap13/", summary="The job's results as TAP 13")
def tap13(job_id: str, lab: LabService = Service, who: Caller = Who) -> Response:
    found, results = _results(job_id, lab, who)
    return PlainTextResponse(formats.tap13(results), media_type="application/yaml")


@router.get("/jobs/{job_id}/suites/", summary="The job's test suites")
def suites(job_id: str, request: Request, lab: LabService = Service, who: Caller = Who) -> Json:
    found, results = _results(job_id, lab, who)
    names = list(dict.fromkeys(str(r["suite"]) for r in results))
    return Json(_local_page(request, [{"id": index, "name": name, "job": formats.shown_id(found.id)}
                                      for index, name in enumerate(names, 1)]))


@router.get("/jobs/{job_id}/tests/", summary="The job's test cases")
def tests(job_id: str, request: Request, lab: LabService = Service, who: Caller = Who) -> Json:
    found, results = _results(job_id, lab, who)
    cases = [formats.rest_testcase(found.id, case) for case in formats.testcases(found.id, results, found.end_time)]
    if request.query_params.get("suite"):
        cases = [case for case in cases if case["suite"] == request.query_params["suite"]]
    return Json(_local_page(request, cases))


@router.api_route("/jobs/{job_id}/cancel/", methods=["GET", "POST"], summary="Cancel a job")
def cancel(job_id: str, lab: LabService = Service, who: Caller = Who) -> dict[str, str]:
    lab.cancel(who, job_id)
    return {"message": "Job cancel signal sent."}


@router.post("/jobs/{job_id}/resubmit/", status_code=201, summary="Submit a job again")
def resubmit(job_id: str, lab: LabService = Service, who: Caller = Who) -> dict[str, Any]:
    ids = lab.resubmit(who, job_id)
    return {"message": "job(s) successfully submitted", "job_ids": [formats.shown_id(i) for i in ids]}


def _rest_device(device: dict[str, Any]) -> dict[str, Any]:
    return {"hostname": device["hostname"], "device_type": device["device_type"], "device_version": None,
            "physical_owner": None, "physical_group": None, "description": device["description"],
            "tags": device["tags"], "state": device["state"], "health": device["health"],
            "last_health_report_job": device.get("last_health_report_job"), "worker_host": device["worker"],
            "is_synced": True,
            "current_job": device["current_job"], "online": device["online"]}


@router.get("/devices/", summary="The lab's boards")
def devices(request: Request, lab: LabService = Service) -> dict[str, Any]:
    return _local_page(request, [_rest_device(lab.device(d["hostname"])) for d in lab.devices(show_all=True)])


@router.get("/devices/{hostname}/", summary="A board")
def device(hostname: str, lab: LabService = Service) -> dict[str, Any]:
    return _rest_device(lab.device(hostname))


@router.api_route("/devices/{hostname}/", methods=["PUT", "PATCH"],
                  summary="Change a board's health (with a reason) or description: {\"health\": \"Maintenance\"}")
async def update_device(hostname: str, request: Request, lab: LabService = Service,
                        who: Caller = Who) -> dict[str, Any]:
    from starlette.concurrency import run_in_threadpool

    from server.errors import BadRequest

    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("send a JSON object: health, reason, description")
    await run_in_threadpool(lambda: lab.update_device(who, hostname, health=body.get("health"),
                                                      description=body.get("description"),
                                                      reason=body.get("reason") or "rest api"))
    return _rest_device(lab.device(hostname))


@router.get("/devicetypes/", summary="The device types the lab's boards have")
def device_types(request: Request, lab: LabService = Service) -> dict[str, Any]:
    return _local_page(request, [{"name": t["name"], "architecture": None, "processor": None, "cpu_model": None,
                                  "aliases": [], "bits": None, "cores": [], "core_count": None, "description": "",
                                  "health_frequency": 24, "disable_health_check": True,
                                  "health_denominator": "hours", "display": True, "devices": t["devices"]}
                                 for t in lab.device_types()])


@router.get("/tags/", summary="The boards' tags")
def tags(request: Request, lab: LabService = Service) -> dict[str, Any]:
    return _local_page(request, lab.tags())


def _int(text: Any, default: int) -> int:
    if text in (None, ""):
        return default
    if not str(text).isdigit():
        from server.errors import BadRequest

        raise BadRequest(f"{text!r} is not a whole number")
    return int(text)


__all__ = ["router"]
