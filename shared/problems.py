"""RFC 9457 problem details: every error a client sees, in one shape, never a 500 for bad input."""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from shared.observability import error_fields

PROBLEM_JSON = "application/problem+json"
log = structlog.get_logger()


def problem_type(slug: str) -> str:
    """A stable URN naming the kind of problem (documented in the README)."""
    return f"urn:rollcall:problem:{slug}"


class Problem(Exception):
    """An error answered as ``application/problem+json``; raise it anywhere in a request."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str = "",
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": problem_type(self.slug),
            "title": self.title,
            "status": self.status,
            "detail": self.detail or self.title,
        }
        if instance:
            body["instance"] = instance
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


# The documented shape of every problem body (RFC 9457 members plus this API's ``errors``); extra
# members (``rule``, ``retry_after``...) are allowed.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "field", "code", "detail"],
                "properties": {
                    "index": {"type": ["integer", "null"]},
                    "field": {"type": ["string", "null"]},
                    "code": {"type": "string"},
                    "detail": {"type": "string"},
                },
            },
        },
    },
}


def problem_responses(described: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a router: each status answered as a problem, with its meaning."""
    return {
        status: {"description": d, "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}}}
        for status, d in described.items()
    }


def problem_response(problem: Problem, instance: str | None = None) -> Response:
    return Response(
        orjson.dumps(problem.body(instance)),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


_STATUS_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation", "Request body is not valid"),
    429: ("rate-limited", "Too many requests"),
    503: ("unavailable", "Service unavailable"),
}


def validation_errors(exc_errors: Any) -> list[dict[str, Any]]:
    """Pydantic's error list as the contract's ``{index, field, code, detail}`` entries."""
    out: list[dict[str, Any]] = []
    for err in exc_errors:
        parts = [p for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        loc = [str(p) for p in parts]
        # List positions are ints in pydantic's loc; a field *named* like a number ("1", "¹") is not
        # an index (int("¹") raised here: schemathesis found it).
        index = next((p for p in parts if isinstance(p, int)), None)
        out.append(
            {
                "index": index,
                "field": ".".join(loc),
                "code": err.get("type", "invalid"),
                "detail": err.get("msg", "invalid value"),
            }
        )
    return out


def install_problem_handlers(app: FastAPI) -> None:
    """Map every exception a request can raise to a problem response."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return problem_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = validation_errors(exc.errors())
        json_invalid = any(e["code"] == "json_invalid" for e in errors)
        if json_invalid:
            problem = Problem(
                400, "malformed-json", "Body is not valid JSON", "the request body could not be parsed"
            )
        else:
            problem = Problem(
                422, "validation", "Request is not valid", f"{len(errors)} invalid field(s)", errors=errors
            )
        return problem_response(problem, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        slug, title = _STATUS_SLUGS.get(exc.status_code, ("error", "Error"))
        detail = exc.detail if isinstance(exc.detail, str) else title
        headers = dict(exc.headers or {})
        return problem_response(
            Problem(exc.status_code, slug, title, detail, headers=headers), request.url.path
        )

    # Registered for these classes (not only through ``Exception``) so that Starlette's
    # ExceptionMiddleware answers them: an ``Exception`` handler runs in ServerErrorMiddleware,
    # which re-raises afterwards and uvicorn then logs the whole traceback, whose SQL
    # parameters carry pupils' UPNs and marks (found by the fault suite, PostgreSQL restarts).
    @app.exception_handler(DBAPIError)
    @app.exception_handler(OSError)
    async def _unavailable(request: Request, exc: Exception) -> Response:
        """The database (or a connection to it) went away: 503, retry shortly (it is restarting,
        failing over or the pool is reconnecting); a client re-sends, writes are idempotent."""
        lost = isinstance(exc, OSError) or (
            isinstance(exc, DBAPIError)
            and (exc.connection_invalidated or isinstance(exc.orig, OSError) or _is_unavailable(exc.orig))
        )
        event = "database_error" if lost else "unhandled_error"
        log.error(event, **error_fields(exc), route=_route(request))
        if lost:
            return problem_response(
                Problem(503, "unavailable", "Service unavailable", "the database is unavailable; retry",
                        headers={"Retry-After": "1"}),
                request.url.path,
            )  # fmt: skip
        return problem_response(
            Problem(500, "internal", "Internal error", "the server could not complete the request"),
            request.url.path,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # The failure is logged with its type only: exception text can carry request data.
        log.error("unhandled_error", **error_fields(exc), route=_route(request))
        return problem_response(
            Problem(500, "internal", "Internal error", "the server could not complete the request"),
            request.url.path,
        )


def _is_unavailable(orig: BaseException | None) -> bool:
    """asyncpg's (wrapped) errors of a server shutting down, starting up or gone."""
    names = {type(e).__name__ for e in (orig, getattr(orig, "__cause__", None)) if e is not None}
    return bool(names & _UNAVAILABLE)


_UNAVAILABLE = {
    "CannotConnectNowError", "AdminShutdownError", "ConnectionDoesNotExistError",
    "ConnectionFailureError", "InterfaceError", "ConnectionRefusedError", "ConnectionResetError",
    "CrashShutdownError", "TooManyConnectionsError",
}  # fmt: skip


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", "unmatched")
