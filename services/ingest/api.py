"""The ingest HTTP API (CONTRACT.md "ingest").

Scopes: ``PUT /schools/{urn}`` needs ``admin``; a school's calendar and roster need
``pupils:write`` and its marks ``marks:write``, for a school the token may act for; care status
needs ``care:write`` (LA-wide social-care systems). A school-scoped token is refused (403) for any
other school before anything is looked up, so it never learns whether that school or its pupils
exist.

Care status is a social-care fact, not a school's: a token with a ``schools`` claim is refused
(403) whatever the pupil. A token with an ``la`` claim writes care only for pupils ingest knows
to live in that LA or to be enrolled at one of its schools; any other UPN — another LA's pupil or
one not known at all — gets the same 403, so the answer says nothing about whether the pupil
exists. (A token without ``la`` is LA-wide and may record care before the pupil is on any roll.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Request, Response
from fastapi.routing import APIRoute
from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.ingest import marks, registry
from services.ingest import tables as t
from services.ingest.committer import SMALL_BATCH, committer
from services.ingest.schemas import CalendarIn, CareIn, MarksResult, RosterIn, RosterResult, SchoolIn, Written
from shared.auth import Principal, Scope, forbidden, require
from shared.bodies import media_type, read_body
from shared.problems import Problem, problem_responses, validation_errors
from shared.service import Runtime

MARKS = Counter("rollcall_ingest_marks_total", "Marks received, by outcome", ["outcome"])

URN_PATTERN = r"^[0-9]{6,7}$"
UrnPath = Annotated[str, Path(pattern=URN_PATTERN, description="The school's URN")]
YearPath = Annotated[str, Path(pattern=r"^[0-9]{4}-[0-9]{2}$", description="Academic year, e.g. 2024-25")]
UpnPath = Annotated[str, Path(min_length=13, max_length=13, description="The pupil's UPN")]

Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
PupilsWriter = Annotated[Principal, Depends(require(Scope.PUPILS_WRITE))]
MarksWriter = Annotated[Principal, Depends(require(Scope.MARKS_WRITE))]
CareWriter = Annotated[Principal, Depends(require(Scope.CARE_WRITE))]

PROBLEM_RESPONSES = problem_responses(
    {
        400: "Malformed body",
        401: "Missing or invalid token",
        403: "Token lacks the scope or may not act for this school",
        404: "No such school",
        413: "Body or batch too large",
        415: "Unsupported content type",
        422: "Invalid body",
    }
)

MARKS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["marks"],
                    "properties": {
                        "marks": {
                            "type": "array",
                            "maxItems": marks.MAX_BATCH,
                            "items": {"$ref": "#/components/schemas/MarkIn"},
                        }
                    },
                }
            },
            "text/csv": {
                "schema": {"type": "string", "description": "header upn,date,session,code[,minutes_late]"}
            },
        },
    }
}


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def refuse_other_school(principal: Principal, urn: str) -> None:
    """403 at once for a school-scoped token and another school: before reading the body."""
    if principal.schools is not None and urn not in principal.schools:
        raise forbidden("the token may not act for this school")


async def authorised_school(conn: AsyncConnection, principal: Principal, urn: str) -> None:
    """403 for a school the token may not act for (before any lookup), 404 for an unknown school."""
    refuse_other_school(principal, urn)
    la = (await conn.execute(select(t.schools.c.la_code).where(t.schools.c.urn == urn))).scalar_one_or_none()
    if la is None:
        raise Problem(404, "not-found", "Not found", "no school with this URN")
    if not principal.may_act_for_school(urn, la):
        raise forbidden("the token may not act for this school")


async def pupil_of_la(conn: AsyncConnection, upn: str, la: str) -> bool:
    """Whether the pupil lives in ``la`` or is enrolled at one of its schools."""
    home = select(t.pupils.c.upn).where(t.pupils.c.upn == upn, t.pupils.c.home_la_code == la)
    school = (
        select(t.enrolments.c.upn)
        .join(t.schools, t.schools.c.urn == t.enrolments.c.school_urn)
        .where(t.enrolments.c.upn == upn, t.schools.c.la_code == la)
    )
    return (await conn.execute(home.union_all(school).limit(1))).first() is not None


async def json_body(request: Request, model: type[Any], limit: int) -> Any:
    if media_type(request) != "application/json":
        raise Problem(415, "unsupported-media-type", "Unsupported media type", "send application/json")
    body = await read_body(request, limit)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = validation_errors(exc.errors())
        if any(e["code"] == "json_invalid" for e in errors):
            raise Problem(
                400, "malformed-json", "Body is not valid JSON", "the request body could not be parsed"
            ) from exc
        raise Problem(
            422, "validation", "Request is not valid", f"{len(errors)} invalid field(s)", errors=errors
        ) from exc


def add_routes(app: FastAPI) -> None:
    router = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)

    @router.put(
        "/schools/{urn}",
        response_model=Written,
        tags=["registry"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SchoolIn"}}},
            }
        },
    )
    async def put_school(urn: UrnPath, request: Request, principal: Admin) -> Written:
        """Create or update a school (LA administrators)."""
        rt = runtime(request)
        body: SchoolIn = await json_body(request, SchoolIn, rt.settings.max_body_bytes)
        if not principal.may_act_for_school(urn, body.la_code):
            raise forbidden("the token may not act for this school")
        async with rt.engine.begin() as conn:
            changed = await registry.put_school(conn, urn, body, rt.now())
        if changed:
            rt.relay.wake()
        return Written()

    @router.put(
        "/schools/{urn}/calendar/{year}",
        response_model=Written,
        tags=["registry"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CalendarIn"}}},
            }
        },
    )
    async def put_calendar(
        urn: UrnPath, year: YearPath, request: Request, principal: PupilsWriter
    ) -> Written:
        """Replace a school's calendar for one academic year: term dates and closed sessions."""
        rt = runtime(request)
        refuse_other_school(principal, urn)
        body: CalendarIn = await json_body(request, CalendarIn, rt.settings.max_body_bytes)
        async with rt.engine.begin() as conn:
            await authorised_school(conn, principal, urn)
            changed = await registry.put_calendar(conn, urn, year, body, rt.now())
        if changed:
            rt.relay.wake()
        return Written()

    @router.put(
        "/schools/{urn}/pupils",
        response_model=RosterResult,
        tags=["registry"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RosterIn"}}},
            }
        },
    )
    async def put_pupils(urn: UrnPath, request: Request, principal: PupilsWriter) -> RosterResult:
        """Upsert pupils on the school's roll (up to 5,000 a request); all or nothing."""
        rt = runtime(request)
        refuse_other_school(principal, urn)
        body: RosterIn = await json_body(request, RosterIn, rt.settings.max_body_bytes)
        async with rt.engine.begin() as conn:
            await authorised_school(conn, principal, urn)
            result = await registry.put_roster(conn, urn, body, rt.today(), rt.now())
        if result.created or result.updated:
            rt.relay.wake()
        return result

    @router.put(
        "/pupils/{upn}/care",
        response_model=Written,
        tags=["registry"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CareIn"}}},
            }
        },
    )
    async def put_care(upn: UpnPath, request: Request, principal: CareWriter) -> Written:
        """Record a pupil's social-care status (CIN, CP, CLA, early help, ETAC, part-time timetable)."""
        rt = runtime(request)
        if principal.schools is not None:
            raise forbidden("care status is written by LA-wide social-care systems, not a school's token")
        body: CareIn = await json_body(request, CareIn, rt.settings.max_body_bytes)
        normalised = registry.valid_upn_or_422(upn)
        async with rt.engine.begin() as conn:
            if principal.la is not None and not await pupil_of_la(conn, normalised, principal.la):
                raise forbidden("the token may write care only for pupils of its LA")
            changed = await registry.put_care(conn, normalised, body, rt.now())
        if changed:
            rt.relay.wake()
        return Written()

    async def post_marks(urn: UrnPath, request: Request, principal: MarksWriter) -> MarksResult:
        """Record up to 10,000 marks (JSON or CSV); each is validated on its own.

        A 200 means every accepted and amended mark is durable and its event will be published.
        """
        rt = runtime(request)
        kind = media_type(request)
        if kind not in ("application/json", "text/csv"):
            raise Problem(
                415, "unsupported-media-type", "Unsupported media type", "send application/json or text/csv"
            )
        refuse_other_school(principal, urn)
        body = await read_body(request, rt.settings.max_body_bytes)
        raw = marks.parse_json(body) if kind == "application/json" else marks.parse_csv(body)
        await rt.relay.room()  # backpressure: the outbox backlog stays bounded
        if len(raw) <= SMALL_BATCH:  # many small requests share one transaction (group commit)
            result = await committer(rt).submit(principal, urn, raw)
        else:
            async with rt.engine.begin() as conn:
                await authorised_school(conn, principal, urn)
                result = await marks.record_marks(conn, urn, raw, rt.today(), rt.now())
        if result.accepted or result.amended:
            rt.relay.wake(result.accepted + result.amended)
        for outcome, n in (
            ("accepted", result.accepted),
            ("amended", result.amended),
            ("unchanged", result.unchanged),
            ("rejected", len(result.rejected)),
        ):
            if n:
                _OUTCOMES[outcome].inc(n)
        return result

    router.add_api_route(
        "/schools/{urn}/marks",
        post_marks,
        methods=["POST"],
        response_model=MarksResult,
        tags=["marks"],
        openapi_extra=MARKS_BODY,
        route_class_override=MarksRoute,
    )
    app.include_router(router)


