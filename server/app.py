"""The lab server's ASGI application: XML-RPC at ``/RPC2``, REST at ``/api/v0.2/``, a job list at ``/``, ``/metrics``.

``create_app()`` builds it on the lab of ``LAVA_DISPATCH_REDIS_URL`` and the
archive of ``LAVA_DISPATCH_DATABASE_URL``; ``lava-dispatch server`` serves it
with uvicorn. The OpenAPI document of the REST API is
``/api/v0.2/openapi.json`` (and its browsable form ``/api/v0.2/docs``).
"""

from __future__ import annotations

import html
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from server import identity, rest, xmlrpc
from server.errors import ApiError, Unavailable, unavailable_reason
from server.service import LabService


def create_app(service: LabService | None = None) -> FastAPI:
    app = FastAPI(title="lava-dispatch lab server", version=xmlrpc.VERSION,
                  description="LAVA's REST API v0.2 as this lab serves it. XML-RPC (lavacli) is at /RPC2.",
                  openapi_url="/api/v0.2/openapi.json", docs_url="/api/v0.2/docs", redoc_url=None)
    if service is None:
        from server.db import get_engine

        service = LabService(engine=get_engine())
    app.state.service = service

    def authenticate(request: Request) -> identity.Caller:
        caller = identity.from_authorization(request.headers.get("authorization"), service.engine)
        request.state.caller = caller
        return caller

    app.include_router(rest.router, dependencies=[Depends(authenticate)])

    @app.exception_handler(ApiError)
    async def refused(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Token"} if exc.code == 401 else None
        body: dict[str, Any] = {"detail": exc.message, "message": exc.message}
        if exc.problems:
            body["problems"] = exc.problems
        return JSONResponse(body, status_code=exc.code, headers=headers)

    def unreachable(request: Request, exc: Exception) -> JSONResponse:
        reason = unavailable_reason(exc) or "the server cannot answer now"
        return JSONResponse({"detail": reason, "message": reason}, status_code=503, headers={"Retry-After": "5"})

    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from sqlalchemy.exc import OperationalError

    for kind in (RedisConnectionError, RedisTimeoutError, OperationalError):
        app.add_exception_handler(kind, unreachable)

    @app.post("/RPC2", include_in_schema=False)
    @app.post("/RPC2/", include_in_schema=False)
    async def rpc(request: Request) -> Response:
        body = await request.body()
        if len(body) > xmlrpc.MAX_BODY:
            return Response(xmlrpc.fault(400, "the request is too large"), media_type="text/xml")
        header = request.headers.get("authorization")

        def call() -> bytes:
            return xmlrpc.dispatch(body, service, identity.from_basic(header, service.engine))

        try:
            answer = await run_in_threadpool(call)
        except identity.InvalidCredentials as exc:
            return PlainTextResponse(exc.message, status_code=401,
                                     headers={"WWW-Authenticate": 'Basic realm="XML-RPC Authentication token"'})
        except Unavailable as exc:
            return PlainTextResponse(exc.message, status_code=503, headers={"Retry-After": "5"})
        except Exception as exc:  # noqa: BLE001 - authenticating needs the database
            reason = unavailable_reason(exc)
            if reason is None:
                raise
            return PlainTextResponse(reason, status_code=503, headers={"Retry-After": "5"})
        return Response(answer, media_type="text/xml")

    @app.get("/RPC2", include_in_schema=False)
    def rpc_page() -> PlainTextResponse:
        return PlainTextResponse("XML-RPC endpoint: POST calls here (lavacli --uri http://USER:TOKEN@HOST/RPC2)")

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        count, page = service.jobs.listing(limit=50)
        rows = "".join(
            f"<tr><td>{html.escape(job.id)}</td><td>{html.escape(job.state)}</td><td>{html.escape(job.health)}</td>"
            f"<td>{html.escape(job.device_type or '')}</td><td>{html.escape(job.device or '')}</td>"
            f"<td>{html.escape(job.submitter or '')}</td><td>{html.escape(job.description)}</td></tr>"
            for job in page)
        return HTMLResponse(
            "<!doctype html><html><head><meta charset='utf-8'><title>lava-dispatch</title></head><body>"
            f"<h1>lava-dispatch lab</h1><p>{count} jobs (the 50 newest). API: <a href='/api/v0.2/'>REST</a>, "
            "<a href='/api/v0.2/docs'>its documentation</a>, XML-RPC at /RPC2.</p>"
            "<table border='1' cellpadding='3'><tr><th>job</th><th>state</th><th>health</th><th>type</th>"
            f"<th>board</th><th>submitter</th><th>description</th></tr>{rows}</table></body></html>")

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> PlainTextResponse:
        boards = service.lab.boards()
        lines = ["# HELP lava_dispatch_boards Registered boards by state.", "# TYPE lava_dispatch_boards gauge"]
        for state in ("idle", "busy", "offline"):
            lines.append(f'lava_dispatch_boards{{state="{state}"}} {sum(b["state"] == state for b in boards)}')
        lines += ["# HELP lava_dispatch_queued_jobs Jobs waiting for a board.",
                  "# TYPE lava_dispatch_queued_jobs gauge", f"lava_dispatch_queued_jobs {service.queued()}"]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    return app


__all__ = ["create_app"]
