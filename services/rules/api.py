"""The rules read API (CONTRACT.md "rules").

Every endpoint needs ``attendance:read``. A token with a ``schools`` claim sees only those
schools: another school's attendance is a 403, and a pupil who is not on one of its schools' rolls
is a 404 exactly like a pupil who does not exist; a token with an ``la`` claim sees only that LA's
schools the same way. LA-wide figures (``/la/attendance``) need a token without ``schools`` and
cover its ``la`` only. Signals and return lists are filtered to the schools the token may see.

A social worker or Early Help lead (a non-admin token whose ``sub`` is such a recipient in
notifications' directory, kept locally by ``shared.directory``) sees only their allocated pupils:
another pupil is the same 404 as an unknown UPN, signals and returns are filtered to their pupils,
and school and LA figures are a 403.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.rules import engine, recompute, reports
from services.rules import tables as t
from services.rules.worker import calendar_cache
from shared import directory
from shared.audit import Audit, AuditEntry
from shared.auth import Principal, Scope, forbidden, require
from shared.calendar import AcademicYear
from shared.fields import IsoDate, IsoDateTime
from shared.problems import Problem, problem_responses
from shared.service import Runtime

Reader = Annotated[Principal, Depends(require(Scope.ATTENDANCE_READ))]
UrnPath = Annotated[str, Path(pattern=r"^[0-9]{6,7}$")]
UpnPath = Annotated[str, Path(min_length=13, max_length=13, pattern=r"^[A-Z0-9]{13}$")]
From = Annotated[IsoDate | None, Query(alias="from")]
To = Annotated[IsoDate | None, Query(alias="to")]
Month = Annotated[str, Query(pattern=r"^(19|20)[0-9]{2}-(0[1-9]|1[0-2])$", description="YYYY-MM")]
PAGE = 500

PROBLEMS = problem_responses(
    {
        401: "No or invalid token",
        403: "Not allowed",
        404: "Not found",
        422: "Invalid query",
    }
)


def rt_of(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


EARLIEST, LATEST = dt.date(1900, 1, 1), dt.date(2099, 12, 31)  # academic-year arithmetic stays in range


def check_period(start: dt.date | None, end: dt.date | None) -> None:
    for name, day in (("from", start), ("to", end)):
        if day is not None and not EARLIEST <= day <= LATEST:
            detail = f"`{name}` must be between {EARLIEST} and {LATEST}"
            error = {"index": None, "field": name, "code": "date_range", "detail": detail}
            raise Problem(422, "validation", "Request is not valid", detail, errors=[error])
    if start and end and end < start:
        error = {"index": None, "field": "to", "code": "date_order", "detail": "to is before from"}
        raise Problem(422, "validation", "Request is not valid", "`to` is before `from`", errors=[error])


def pupil_not_found() -> Problem:
    return Problem(404, "not-found", "Not found", "no pupil with this UPN that you may see")


async def allowed_pupils(conn: AsyncConnection, rt: Runtime, principal: Principal) -> frozenset[str] | None:
    """The pupils a social worker may see (None: the caller is not restricted to pupils)."""
    return await directory.directory_of(rt.state, t.directory).allowed_pupils(conn, principal)


async def no_aggregates(conn: AsyncConnection, rt: Runtime, principal: Principal) -> None:
    if await allowed_pupils(conn, rt, principal) is not None:
        raise directory.aggregate_refused()


def visible_school_filter(principal: Principal, column: Any) -> Any:
    """A WHERE clause on a school URN column for the schools the token may see (None: all)."""
    conds: list[Any] = []
    if principal.schools is not None:
        conds.append(column.in_(sorted(principal.schools)))
    if principal.la is not None:
        conds.append(column.in_(select(t.schools.c.urn).where(t.schools.c.la_code == principal.la)))
    return and_(*conds) if conds else None


async def school_or_404(conn: AsyncConnection, principal: Principal, urn: str) -> Any:
    if principal.schools is not None and urn not in principal.schools:
        raise forbidden("the token may not read this school")
    school = (await conn.execute(select(t.schools).where(t.schools.c.urn == urn))).first()
    if school is None:
        raise Problem(404, "not-found", "Not found", "no school with this URN")
    if not principal.may_act_for_school(urn, school.la_code):
        raise forbidden("the token may not read this school")
    return school


def _json(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: _json(getattr(value, k)) for k in value.__dataclass_fields__}
    if hasattr(value, "value") and not isinstance(value, int | float | str | bool):
        return value.value
    return value


def assessment_body(a: engine.Assessment) -> dict[str, Any]:
    m = a.measures
    s = m.sessions
    return {
        "upn": a.upn,
        "school_urn": a.school_urn,
        "period": {"from": a.period[0].isoformat(), "to": a.period[1].isoformat()},
        "sessions": {
            "possible": s.possible,
            "present": s.present,
            "aea": s.aea,
            "authorised": s.authorised,
            "unauthorised": s.unauthorised,
            "not_counted": s.not_counted,
        },
        "attendance_rate": m.attendance_rate,
        "absence_rate": m.absence_rate,
        "authorised_rate": m.authorised_rate,
        "unauthorised_rate": m.unauthorised_rate,
        "band": a.band.value if a.band else None,
        "persistent_absence": m.persistent_absence,
        "severe_absence": m.severe_absence,
        "compulsory_school_age": a.compulsory_school_age,
        "penalty_window": {
            "from": a.penalty_window.start.isoformat(),
            "to": a.penalty_window.end.isoformat(),
            "unauthorised_sessions": a.penalty_window.unauthorised_sessions,
            "threshold_met": a.penalty_window.threshold_met,
        },
        "continuous_unauthorised_days": a.continuous_unauthorised_days,
        "illness_days": a.illness_days,
        "actions": [{"action": x.text, "owner": x.owner} for x in a.actions],
        "reasons": [_json(r) for r in a.reasons],
        "open_signals": [e.key for e in a.episodes if e.ended_on is None],
        "reference_date": a.reference_date.isoformat(),
    }


def add_routes(app: FastAPI) -> None:
    router = APIRouter(prefix="/v1", responses=PROBLEMS, tags=["attendance"])

    @router.get("/pupils/{upn}/attendance")
    async def pupil_attendance(
        upn: UpnPath, request: Request, principal: Reader, audit: Audit, start: From = None, end: To = None,
        school: Annotated[str | None, Query(pattern=r"^[0-9]{6,7}$")] = None,
    ) -> dict[str, Any]:  # fmt: skip
        """A pupil's measures, band, actions and reasons, penalty window and runs (SPEC §3–§6).

        With dual registration the main enrolment is answered (``?school=`` chooses another) and
        every enrolment the caller may see is listed under ``enrolments``.
        """
        check_period(start, end)
        rt = rt_of(request)
        async with rt.reads.connect() as conn:
            allowed = await allowed_pupils(conn, rt, principal)
            if allowed is not None and upn not in allowed:
                raise pupil_not_found()
            assessments = await assess_pupil(conn, rt, upn, principal, start, end)
        if not assessments:
            raise pupil_not_found()
        if school is not None:
            chosen = next((a for a in assessments if a.school_urn == school), None)
            if chosen is None:
                raise Problem(
                    404, "not-found", "Not found", "the pupil has no enrolment at that school you may see"
                )
        else:
            chosen = max(assessments, key=lambda a: (a.measures.sessions.possible, a.school_urn))
        body = assessment_body(chosen)
        body["enrolments"] = [
            {"school_urn": a.school_urn, "band": a.band.value if a.band else None,
             "attendance_rate": a.measures.attendance_rate}
            for a in assessments
        ]  # fmt: skip
        return body

    @router.get("/schools/{urn}/attendance")
    async def school_attendance(urn: UrnPath, request: Request, principal: Reader, start: From = None,
                                end: To = None) -> dict[str, Any]:  # fmt: skip
        """The school's sums, rates, pupils by band and PA/SA counts and rates."""
        check_period(start, end)
        rt = rt_of(request)
        async with rt.reads.connect() as conn:
            school = await school_or_404(conn, principal, urn)
            await no_aggregates(conn, rt, principal)
            enrolments, period = await _enrolments(conn, rt, start, end, urn)
        return {"school_urn": urn, "name": school.name, "phase": school.phase, "period": period,
                **reports.summary(enrolments)}  # fmt: skip

    @router.get("/la/attendance")
    async def la_attendance(
        request: Request, principal: Reader, start: From = None, end: To = None,
        group_by: Annotated[str | None, Query(pattern="^(school|phase|locality|ward|cohort|week)$")] = None,
    ) -> dict[str, Any]:  # fmt: skip
        """The LA headline table (with last year and national figures), the severe-absence
        cohort breakdown, and optionally figures grouped by school, phase, locality, ward,
        cohort or week (SPEC §10)."""
        if principal.schools is not None:
            raise forbidden("LA-wide figures need an LA-wide token")
        check_period(start, end)
        rt = rt_of(request)
        async with rt.reads.connect() as conn:
            await no_aggregates(conn, rt, principal)
            enrolments, period = await _enrolments(conn, rt, start, end, None)
            la_schools: list[str] | None = None
            if principal.la is not None:
                enrolments = [e for e in enrolments if e.attrs["la_code"] == principal.la]
                q = select(t.schools.c.urn).where(t.schools.c.la_code == principal.la)
                la_schools = list((await conn.execute(q)).scalars())
            total = reports.summary(enrolments)
            year = AcademicYear.of(dt.date.fromisoformat(period["to"]))
            last = await reports.enrolments_between(
                conn,
                year.first_day.replace(year=year.start_year - 1),
                year.first_day - dt.timedelta(days=1),
                schools=la_schools,
            )
            body: dict[str, Any] = {
                "la_code": principal.la or rt.policy.la_code,
                "period": period,
                **total,
                "headline": reports.comparison(
                    reports.headline(total), year, reports.headline(reports.summary(last)) if last else None
                ),
                "severe_absence_cohort": reports.severe_cohort(enrolments),
            }
            if group_by == "week":
                first, last_day = dt.date.fromisoformat(period["from"]), dt.date.fromisoformat(period["to"])
                if la_schools is None:
                    body["groups"] = await reports.weekly(conn, first, last_day)
                else:
                    body["groups"] = reports.by_week(
                        await reports.day_counts(conn, first, last_day, la_schools)
                    )
            elif group_by:
                body["groups"] = reports.grouped(enrolments, group_by)
        body["group_by"] = group_by
        return body

    @router.get("/signals")
    async def list_signals(
        request: Request, principal: Reader, audit: Audit,
        type: Annotated[str | None, Query(max_length=60)] = None,
        upn: Annotated[str | None, Query(max_length=13)] = None,
        school: Annotated[str | None, Query(pattern=r"^[0-9]{6,7}$")] = None,
        since: Annotated[IsoDateTime | None, Query()] = None,
        cursor: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,  # a BIGINT
        limit: Annotated[int, Query(ge=1, le=PAGE)] = 100,
    ) -> dict[str, Any]:  # fmt: skip
        """Signals, newest last; ``next_cursor`` pages forward (and polls for new ones)."""
        rt = rt_of(request)
        s = t.signals.c
        q = select(t.signals).order_by(s.seq).limit(limit)
        if cursor is not None:
            q = q.where(s.seq > cursor)
        if type:
            q = q.where(s.type == type.removeprefix("signal."))  # the name, or the event type
        if upn:
            q = q.where(s.upn == upn)
        if school:
            if principal.schools is not None and school not in principal.schools:
                raise forbidden("the token may not read this school")
            q = q.where(s.school_urn == school)
        if (visible := visible_school_filter(principal, s.school_urn)) is not None:
            q = q.where(visible)
        if since:
            q = q.where(s.raised_at >= since)
        async with rt.reads.connect() as conn:
            allowed = await allowed_pupils(conn, rt, principal)
            if allowed is not None:
                q = q.where(s.upn.in_(sorted(allowed)))
            rows = (await conn.execute(q)).all()
        items = [
            {"id": r.id, "type": r.type, "upn": r.upn, "school_urn": r.school_urn, "episode": r.episode_key,
             "occurred_on": r.occurred_on.isoformat(), "raised_at": r.raised_at.isoformat(), "data": r.data}
            for r in rows
        ]  # fmt: skip
        next_cursor = rows[-1].seq if rows else cursor
        audit.add(upns=(r.upn for r in rows), resources=(r.id for r in rows))
        return {"items": items, "next_cursor": next_cursor}

    async def return_list(
        request: Request, principal: Principal, audit: AuditEntry, month: str, kind: str
    ) -> dict[str, Any]:
        rt = rt_of(request)
        first = dt.date.fromisoformat(f"{month}-01")
        last = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
        e = t.episodes.c
        q = (
            select(t.episodes, t.enrolments.c.year_group)
            .join(t.enrolments, and_(t.enrolments.c.upn == e.upn, t.enrolments.c.school_urn == e.school_urn))
            .where(e.type == kind, e.started_on <= last, or_(e.ended_on.is_(None), e.ended_on >= first))
            .order_by(e.school_urn, e.upn, e.started_on)
        )
        if (visible := visible_school_filter(principal, e.school_urn)) is not None:
            q = q.where(visible)
        async with rt.reads.connect() as conn:
            allowed = await allowed_pupils(conn, rt, principal)
            if allowed is not None:
                q = q.where(e.upn.in_(sorted(allowed)))
            rows = (await conn.execute(q)).all()
        pupils = [
            {
                "upn": r.upn,
                "school_urn": r.school_urn,
                "year_group": r.year_group,
                "started_on": r.started_on.isoformat(),
                "ended_on": r.ended_on.isoformat() if r.ended_on else None,
                "detail": r.detail,
            }
            for r in rows
        ]
        audit.add(upns=(r.upn for r in rows))
        return {"month": month, "return": kind, "pupils": pupils}

    @router.get("/returns/attendance", tags=["returns"])
    async def attendance_return(
        request: Request, principal: Reader, audit: Audit, month: Month
    ) -> dict[str, Any]:
        """Pupils with 10 continuous school days of unauthorised absence during the month
        (episodes of ``attendance_return_due`` that overlap it)."""
        return await return_list(request, principal, audit, month, "attendance_return_due")

    @router.get("/returns/sickness", tags=["returns"])
    async def sickness_return(
        request: Request, principal: Reader, audit: Audit, month: Month
    ) -> dict[str, Any]:
        """Pupils whose illness absence reached 15 school days, for illness periods overlapping the month."""
        return await return_list(request, principal, audit, month, "sickness_return_due")

    app.include_router(router)


