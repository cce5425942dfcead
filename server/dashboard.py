"""The dashboard: server-rendered pages of the lab (Jinja2, autoescaped), a little plain JavaScript, no build.

=============================  ===============================================================
``/``                          the job list: filters by state, health, device type, submitter; pages
``/scheduler/job/N``           a job: its details, definition, live log (SSE), results
``/scheduler/job/N/log``       the job's log as Server-Sent Events (``server.logstream``)
``/scheduler/alldevices``      the boards: health, state, worker, current job, last health check
``/scheduler/alldevices/rows`` the device table's rows alone (the page fetches them every 3 s)
``/scheduler/device/NAME``     a board, its health history, and (admins) the health-change form
``/scheduler/queue``           the queue per device type, and the types with no Good board
``/login``, ``/logout``        sign in with an API token (a cookie), sign out
=============================  ===============================================================

The pages anyone may read need no sign-in; a personal job's log, results
and definition are its submitter's and the admins' (as in the API). The
health-change form calls the same service operation as XML-RPC
``scheduler.devices.update``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from server import labview, logstream, webauth
from server.errors import ApiError, BadRequest
from server.identity import ANONYMOUS, Caller, may_see_everything
from server.jobs import HEALTHS, STATES
from server.service import LabService

HERE = Path(__file__).resolve().parent
PAGE = 50
# Our own templates (no sandbox needed), every value escaped: job names, messages and reasons are users' text.
templates = Jinja2Templates(env=jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")),
                                                   autoescape=True, trim_blocks=True, lstrip_blocks=True))
router = APIRouter(include_in_schema=False)
STATIC = {"dashboard.js": "text/javascript", "devices.js": "text/javascript", "dashboard.css": "text/css"}


def _lab(request: Request) -> LabService:
    found: LabService = request.app.state.service
    return found


def _page(request: Request, name: str, who: Caller, status: int = 200, **context: Any) -> HTMLResponse:
    answer: HTMLResponse = templates.TemplateResponse(
        request, name, {"who": who, "form_token": webauth.form_token(request), **context}, status_code=status)
    return answer


def _who(request: Request) -> Caller:
    return webauth.caller(request, _lab(request).engine)


@router.get("/static/{name}")
def static(name: str) -> Response:
    if name not in STATIC:
        return Response("not found", status_code=404)
    return Response((HERE / "static" / name).read_bytes(), media_type=STATIC[name],
                    headers={"Cache-Control": "public, max-age=300"})


@router.get("/", response_class=HTMLResponse)
def jobs(request: Request, state: str = "", health: str = "", device_type: str = "", submitter: str = "",
         offset: int = 0) -> HTMLResponse:
    who = _who(request)
    filters = {"state": state or None, "health": health or None, "device_type": device_type or None,
               "submitter": submitter or None}
    offset = max(offset, 0)
    try:
        count, page = _lab(request).jobs.listing(limit=PAGE, offset=offset, **filters)
        problem = ""
    except ValueError as exc:
        count, page, problem = 0, [], str(exc)
    kept = {k: v for k, v in filters.items() if v}

    def link(at: int) -> str:
        return "/?" + urlencode({**kept, "offset": at}) if at else "/?" + urlencode(kept)

    types = sorted({board["device_type"] for board in _lab(request).lab.boards()})
    return _page(request, "jobs.html", who, status=400 if problem else 200, jobs=page, count=count,
                 offset=offset, limit=PAGE, filters=filters, states=STATES, healths=HEALTHS, device_types=types,
                 problem=problem, previous=link(max(offset - PAGE, 0)) if offset else None,
                 next=link(offset + PAGE) if offset + PAGE < count else None)


@router.get("/scheduler/job/{job_id}", response_class=HTMLResponse)
def job(request: Request, job_id: str) -> HTMLResponse:
    who = _who(request)
    lab = _lab(request)
    found = lab.job(job_id)
    visible = may_see_everything(who, found)
    results = lab.jobs.results(found) if visible else []
    return _page(request, "job.html", who, job=found, visible=visible, results=results,
                 live=not found.finished and not found.archived)


@router.get("/scheduler/job/{job_id}/log")
async def job_log(request: Request, job_id: str) -> Response:
    lab = _lab(request)
    found = await run_in_threadpool(lab.job, job_id)
    who = await run_in_threadpool(_who, request)
    if not may_see_everything(who, found):
        return Response("this job's log is its submitter's", status_code=403)
    stream = logstream.events(found, lab.jobs, request.app.state.aredis(),
                              logstream.resume_from(request.headers.get("last-event-id")), request.is_disconnected,
                              request.app.state.stopping.is_set)
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _devices(lab: LabService) -> list[dict[str, Any]]:
    devices = lab.devices(show_all=True)
    checks = labview.last_health_checks([d["hostname"] for d in devices], lab.engine)
    for device in devices:
        device["last_check"] = checks.get(device["hostname"])
    return devices


@router.get("/scheduler/alldevices", response_class=HTMLResponse)
def devices(request: Request) -> HTMLResponse:
    who = _who(request)
    lab = _lab(request)
    found = _devices(lab)
    return _page(request, "devices.html", who, devices=found, queues=labview.queues(lab.r, found))


@router.get("/scheduler/alldevices/rows", response_class=HTMLResponse)
def device_rows(request: Request) -> HTMLResponse:
    """The device table's rows, rendered as on the page: the page replaces its rows with them (no reload)."""
    answer = _page(request, "devices_rows.html", _who(request), devices=_devices(_lab(request)))
    answer.headers["Cache-Control"] = "no-store"
    return answer