_URN = re.compile(URN_PATTERN)
_MARKS_WRITER = require(Scope.MARKS_WRITE)
_OUTCOMES = {outcome: MARKS.labels(outcome) for outcome in ("accepted", "amended", "unchanged", "rejected")}


class MarksRoute(APIRoute):
    """``POST /v1/schools/{urn}/marks`` without FastAPI's per-request dependency solving.

    The hottest request there is (a small MIS posts a mark at a time; issue 8 asks 1,000/s with
    p99 < 50 ms on two cores): FastAPI's generic machinery — solving the dependency tree, validating
    the path parameter through a model, serialising the answer through the response model — was a
    sixth of ingest's CPU per one-mark POST. Here a well-formed URN goes straight to the documented
    endpoint with the same ``require`` dependency called directly, and the ``MarksResult`` is
    encoded once. Anything else (a URN that does not match) takes FastAPI's own handler, so every
    refusal is the one FastAPI gives; the OpenAPI document is the route's as declared.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        general = super().get_route_handler()
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            urn = request.path_params.get("urn")
            if not isinstance(urn, str) or _URN.match(urn) is None:
                return await general(request)
            principal = await _MARKS_WRITER(request)
            result: MarksResult = await endpoint(urn, request, principal)
            return Response(result.__pydantic_serializer__.to_json(result), media_type="application/json")

        return handler