async def assess_pupil(
    conn: AsyncConnection,
    rt: Runtime,
    upn: str,
    principal: Principal,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> list[engine.Assessment]:
    """The pupil's assessments at the schools the caller may see (none: unknown or not visible).

    The hot read (p99 < 20 ms at 200/s, issue 8): one query for the pupil (``load_inputs``), the
    service's calendar cache, and the LA codes of only this pupil's schools, remembered a minute
    (``school_la_codes``), rather than every school's on every request."""
    # The service's calendar cache: building a school's calendars costs more than the assessment.
    inputs = await recompute.load_inputs(conn, [upn], calendar_cache(rt))
    pupil = inputs.get(upn)
    if pupil is None:
        return []
    everywhere = principal.schools is None and principal.la is None  # an unrestricted token
    las = {} if everywhere else await school_la_codes(conn, rt, [e.school_urn for e in pupil.enrolments])

    def visible(urn: str) -> bool:
        return everywhere or (urn in las and principal.may_act_for_school(urn, las[urn]))

    shown = tuple(e for e in pupil.enrolments if visible(e.school_urn))
    pupil = engine.PupilInput(pupil.upn, pupil.date_of_birth, pupil.care, shown)
    if not pupil.enrolments:
        return []
    return engine.assess(pupil, rt.policy, rt.today(), rt.now(), start=start, end=end)


SCHOOL_LA_SECONDS = 60.0


async def school_la_codes(conn: AsyncConnection, rt: Runtime, urns: list[str]) -> dict[str, str]:
    """Each known school's LA code, remembered ``SCHOOL_LA_SECONDS`` per process (a school's LA
    practically never changes; an admin's change is seen within the minute)."""
    cache: dict[str, tuple[str, float]] = rt.state.setdefault("school_la_codes", {})
    now = time.monotonic()
    missing = [u for u in urns if u not in cache or now - cache[u][1] > SCHOOL_LA_SECONDS]
    if missing:
        s = t.schools.c
        for r in await conn.execute(select(s.urn, s.la_code).where(s.urn.in_(missing))):
            cache[r.urn] = (r.la_code, now)
    return {u: cache[u][0] for u in urns if u in cache}


async def _enrolments(
    conn: AsyncConnection, rt: Runtime, start: dt.date | None, end: dt.date | None, school: str | None
) -> tuple[list[reports.Enrolment], dict[str, str]]:
    today = rt.today()
    if start is None and end is None:
        enrolments = await reports.enrolments_ytd(conn, school)
        first = AcademicYear.of(today).first_day
        return enrolments, {"from": first.isoformat(), "to": today.isoformat()}
    first = start or AcademicYear.of(end or today).first_day
    last = min(end or today, today)
    bands = rt.policy.bands

    def band_of(rate: float) -> str:
        return str(bands.band_for(rate))

    enrolments = await reports.enrolments_between(conn, first, last, school, band_of)
    return enrolments, {"from": first.isoformat(), "to": last.isoformat()}
