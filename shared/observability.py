"""Structured logs, Prometheus metrics and the health endpoints every service serves.

Logs are JSON lines via structlog. Request logs name the route *template*
(``/v1/pupils/{upn}/care``), never the concrete path, query or body, so no pupil identifier or
personal data reaches a log.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("rollcall_http_requests_total", "HTTP requests", ["service", "method", "route", "status"])
LATENCY = Histogram(
    "rollcall_http_request_seconds",
    "HTTP request latency",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

log = structlog.get_logger()


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error (asyncpg's own, or wrapped by SQLAlchemy), if any."""
    for err in (exc, getattr(exc, "orig", None)):
        code = getattr(err, "sqlstate", None) or getattr(err, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def error_fields(exc: BaseException) -> dict[str, str]:
    """What a log may say about a failure: the exception's type and, for a database error, the
    driver's error class and SQLSTATE (e.g. ``TooManyConnectionsError``/``53300``). Never the
    message: it can quote SQL parameters (UPNs, marks) or request data."""
    fields = {"error_type": type(exc).__name__}
    orig = getattr(exc, "orig", None)
    if orig is not None:
        cause = orig.__cause__ or orig
        fields["cause"] = type(cause).__name__
        code = sqlstate(exc)
        if code is not None:
            fields["sqlstate"] = code
    return fields


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level.upper())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # uvicorn's access log prints raw paths (which carry UPNs): ours replaces it. httpx logs every
    # request's URL at INFO (the dashboard's calls to legal and notifications carry UPNs): warnings only.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


class RequestMetrics:
    """ASGI middleware: one log line and metrics per request, by route template."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            elapsed = time.perf_counter() - start
            method = scope["method"]
            REQUESTS.labels(self.service, method, route, str(status)).inc()
            LATENCY.labels(self.service, method, route).observe(elapsed)
            principal = scope.get("state", {}).get("principal")
            log.info(
                "request",
                method=method,
                route=route,
                status=status,
                ms=round(elapsed * 1000, 2),
                client=getattr(principal, "sub", None),
            )


def health_router(readiness: Callable[[Request], Awaitable[dict[str, str]]]) -> APIRouter:
    """``/healthz`` (alive, no I/O), ``/readyz`` (dependencies reachable, else 503), ``/metrics``."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    readiness_doc: dict[str, Any] = {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }

    @router.get(
        "/readyz",
        responses={
            200: {"content": {"application/json": {"schema": readiness_doc}}},
            503: {
                "description": "A dependency is unreachable",
                "content": {"application/json": {"schema": readiness_doc}},
            },
        },
    )
    async def readyz(request: Request) -> Response:
        checks = await readiness(request)
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
        )

    @router.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def install(app: FastAPI, service: str) -> None:
    app.add_middleware(RequestMetrics, service=service)
