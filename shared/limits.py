"""Per-client rate limits and request-body size limits, for every service (wired in ``service_app``).

**Rate.** A client is the token's subject (``sub``) when the request carries a valid token, else
the client's address: a caller cannot dodge its limit by sending junk tokens, and unauthenticated
traffic gets the (smaller) anonymous limit. Limits are ``limits`` strings such as
``1000/second;20000/minute`` (every one must hold), counted with the sliding-window-counter
strategy in ``ROLLCALL_RATE_LIMIT_STORAGE`` (``memory://`` per process; ``async+redis://…`` shares
them between replicas). A refused request is a 429 problem with ``Retry-After`` (whole seconds).

**Size.** A body larger than the route's limit is a 413 problem: at once when ``Content-Length``
says so, and when a streamed (chunked) body passes the limit while the handler reads it — the
handler then stops before it writes anything. Bulk routes (ingest's marks and rosters) get
``ROLLCALL_MAX_BODY_BYTES``, every other route ``ROLLCALL_MAX_REQUEST_BYTES``.

**Characters.** A URL whose path or query carries a percent-encoded control character
(``%00``–``%1F``, ``%7F``) is a 400 problem before any handler runs: no identifier, date or filter
contains one, and PostgreSQL cannot even compare text holding U+0000 (it would be a 500 there).

``/healthz``, ``/readyz`` and ``/metrics`` are exempt from both: probes and scrapers must never be
throttled.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Collection
from typing import Any

import structlog
from fastapi import FastAPI
from limits import RateLimitItem, parse_many
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string
from starlette.exceptions import HTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import TokenVerifier
from shared.problems import Problem, problem_response, problem_responses
from shared.settings import Settings

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
log = structlog.get_logger()


def rate_limited(retry_after: int) -> Problem:
    return Problem(
        429,
        "rate-limited",
        "Too many requests",
        f"this client has sent too many requests: retry after {retry_after} s",
        headers={"Retry-After": str(retry_after)},
        retry_after=retry_after,
    )


def too_large(limit: int) -> Problem:
    return Problem(
        413, "payload-too-large", "Request body too large", f"the body must be at most {limit} bytes"
    )


_CONTROL_ESCAPE = re.compile(rb"%(?:[01][0-9a-fA-F]|7[fF])")


def _has_control_characters(scope: Scope) -> bool:
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    return bool(
        _CONTROL_ESCAPE.search(raw_path)
        or _CONTROL_ESCAPE.search(scope.get("query_string", b""))
        or any(c < " " or c == "\x7f" for c in scope["path"])
    )


def control_characters() -> Problem:
    return Problem(400, "bad-request", "Bad request", "the URL must not contain control characters")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes its limit (FastAPI re-raises HTTPExceptions
    met while reading a body, and the problem handlers answer it as a 413 problem)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large(limit).detail)
        self.limit = limit


class RequestLimits:
    """ASGI middleware: the per-client rate limit, then the body size limit of the matched route."""

    def __init__(
        self, app: ASGIApp, fastapi_app: FastAPI, settings: Settings, bulk_routes: Collection[str]
    ) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.enabled = settings.rate_limit_enabled
        self.authenticated: list[RateLimitItem] = parse_many(settings.rate_limit)
        self.anonymous: list[RateLimitItem] = parse_many(settings.rate_limit_anonymous)
        storage = storage_from_string(_async_uri(settings.rate_limit_storage))
        self.limiter = SlidingWindowCounterRateLimiter(storage)
        self.bulk_routes = [compile_path(template)[0] for template in bulk_routes]
        self.max_body = settings.max_body_bytes
        self.max_request = settings.max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.enabled:
            refused = await self._rate_check(scope)
            if refused is not None:
                await problem_response(refused, scope["path"])(scope, receive, send)
                return
        if _has_control_characters(scope):
            await problem_response(control_characters())(scope, receive, send)
            return
        limit = self._body_limit(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await problem_response(too_large(limit), scope["path"])(scope, receive, send)
            return
        await self.app(scope, _capped(receive, limit), send)

    async def _rate_check(self, scope: Scope) -> Problem | None:
        client, items = await self._client(scope)
        for item in items:
            if not await self.limiter.hit(item, client):
                reset, _ = await self.limiter.get_window_stats(item, client)
                retry_after = max(1, math.ceil(reset - time.time()))
                log.info("rate_limited", limit=str(item), authenticated=items is self.authenticated)
                return rate_limited(retry_after)
        return None

    async def _client(self, scope: Scope) -> tuple[str, list[RateLimitItem]]:
        """The limit key: ``sub:<subject>`` for a valid token (bearer or dashboard session), else
        ``addr:<client address>``."""
        token = _bearer(scope)
        verifier: TokenVerifier | None = getattr(self.fastapi_app.state, "verifier", None)
        if token and verifier is not None:
            try:
                principal = await verifier.verify(token)
            except Problem:
                pass
            else:
                return f"sub:{principal.sub}", self.authenticated
        client = scope.get("client")
        address = client[0] if client else "unknown"
        return f"addr:{address}", self.anonymous

    def _body_limit(self, scope: Scope) -> int:
        path = scope["path"]
        return self.max_body if any(p.match(path) for p in self.bulk_routes) else self.max_request


def _async_uri(uri: str) -> str:
    """``limits`` names its asyncio storages ``async+<scheme>``."""
    return uri if uri.startswith("async+") else f"async+{uri}"


def _bearer(scope: Scope) -> str | None:
    """The request's token: the bearer header, or the dashboard's session cookie (same JWT)."""
    cookie_token = None
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() or None if scheme.lower() == "bearer" else None
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, val = part.strip().partition("=")
                if key == "rollcall_session" and val:
                    cookie_token = val
    return cookie_token


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


def _capped(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises ``BodyTooLarge`` once the body passes ``limit`` bytes."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return wrapped


def document_limits(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare the 400 (control characters in the URL) and 429 (every API operation) and 413
    (operations with a body) problems in an OpenAPI document, in place."""
    limited: dict[int | str, dict[str, Any]] = problem_responses(
        {400: "Malformed request", 429: "Too many requests from this client"}
    )
    limited[429]["headers"] = {
        "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
    }
    too_big = problem_responses({413: "Body too large"})[413]
    for path, item in schema.get("paths", {}).items():
        if path in EXEMPT_PATHS:
            continue
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            responses.setdefault("400", limited[400])
            responses.setdefault("429", limited[429])
            if "requestBody" in operation:
                responses.setdefault("413", too_big)
    return schema