@router.get("/scheduler/queue", response_class=HTMLResponse)
def queue(request: Request) -> HTMLResponse:
    who = _who(request)
    lab = _lab(request)
    return _page(request, "queue.html", who, queues=labview.queues(lab.r, lab.devices(show_all=True)))


@router.get("/scheduler/device/{name}", response_class=HTMLResponse)
def device(request: Request, name: str, done: str = "") -> HTMLResponse:
    from server import archive

    who = _who(request)
    lab = _lab(request)
    found = lab.device(name)
    history = archive.health_history(found["hostname"], limit=50, engine=lab.engine)
    check = labview.last_health_checks([found["hostname"]], lab.engine).get(found["hostname"])
    return _page(request, "device.html", who, device=found, history=history, last_check=check,
                 healths=labview.DEVICE_HEALTHS, done=done == "1")


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form's fields (the first value of each), at most 64 KiB of it."""
    body = await request.body()
    if len(body) > 65536 or not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"):
        raise BadRequest("send the form as the page does (urlencoded, under 64 KiB)")
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}


@router.post("/scheduler/device/{name}/health")
async def change_health(request: Request, name: str) -> Response:
    form = await _form(request)
    webauth.check_form(request, form.get("form_token"))
    lab = _lab(request)
    who = await run_in_threadpool(_who, request)
    reason = form.get("reason", "").strip()
    if not reason:
        raise BadRequest("say why the health changes (the reason is kept in the board's history)")
    await run_in_threadpool(lambda: lab.update_device(who, name, health=form.get("health", ""), reason=reason))
    return RedirectResponse(f"/scheduler/device/{quote(name)}?done=1", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, problem: str = "") -> HTMLResponse:
    return _page(request, "login.html", _who(request), problem=problem)


@router.post("/login")
async def login(request: Request) -> Response:
    from server.auth import user_for_token

    token = (await _form(request)).get("token", "")
    if not webauth.same_origin(request):
        return Response("this form was sent from another site", status_code=403)
    engine = _lab(request).engine
    user = await run_in_threadpool(user_for_token, token.strip(), engine=engine) if token.strip() else None
    if user is None:
        return _page(request, "login.html", ANONYMOUS, status=401,
                     problem="no such token: make one with lava-dispatch tokens add USER")
    answer = RedirectResponse("/", status_code=303)
    answer.set_cookie(webauth.COOKIE, token.strip(), max_age=webauth.MAX_AGE, httponly=True, samesite="strict",
                      secure=webauth.secure(request), path="/")
    return answer


@router.post("/logout")
async def logout(request: Request) -> Response:
    webauth.check_form(request, (await _form(request)).get("form_token"))
    answer = RedirectResponse("/", status_code=303)
    answer.delete_cookie(webauth.COOKIE, path="/", httponly=True, samesite="strict")
    return answer


def error_page(request: Request, exc: ApiError) -> HTMLResponse:
    """A refusal on a dashboard page, as a page (the APIs answer theirs as JSON or XML-RPC faults)."""
    return _page(request, "error.html", webauth.caller(request, _lab(request).engine), status=exc.code,
                 message=exc.message)


def is_page(path: str) -> bool:
    return path == "/" or path.startswith(("/scheduler/", "/login", "/logout"))


__all__ = ["router", "error_page", "is_page"]
