"""The legal HTTP API (CONTRACT.md "legal"): LA officers drive cases here.

Reads need ``legal:read``, writes ``legal:write`` (``admin`` passes both). A token with a
``schools`` claim sees only cases at those schools; a token with an ``la`` claim sees cases at its
LA's schools and of pupils living in it (the Home LA leads ESOs and early help, SPEC §8). A case
the caller may not see is a 404 exactly like one that does not exist. Creating a case for a school
outside the token's ``schools`` is a 403 before anything is looked up.

A social worker or Early Help lead (a non-admin token whose ``sub`` is such a recipient in
notifications' directory, kept locally by ``shared.directory``) sees only the cases of their
allocated pupils (any other case is the same 404), lists and deadlines are filtered to them,
``/figures`` is a 403, and opening a case for any other pupil is a 403 before anything is looked up.

A refusal by the workflow is a 409 ``urn:rollcall:problem:legal-rule`` problem whose ``rule``
member names the rule (see ``workflow.Rule``); a date in the future is a 422.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.legal import cases, evidence, views
from services.legal import tables as t
from services.legal import workflow as wf
from services.legal.schemas import (
    CaseIn,
    CasePatch,
    OffenceIn,
    PaymentIn,
    PenaltyNoticeIn,
    RecordIn,
    TransitionIn,
    WithdrawalIn,
)
from shared import directory
from shared.audit import Audit, AuditEntry
from shared.auth import Principal, Scope, forbidden, require
from shared.fields import IsoDate
from shared.problems import Problem, problem_responses
from shared.service import Runtime
from shared.upn import InvalidUPN, validate_upn

Reader = Annotated[Principal, Depends(require(Scope.LEGAL_READ))]
Writer = Annotated[Principal, Depends(require(Scope.LEGAL_WRITE))]
PAGE = 500

PROBLEMS = problem_responses(
    {
        400: "Malformed JSON",
        401: "No or invalid token",
        403: "Not allowed",
        404: "No such case that you may see",
        409: "Refused by a named rule (`rule`)",
        422: "Invalid body or query",
    }
)


def rt_of(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def not_found(what: str = "case") -> Problem:
    return Problem(404, "not-found", "Not found", f"no {what} with this id that you may see")


async def _las(conn: AsyncConnection, case: Row[Any]) -> tuple[str | None, str | None]:
    school_la = (
        await conn.execute(select(t.schools.c.la_code).where(t.schools.c.urn == case.school_urn))
    ).scalar_one_or_none()
    home_la = (
        await conn.execute(select(t.pupils.c.home_la_code).where(t.pupils.c.upn == case.upn))
    ).scalar_one_or_none()
    return school_la, home_la


async def may_see(conn: AsyncConnection, principal: Principal, case: Row[Any]) -> bool:
    if principal.schools is not None and case.school_urn not in principal.schools:
        return False
    if principal.la is None:
        return True
    school_la, home_la = await _las(conn, case)
    return school_la is None or principal.la in (school_la, home_la)


async def allowed_pupils(conn: AsyncConnection, rt: Runtime, principal: Principal) -> frozenset[str] | None:
    """The pupils a social worker may see (None: the caller is not restricted to pupils)."""
    return await directory.directory_of(rt.state, t.directory).allowed_pupils(conn, principal)


async def visible_case(conn: AsyncConnection, principal: Principal, case_id: str, rt: Runtime) -> Row[Any]:
    allowed = await allowed_pupils(conn, rt, principal)
    try:
        case = await cases.case_row(conn, case_id)
    except cases.NotFound:
        raise not_found() from None
    if not await may_see(conn, principal, case) or (allowed is not None and case.upn not in allowed):
        raise not_found()
    return case


def _visible_filter(principal: Principal) -> Any:
    conds: list[Any] = []
    if principal.schools is not None:
        conds.append(t.cases.c.school_urn.in_(sorted(principal.schools)))
    if principal.la is not None:
        conds.append(
            or_(
                t.schools.c.la_code.is_(None),
                t.schools.c.la_code == principal.la,
                t.pupils.c.home_la_code == principal.la,
            )
        )
    return and_(*conds) if conds else None


def wants_html(request: Request) -> bool:
    """Whether the client prefers text/html over JSON (q-values honoured; JSON on a tie)."""
    best: dict[str, float] = {}
    for part in request.headers.get("accept", "").split(","):
        media, *params = (x.strip() for x in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        for kind in ("text/html", "application/json"):
            if media in (kind, kind.split("/")[0] + "/*", "*/*"):
                weight = q - (0.001 if media != kind else 0)  # an exact match beats a wildcard
                best[kind] = max(best.get(kind, -1.0), weight)
    return best.get("text/html", -1.0) > best.get("application/json", -1.0)


def audited_case(audit: AuditEntry, body: dict[str, Any]) -> dict[str, Any]:
    """A case body returned: its pupil and case id go into the audit log."""
    audit.add(upns=[body["upn"]], resources=[body["id"]])
    return body


def add_routes(app: FastAPI) -> None:
    router = APIRouter(prefix="/v1", responses=PROBLEMS, tags=["cases"])

    @router.post("/cases", status_code=201)
    async def create_case(body: CaseIn, request: Request, principal: Writer, audit: Audit) -> dict[str, Any]:
        """Open a case in ``support`` for a pupil; 409 ``case_already_open`` if one is open."""
        rt = rt_of(request)
        if principal.schools is not None and body.school_urn not in principal.schools:
            raise forbidden("the token may not act for this school")
        try:
            upn = validate_upn(body.upn)
        except InvalidUPN as exc:
            error = {"index": None, "field": "upn", "code": "upn_invalid", "detail": exc.detail}
            raise Problem(422, "validation", "Request is not valid", exc.detail, errors=[error]) from None
        if len({p.id for p in body.parents}) != len(body.parents):
            error = {
                "index": None,
                "field": "parents",
                "code": "duplicate",
                "detail": "a parent id is listed twice",
            }
            raise Problem(
                422, "validation", "Request is not valid", "a parent id is listed twice", errors=[error]
            )
        opened_on = body.opened_on or rt.today()
        if opened_on > rt.today():
            raise wf.Refused(wf.Rule.DATE_IN_FUTURE, f"opened_on {opened_on} is after today ({rt.today()})")
        async with rt.engine.begin() as conn:
            allowed = await allowed_pupils(conn, rt, principal)
            if allowed is not None and upn not in allowed:
                raise directory.pupil_refused()
            if principal.la is not None:
                school_la = (
                    await conn.execute(select(t.schools.c.la_code).where(t.schools.c.urn == body.school_urn))
                ).scalar_one_or_none()
                home_la = (
                    await conn.execute(select(t.pupils.c.home_la_code).where(t.pupils.c.upn == upn))
                ).scalar_one_or_none()
                if school_la is not None and principal.la not in (school_la, home_la):
                    raise forbidden("the token may not act for this school")
            await cases.lock_pupil(conn, upn)
            existing = await cases.open_case_of(conn, upn)
            if existing is not None:
                # The open case's id only for a caller who may see it.
                facts = {"case_id": existing.id} if await may_see(conn, principal, existing) else {}
                raise wf.Refused(wf.Rule.CASE_ALREADY_OPEN, "the pupil already has an open case", **facts)
            case_id = await cases.open_case(
                conn,
                upn=upn,
                school_urn=body.school_urn,
                parents=[(p.id, p.name) for p in body.parents],
                lead_officer=body.lead_officer,
                by=principal.sub,
                opened_on=opened_on,
                trigger="officer",
                reason="opened by an officer",
                policy=rt.policy,
                now=rt.now(),
            )
            result = await views.case_body(conn, await cases.case_row(conn, case_id), rt.today(), rt.policy)
        rt.relay.wake()
        return audited_case(audit, result)

    @router.get("/cases")
    async def list_cases(
        request: Request,
        principal: Reader,
        audit: Audit,
        state: Annotated[wf.State | None, Query()] = None,
        upn: Annotated[str | None, Query(max_length=20)] = None,
        school: Annotated[str | None, Query(pattern=r"^[0-9]{6,7}$")] = None,
        open: Annotated[bool | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=PAGE)] = 100,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    ) -> dict[str, Any]:
        """Cases the caller may see, oldest first, filtered by state, pupil, school or openness."""
        rt = rt_of(request)
        c = t.cases.c
        q = (
            select(t.cases)
            .outerjoin(t.schools, t.schools.c.urn == c.school_urn)
            .outerjoin(t.pupils, t.pupils.c.upn == c.upn)
            .order_by(c.opened_at, c.id)
            .limit(limit)
            .offset(offset)
        )
        if (visible := _visible_filter(principal)) is not None:
            q = q.where(visible)
        if state is not None:
            q = q.where(c.state == state.value)
        if upn:
            q = q.where(c.upn == upn.strip().upper())
        if school:
            q = q.where(c.school_urn == school)
        if open is not None:
            q = q.where(c.open.is_(open))
        async with rt.reads.connect() as conn:
            allowed = await allowed_pupils(conn, rt, principal)
            if allowed is not None:
                q = q.where(c.upn.in_(sorted(allowed)))
            rows = (await conn.execute(q)).all()
        audit.add(upns=(r.upn for r in rows), resources=(r.id for r in rows))
        return {"items": [views.summary(r) for r in rows], "limit": limit, "offset": offset}

    @router.get("/cases/{case_id}")
    async def get_case(case_id: str, request: Request, principal: Reader, audit: Audit) -> dict[str, Any]:
        """The case with its state, history, deadlines, penalty notices, offences and records."""
        rt = rt_of(request)
        async with rt.reads.connect() as conn:
            case = await visible_case(conn, principal, case_id, rt)
            return audited_case(audit, await views.case_body(conn, case, rt.today(), rt.policy))

    @router.patch("/cases/{case_id}")
    async def patch_case(
        case_id: str, body: CasePatch, request: Request, principal: Writer, audit: Audit
    ) -> dict[str, Any]:
        """Assign the lead officer; add parents or correct their names (never removes a parent)."""
        rt = rt_of(request)
        async with rt.engine.begin() as conn:
            case = await visible_case(conn, principal, case_id, rt)
            parents = [(p.id, p.name) for p in body.parents] if body.parents is not None else None
            await cases.set_details(
                conn, case, body.lead_officer, parents, principal.sub, rt.today(), rt.now()
            )
            body_out = await views.case_body(conn, await cases.case_row(conn, case_id), rt.today(), rt.policy)
            return audited_case(audit, body_out)

    @router.post("/cases/{case_id}/transitions")
    async def post_transition(
        case_id: str, body: TransitionIn, request: Request, principal: Writer, audit: Audit
    ) -> dict[str, Any]:
        """Move the case to another state (steps may be skipped); 409 names the rule that forbids it."""
        rt = rt_of(request)
        today = rt.today()
        async with rt.engine.begin() as conn:
            case = await visible_case(conn, principal, case_id, rt)
            await cases.move(
                conn,
                case,
                body.to,
                body.reason,
                body.effective_on or today,
                principal.sub,
                rt.policy,
                today,
                rt.now(),
                body.improvement_school_weeks,
            )
            result = await views.case_body(conn, await cases.case_row(conn, case_id), today, rt.policy)
        rt.relay.wake()
        return audited_case(audit, result)

    @router.post("/cases/{case_id}/penalty-notices", status_code=201)
    async def post_penalty_notice(
        case_id: str, body: PenaltyNoticeIn, request: Request, principal: Writer
    ) -> dict[str, Any]:
        """Issue a penalty notice to a parent of the case, from the caller's LA (its ``la`` claim,
        else the policy's LA), which must be the School LA."""
        rt = rt_of(request)
        today = rt.today()
        issuer = principal.la or rt.policy.la_code
        async with rt.engine.begin() as conn:
            case = await visible_case(conn, principal, case_id, rt)
            notice_id = await cases.issue_notice(
                conn,
                case,
                body.parent_id,
                body.issued_on,
                issuer,
                principal.sub,
                rt.policy,
                today,
                rt.now(),
                body.offence_id,
            )
            result = views.notice_body(await cases.notice_row(conn, case_id, notice_id), today, rt.policy)
        rt.relay.wake()
        return result

    async def _notice(conn: AsyncConnection, case_id: str, notice_id: str) -> Row[Any]:
        try:
            return await cases.notice_row(conn, case_id, notice_id)
        except cases.NotFound:
            raise not_found("penalty notice") from None

    async def _notice_result(
        conn: AsyncConnection, case_id: str, notice_id: str, rt: Runtime
    ) -> dict[str, Any]:
        found = await views.notices_of(conn, case_id, rt.today(), rt.policy)
        return next(n for n in found if n["id"] == notice_id)

    @router.post("/cases/{case_id}/penalty-notices/{notice_id}/payments")
    async def post_payment(
        case_id: str, notice_id: str, body: PaymentIn, request: Request, principal: Writer
    ) -> dict[str, Any]:
        """Record payment in full of the amount due on ``paid_on`` (by day 28 at the latest)."""
        rt = rt_of(request)
        async with rt.engine.begin() as conn:
            case = await visible_case(conn, principal, case_id, rt)
            await _notice(conn, case_id, notice_id)
            await cases.record_payment(
                conn,
                case,
                notice_id,
                body.paid_on,
                body.amount,
                principal.sub,
                rt.policy,
                rt.today(),
                rt.now(),
            )
            return await _notice_result(conn, case_id, notice_id, rt)

    @router.post("/cases/{case_id}/penalty-notices/{notice_id}/withdrawal")
    async def post_withdrawal(
        case_id: str, notice_id: str, body: WithdrawalIn, request: Request, principal: Writer
    ) -> dict[str, Any]:
        """Withdraw a notice that is neither paid nor prosecuted; it then stops counting."""
        rt = rt_of(request)
        async with rt.engine.begin() as conn:
            case = await visible_case(conn, principal, case_id, rt)
            await _notice(conn, case_id, notice_id)
            await cases.withdraw_notice(
                conn,
                case,
                notice_id,
                body.reason,
                body.withdrawn_on or rt.today(),
                principal.sub,
                rt.policy,
                rt.today(),
                rt.now(),
            )
            return await _notice_result(conn, case_id, notice_id, rt)

    @router.post("/cases/{case_id}/records", status_code=201)
    async def post_record(
        case_id: str, body: RecordIn, request: Request, principal: Writer
    ) -> dict[str, Any]:
        """Record evidence: support offered/declined, contract non-compliance, a statutory defence,
        a conviction or acquittal, an ESO direction breach or extension (``years``), a note."""
        rt = rt_of(request)
        async with rt.engine.begin() as conn:
            case = await visible_case(conn, principal, case_id, rt)
            record_id = await cases.add_record(
                conn,
                case,
                body.kind,
                body.text,
                body.on or rt.today(),
                body.years,
                principal.sub,
                rt.policy,
                rt.today(),
                rt.now(),
            )
            row = (await conn.execute(select(t.records).where(t.records.c.id == record_id))).one()
            return views.record_body(row)

    @router.post("/cases/{case_id}/offences", status_code=201)
    async def post_offence(
        case_id: str, body: OffenceIn, request: Request, principal: Writer
    ) -> dict[str, Any]:
        """Record an offence period decided by the LA (a penalty notice or prosecution may rest on it);
        its counted sessions are the G/N/O/U marks of the period in the register held here."""
        rt = rt_of(request)
        async with rt.engine.begin() as conn:
            case = await visible_case(conn, principal, case_id, rt)
            offence_id = await cases.add_offence(
                conn, case, body.start, body.end, body.reason, principal.sub, rt.policy, rt.today(), rt.now()
            )
            row = (await conn.execute(select(t.offences).where(t.offences.c.id == offence_id))).one()
            return views.offence_body(row)

    @router.get(
        "/cases/{case_id}/evidence",
        responses={200: {"content": {"application/json": {}, "text/html": {}}}},
    )
    async def get_evidence(
        case_id: str,
        request: Request,
        principal: Reader,
        audit: Audit,
        start: Annotated[IsoDate | None, Query(alias="from")] = None,
        end: Annotated[IsoDate | None, Query(alias="to")] = None,
    ) -> Response:
        """The evidence pack: JSON, or with ``Accept: text/html`` a printable document."""
        if start and end and end < start:
            error = {"index": None, "field": "to", "code": "date_order", "detail": "to is before from"}
            raise Problem(422, "validation", "Request is not valid", "`to` is before `from`", errors=[error])
        rt = rt_of(request)
        async with rt.reads.connect() as conn:
            case = await visible_case(conn, principal, case_id, rt)
            audit.add(upns=[case.upn], resources=[case.id])
            pack = await evidence.pack(conn, case, rt.today(), rt.now(), rt.policy, start, end)
        if wants_html(request):
            return Response(evidence.render_html(pack), media_type="text/html; charset=utf-8")
        return Response(orjson.dumps(pack), media_type="application/json")

    @router.get("/figures", tags=["figures"])
    async def figures(
        request: Request,
        principal: Reader,
        start: Annotated[IsoDate, Query(alias="from")],
        end: Annotated[IsoDate, Query(alias="to")],
    ) -> dict[str, Any]:
        """What the LA's strategy counts (SPEC §10) for the cases the caller may see, in a period:
        penalty notices issued (first and second, paid, withdrawn), and cases moved into each
        intervention (notice to improve, contract, supervision order, prosecution, parenting
        order) by the date the move took effect — in all, by school and by month."""
        if end < start:
            error = {"index": None, "field": "to", "code": "date_order", "detail": "to is before from"}
            raise Problem(422, "validation", "Request is not valid", "`to` is before `from`", errors=[error])
        pn, c, h = t.penalty_notices.c, t.cases.c, t.history.c
        visible = _visible_filter(principal)

        def scoped(q: Any) -> Any:
            q = q.outerjoin(t.schools, t.schools.c.urn == c.school_urn).outerjoin(
                t.pupils, t.pupils.c.upn == c.upn
            )
            return q.where(visible) if visible is not None else q

        notices = scoped(
            select(pn.school_urn, pn.issued_on, pn.sequence, pn.status)
            .join(t.cases, c.id == pn.case_id)
            .where(pn.issued_on >= start, pn.issued_on <= end)
        )
        moves = scoped(
            select(c.school_urn, h.effective_on, h.to_state)
            .join(t.cases, c.id == h.case_id)
            .where(h.kind == "transition", h.effective_on >= start, h.effective_on <= end)
        )
        rt = rt_of(request)
        async with rt.reads.connect() as conn:
            if await allowed_pupils(conn, rt, principal) is not None:
                raise directory.aggregate_refused()
            notice_rows = (await conn.execute(notices)).all()
            move_rows = (await conn.execute(moves)).all()
        return views.figures_body(start, end, notice_rows, move_rows)

    @router.get("/deadlines", tags=["deadlines"])
    async def list_deadlines(
        request: Request,
        principal: Reader,
        audit: Audit,
        before: Annotated[IsoDate | None, Query(description="only deadlines due before this date")] = None,
        kind: Annotated[wf.DeadlineKind | None, Query()] = None,
        case: Annotated[str | None, Query(max_length=36)] = None,
        limit: Annotated[int, Query(ge=1, le=PAGE)] = PAGE,
    ) -> dict[str, Any]:
        """Open statutory deadlines across the cases the caller may see, soonest first (overdue ones
        included and flagged); ``before`` is exclusive."""
        rt = rt_of(request)
        today = rt.today()
        dl, c = t.deadlines.c, t.cases.c
        q = (
            select(t.deadlines, c.upn, c.school_urn, c.lead_officer)
            .join(t.cases, c.id == dl.case_id)
            .outerjoin(t.schools, t.schools.c.urn == c.school_urn)
            .outerjoin(t.pupils, t.pupils.c.upn == c.upn)
            .where(dl.status == "open")
            .order_by(dl.due_on, dl.case_id, dl.key)
            .limit(limit)
        )
        if (visible := _visible_filter(principal)) is not None:
            q = q.where(visible)
        if before is not None:
            q = q.where(dl.due_on < before)
        if kind is not None:
            q = q.where(dl.kind == kind.value)
        if case is not None:
            q = q.where(dl.case_id == case)
        items = []
        async with rt.reads.connect() as conn:
            allowed = await allowed_pupils(conn, rt, principal)
            if allowed is not None:
                q = q.where(c.upn.in_(sorted(allowed)))
            rows = (await conn.execute(q)).all()
            calendars: dict[str, Any] = {}
            for r in rows:
                if r.school_urn not in calendars:
                    calendars[r.school_urn] = await cases.school_days(conn, r.school_urn)
                body = views.deadline_body(r, today, rt.policy, calendars[r.school_urn])
                items.append(
                    body | {"upn": r.upn, "school_urn": r.school_urn, "lead_officer": r.lead_officer}
                )
        audit.add(upns=(r.upn for r in rows), resources=(r.case_id for r in rows))
        return {"items": items, "before": before.isoformat() if before else None}

    app.include_router(router)
