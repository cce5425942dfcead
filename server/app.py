"""The lab server's ASGI application: XML-RPC at ``/RPC2``, REST at ``/api/v0.2/``, the dashboard at ``/``,
``/metrics`` (Prometheus) and ``/v1/healthz`` (LAVA's).

``create_app()`` builds it on the lab of ``LAVA_DISPATCH_REDIS_URL`` and the
archive of ``LAVA_DISPATCH_DATABASE_URL``; ``lava-dispatch server`` serves it
with uvicorn. The OpenAPI document of the REST API is
``/api/v0.2/openapi.json`` (and its browsable form ``/api/v0.2/docs``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from server import dashboard, identity, metrics, rest, xmlrpc
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
    async def refused(request: Request, exc: ApiError) -> Response:
        if dashboard.is_page(request.url.path):
            return await run_in_threadpool(dashboard.error_page, request, exc)
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

    found, latency = metrics.registry(service)
    app.add_middleware(metrics.LatencyMiddleware, histogram=latency)

    @app.get("/metrics", include_in_schema=False)
    def metrics_page() -> Response:
        return Response(metrics.render(found), media_type=metrics.CONTENT_TYPE)

    @app.get("/v1/healthz", include_in_schema=False)
    @app.get("/v1/healthz/", include_in_schema=False)
    def healthz() -> JSONResponse:
        """LAVA's: ``{"health": "good"}``, or HTTP 500 with ``bad`` and why (the database or Redis away)."""
        try:
            from sqlalchemy import text

            from server.db import session

            with session(service.engine) as s:
                s.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - any failure is the answer
            return JSONResponse({"health": "bad", "error": "database connection lost"}, status_code=500)
        try:
            service.r.ping()
        except Exception:  # noqa: BLE001
            return JSONResponse({"health": "bad", "error": "redis connection lost"}, status_code=500)
        return JSONResponse({"health": "good"})

    app.include_router(dashboard.router)
    app.state.aredis = _async_redis(service)
    app.state.stopping = threading.Event()  # set when the server stops: open log streams end

    return app


def _async_redis(service: LabService) -> Callable[[], Any]:
    """The app's asyncio Redis client, made on first use (in the event loop that serves the log streams)."""
    made: list[Any] = []

    def get() -> Any:
        if not made:
            import redis.asyncio

            from tasks.config import redis_target

            target = redis_target(service.lab.url)
            made.append(redis.asyncio.Redis.from_url(target.url, decode_responses=True, socket_timeout=30,
                                                     socket_connect_timeout=5, **(target.ssl or {})))
        return made[0]

    return get


__all__ = ["create_app"]
