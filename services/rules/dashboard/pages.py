"""The dashboard's pages: server-rendered HTML over the rules service's own read models and the
legal and notifications APIs (called with the signed-in user's token).

Pages: KPIs (``/dashboard``), hotspots, pupils and a pupil's page, the officer's inbox (with
acknowledge), the before/after comparison and the annual report. Every page answers with a
``Server-Timing`` header so the benchmark can read the server's own time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Coroutine
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, FastAPI, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from sqlalchemy import select

from services.rules import api, figures, reports
from services.rules import tables as t
from services.rules.dashboard import charts
from services.rules.dashboard.partners import Partners, PartnerUnavailable, partners_of
from services.rules.dashboard.session import (
    COOKIE,
    Role,
    SignInRequired,
    Viewer,
    check_csrf,
    viewer_of,
)
from services.rules.settings import RulesSettings
from shared.audit import Audit
from shared.auth import Scope, mint_token
from shared.calendar import AcademicYear, week_start
from shared.problems import Problem
from shared.service import Runtime

log = structlog.get_logger()
env = Environment(loader=PackageLoader("services.rules.dashboard"), autoescape=select_autoescape())
CSS = files("services.rules.dashboard").joinpath("static/dashboard.css").read_text(encoding="utf-8")
YearQuery = Annotated[str | None, Query(pattern=r"^[0-9]{4}-[0-9]{2}$", description="e.g. 2024-25")]
GROUP_LABELS = {
    "school": "School",
    "phase": "Phase",
    "locality": "Locality",
    "ward": "Ward (where pupils live)",
}
SORTS = ("absence_rate", "unauthorised_rate", "persistent_absence_rate", "severe_absence_rate", "enrolments")


class PageRoute(APIRoute):
    """A page: problems become HTML error pages, no session becomes a redirect to sign in."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except SignInRequired:
                target = "/dashboard/sign-in?" + urlencode({"next": request.url.path})
                response = RedirectResponse(target, status_code=303)
            except Problem as problem:
                response = render(request, "error.html", {"problem": problem}, status=problem.status)
            response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
            response.headers["Cache-Control"] = "no-store"
            return response

        return page


def rt_of(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def settings_of(request: Request) -> RulesSettings:
    settings = rt_of(request).settings
    assert isinstance(settings, RulesSettings)
    return settings


def render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    context = {"viewer": None, "zone": rt_of(request).policy.zone, **context}
    body = env.get_template(template).render(css=CSS, path=request.url.path, Role=Role, **context)
    return HTMLResponse(body, status_code=status)


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}%"


def signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f}"


def clock(iso: str | None, zone: Any) -> str:
    """An API timestamp as the LA's local time of day (``HH:MM``)."""
    return dt.datetime.fromisoformat(iso).astimezone(zone).strftime("%H:%M") if iso else ""


env.filters["pct"] = pct
env.filters["signed"] = signed
env.filters["clock"] = clock


BANDS = (
    ("excellent", "Excellent (96%+)"),
    ("at_risk", "At risk (90–96%)"),
    ("persistent", "Persistent (85–90%)"),
    ("persistent_high", "Persistent high (50–85%)"),
    ("severe", "Severe (under 50%)"),
)


def kpi_charts(fig: figures.Figures) -> list[Markup]:
    """The KPI page's (and report's) charts: weekly trend, bands, phases, localities."""
    weeks = fig.weeks
    national = fig.headline.get("national") or {}
    return [
        charts.line_chart(
            "Absence by school week",
            [w["week_start"][5:] for w in weeks],
            [
                ("Absence", [w["absence_rate"] for w in weeks]),
                ("Unauthorised", [w["unauthorised_rate"] for w in weeks]),
                ("Holiday (G)", [w["holiday_rate"] for w in weeks]),
            ],
        ),
        charts.bar_chart(
            "Pupils by band", [(label, fig.summary["pupils_by_band"][b]) for b, label in BANDS], unit=""
        ),
        charts.bar_chart(
            "Absence by phase",
            [(g["key"], g["absence_rate"] or 0.0) for g in fig.groups["phase"]],
            reference=("National", national["overall_absence"]) if national.get("overall_absence") else None,
        ),
        charts.bar_chart(
            "Persistent absence by locality",
            [(g["key"], g["persistent_absence_rate"] or 0.0) for g in fig.groups["locality"]],
            reference=("National", national["persistent_absence"])
            if national.get("persistent_absence")
            else None,
        ),
    ]


def report_charts(fig: figures.Figures, legal: dict[str, Any] | None) -> dict[str, Markup]:
    """The annual report's extra charts: worst schools, wards, and legal interventions by month."""

    def worst(group: str, n: int) -> list[tuple[str, float]]:
        rows = sorted(fig.groups[group], key=lambda g: -(g["absence_rate"] or 0.0))[:n]
        return [(g.get("name") or g["key"], g["absence_rate"] or 0.0) for g in rows]

    la = fig.summary["absence_rate"]
    out = {
        "schools": charts.bar_chart("Schools with the highest absence (20)", worst("school", 20),
                                    reference=("LA", la) if la is not None else None),
        "wards": charts.bar_chart("Absence by ward (where pupils live)", worst("ward", 40)),
    }  # fmt: skip
    if legal and legal["by_month"]:
        months = legal["by_month"]
        out["legal"] = charts.grouped_bars(
            "Penalty notices and prosecutions by month",
            [m["month"] for m in months],
            [("Penalty notices", [m["penalty_notices"] for m in months]),
             ("Prosecutions", [m["prosecution"] for m in months])],
            unit="",
        )  # fmt: skip
    return out


def hotspot_chart(fig: figures.Figures, rows: list[dict[str, Any]], by: str, sort: str) -> Markup:
    measure = sort if sort != "enrolments" else "absence_rate"
    la = fig.summary.get(measure)
    return charts.bar_chart(
        f"{measure.replace('_', ' ').capitalize()} by {GROUP_LABELS[by].lower()} (highest 20)",
        [(g.get("name") or g["key"], g[measure] or 0.0) for g in rows[:20]],
        reference=("LA", la) if la is not None else None,
    )


def year_of(rt: Runtime, label: str | None) -> AcademicYear:
    if label is None:
        return AcademicYear.of(rt.today())
    try:
        return AcademicYear.parse(label)
    except ValueError as exc:
        raise Problem(422, "validation", "Not an academic year", "year looks like 2024-25") from exc


def view_of(viewer: Viewer, year: AcademicYear) -> figures.View:
    return figures.View(year, viewer.schools, viewer.principal.la)


async def figures_for(request: Request, viewer: Viewer, year: AcademicYear) -> figures.Figures:
    rt = rt_of(request)
    return await figures.cache_of(rt).get(rt.reads, rt.policy, view_of(viewer, year), rt.today(), rt.now())


def la_only(viewer: Viewer) -> None:
    if viewer.role is Role.SOCIAL_WORKER:
        raise Problem(
            403, "forbidden", "Not for this role", "a social worker's dashboard shows their own pupils"
        )


async def legal_figures(
    partners: Partners, viewer: Viewer, start: dt.date, end: dt.date
) -> dict[str, Any] | None:
    if not viewer.may_see(Scope.LEGAL_READ):
        return None
    try:
        status, body = await partners.legal(
            "/v1/figures", viewer.token, **{"from": start.isoformat(), "to": end.isoformat()}
        )
    except PartnerUnavailable:
        return None
    return body if status == 200 else None


def add_routes(app: FastAPI) -> None:
    router = APIRouter(prefix="/dashboard", route_class=PageRoute, include_in_schema=False)

    # --- signing in --------------------------------------------------------------------------

    @router.get("/sign-in")
    async def sign_in_form(request: Request, next: str = "/dashboard") -> HTMLResponse:
        settings = settings_of(request)
        dev = settings.env in ("dev", "test") and settings.jwks_url is None
        return render(request, "sign_in.html", {"next": safe_next(next), "dev": dev})

    @router.post("/sign-in")
    async def sign_in(
        request: Request,
        token: Annotated[str, Form(max_length=8192)],
        next: Annotated[str, Form()] = "/dashboard",
    ) -> Response:
        try:
            await request.app.state.verifier.verify(token.strip())
        except Problem:
            return render(
                request,
                "sign_in.html",
                {"next": safe_next(next), "error": "That token is not valid.", "dev": False},
                status=401,
            )
        return with_session(request, token.strip(), safe_next(next))

    @router.post("/sign-in/dev")
    async def sign_in_dev(
        request: Request,
        role: Annotated[str, Form(pattern="^(la|school|social_worker)$")],
        who: Annotated[str, Form(max_length=100, pattern=r"^[A-Za-z0-9._-]*$")] = "",
    ) -> Response:
        """Development only: a token for a role, signed with the development secret."""
        settings = settings_of(request)
        if settings.env not in ("dev", "test") or settings.jwks_url is not None:
            raise Problem(404, "not-found", "Not found", "no such page")
        read = ["attendance:read", "alerts:read", "alerts:write", "legal:read"]
        if role == "school":
            token = mint_token(settings.jwt_secret.get_secret_value(), f"school-{who}", read, [who])
        elif role == "social_worker":
            token = mint_token(settings.jwt_secret.get_secret_value(), who, read)
        else:
            la = rt_of(request).policy.la_code
            token = mint_token(settings.jwt_secret.get_secret_value(), who or "la-officer", read, la=la)
        return with_session(request, token, "/dashboard")

    @router.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        response = RedirectResponse("/dashboard/sign-in", status_code=303)
        response.delete_cookie(COOKIE, path="/dashboard")
        return response

    # --- KPIs --------------------------------------------------------------------------------

    @router.get("")
    async def home(request: Request, year: YearQuery = None) -> Response:
        viewer = await viewer_of(request)
        if viewer.role is Role.SOCIAL_WORKER:
            return RedirectResponse("/dashboard/pupils", status_code=303)
        rt = rt_of(request)
        chosen = year_of(rt, year)
        fig, legal = await asyncio.gather(
            figures_for(request, viewer, chosen),
            legal_figures(
                partners_of(rt_of(request)), viewer, chosen.first_day, min(chosen.last_day, rt.today())
            ),
        )
        return render(
            request,
            "kpis.html",
            {"viewer": viewer, "fig": fig, "legal": legal, "year": chosen, "charts_": kpi_charts(fig)},
        )

    @router.get("/hotspots")
    async def hotspots(
        request: Request,
        year: YearQuery = None,
        by: Annotated[str, Query(pattern="^(school|phase|locality|ward)$")] = "school",
        sort: Annotated[str, Query(pattern="^(" + "|".join(SORTS) + ")$")] = "absence_rate",
    ) -> Response:
        viewer = await viewer_of(request)
        la_only(viewer)
        fig = await figures_for(request, viewer, year_of(rt_of(request), year))
        rows = sorted(fig.groups[by], key=lambda g: (g[sort] is None, -(g[sort] or 0)))
        return render(
            request,
            "hotspots.html",
            {
                "viewer": viewer,
                "fig": fig,
                "rows": rows,
                "by": by,
                "sort": sort,
                "labels": GROUP_LABELS,
                "sorts": SORTS,
                "chart": hotspot_chart(fig, rows, by, sort),
            },
        )

    # --- pupils ------------------------------------------------------------------------------

    @router.get("/pupils")
    async def pupils(
        request: Request,
        upn: Annotated[str | None, Query(max_length=13)] = None,
        band: Annotated[
            str | None, Query(pattern="^(excellent|at_risk|persistent|persistent_high|severe)$")
        ] = None,
        *,
        audit: Audit,
    ) -> Response:
        viewer = await viewer_of(request)
        if upn:
            return RedirectResponse(f"/dashboard/pupils/{upn.strip().upper()}", status_code=303)
        a, s = t.assessments.c, t.schools.c
        q = (
            select(
                a.upn,
                a.school_urn,
                s.name.label("school_name"),
                a.attendance_rate,
                a.band,
                a.possible,
                a.authorised,
                a.unauthorised,
                a.penalty_threshold_met,
            )
            .join(t.schools, s.urn == a.school_urn)
            .order_by(a.attendance_rate.is_(None), a.attendance_rate, a.upn)
            .limit(200)
        )
        if viewer.role is Role.SOCIAL_WORKER:
            q = q.where(a.upn.in_(sorted(viewer.pupils or ())))
        elif viewer.schools is not None:
            q = q.where(a.school_urn.in_(sorted(viewer.schools)))
        if viewer.principal.la is not None:
            q = q.where(s.la_code == viewer.principal.la)
        if band:
            q = q.where(a.band == band)
        async with rt_of(request).reads.connect() as conn:
            rows = (await conn.execute(q)).all()
        audit.add(upns=(r.upn for r in rows))
        return render(request, "pupils.html", {"viewer": viewer, "rows": rows, "band": band})

    @router.get("/pupils/{upn}")
    async def pupil(request: Request, upn: str, audit: Audit) -> Response:
        viewer = await viewer_of(request)
        rt = rt_of(request)
        upn = upn.strip().upper()
        not_found = Problem(404, "not-found", "Not found", "no pupil with this UPN that you may see")
        if viewer.role is Role.SOCIAL_WORKER and upn not in (viewer.pupils or ()):
            raise not_found
        year = AcademicYear.of(rt.today())
        async with rt.reads.connect() as conn:
            assessments = await api.assess_pupil(conn, rt, upn, viewer.principal)
            if not assessments:
                raise not_found
            chosen = max(assessments, key=lambda x: (x.measures.sessions.possible, x.school_urn))
            r = t.register.c
            register = (
                await conn.execute(
                    select(r.date, r.session, r.code, r.category)
                    .where(
                        r.upn == upn,
                        r.school_urn == chosen.school_urn,
                        r.date >= year.first_day,
                        r.date <= year.last_day,
                    )
                    .order_by(r.date, r.session)
                )
            ).all()
            sg = t.signals.c
            signals = (
                await conn.execute(
                    select(sg.type, sg.occurred_on, sg.raised_at, sg.school_urn)
                    .where(sg.upn == upn, sg.school_urn.in_([a.school_urn for a in assessments]))
                    .order_by(sg.seq.desc())
                    .limit(50)
                )
            ).all()
            school = (
                await conn.execute(select(t.schools).where(t.schools.c.urn == chosen.school_urn))
            ).first()
        partners: Partners = partners_of(rt_of(request))
        alerts, cases = await asyncio.gather(
            _partner_items(partners.notifications, "/v1/alerts", viewer, Scope.ALERTS_READ, upn=upn),
            _partner_items(partners.legal, "/v1/cases", viewer, Scope.LEGAL_READ, upn=upn),
        )
        case_details = []
        if cases:
            for c in cases[-3:]:
                try:
                    status, body = await partners.legal(f"/v1/cases/{c['id']}", viewer.token)
                except PartnerUnavailable:
                    continue
                if status == 200:
                    case_details.append(body)
        last = min(year.last_day, dt.date(year.start_year + 1, 7, 31))
        weekdays = [year.first_day + dt.timedelta(days=i) for i in range((last - year.first_day).days + 1)]
        strip = charts.heat_strip(
            f"Register {year.label}",
            [d for d in weekdays if d.weekday() < 5],
            [(x.date, x.session, x.code, x.category) for x in register],
        )
        return render(
            request,
            "pupil.html",
            {
                "viewer": viewer,
                "a": chosen,
                "body": api.assessment_body(chosen),
                "school": school,
                "enrolments": assessments,
                "strip": strip,
                "signals": signals,
                "alerts": alerts,
                "cases": case_details,
                "year": year,
            },
        )

    # --- inbox -------------------------------------------------------------------------------

    @router.get("/inbox")
    async def inbox(request: Request, audit: Audit) -> Response:
        viewer = await viewer_of(request)
        rt = rt_of(request)
        today, now = rt.today(), rt.now()
        partners: Partners = partners_of(rt_of(request))
        alerts, deadlines = await asyncio.gather(
            _partner_items(
                partners.notifications,
                "/v1/alerts",
                viewer,
                Scope.ALERTS_READ,
                signal="first_day_absence",
                occurred_on=today.isoformat(),
                limit=500,
            ),
            _partner_items(
                partners.legal,
                "/v1/deadlines",
                viewer,
                Scope.LEGAL_READ,
                before=(today + dt.timedelta(days=29)).isoformat(),
            ),
        )
        awaiting, overdue, done = [], [], []
        for alert in alerts or []:
            if viewer.role is Role.SOCIAL_WORKER and alert["pupil"]["upn"] not in (viewer.pupils or ()):
                continue
            if alert["status"] in ("acknowledged", "withdrawn", "suppressed"):
                done.append(alert)
            elif alert["status"] == "escalated" or (
                alert["escalate_at"] and dt.datetime.fromisoformat(alert["escalate_at"]) <= now
            ):
                overdue.append(alert)
            else:
                awaiting.append(alert)
        audit.add(
            upns=[x["pupil"]["upn"] for x in (*awaiting, *overdue, *done)]
            + [d["upn"] for d in deadlines or []],
            resources=[x["id"] for x in (*awaiting, *overdue, *done)],
        )
        return render(
            request,
            "inbox.html",
            {
                "viewer": viewer,
                "awaiting": awaiting,
                "overdue": overdue,
                "done": done,
                "deadlines": deadlines,
                "alerts_unavailable": alerts is None,
                "deadlines_unavailable": deadlines is None,
                "today": today,
            },
        )

    @router.post("/inbox/{alert_id}/ack")
    async def acknowledge(
        request: Request, alert_id: str, csrf: Annotated[str, Form(max_length=64)] = ""
    ) -> Response:
        viewer = await viewer_of(request)
        check_csrf(viewer, csrf)
        try:
            status, body = await partners_of(rt_of(request)).acknowledge(
                alert_id, viewer.principal.sub, viewer.token
            )
        except PartnerUnavailable as exc:
            raise Problem(503, "unavailable", "Notifications unavailable", "try again shortly") from exc
        if status != 200:
            raise Problem(status, "not-acknowledged", "Not acknowledged", (body or {}).get("detail", ""))
        return RedirectResponse("/dashboard/inbox", status_code=303)

    # --- before / after ----------------------------------------------------------------------

    @router.get("/compare")
    async def compare(
        request: Request,
        schools: Annotated[list[str] | None, Query(max_length=200)] = None,
        before_from: dt.date | None = None,
        before_to: dt.date | None = None,
        after_from: dt.date | None = None,
        after_to: dt.date | None = None,
    ) -> Response:
        viewer = await viewer_of(request)
        la_only(viewer)
        rt = rt_of(request)
        today = rt.today()
        year = AcademicYear.of(today)
        middle = year.first_day + (today - year.first_day) / 2
        # Periods are whole Monday–Sunday weeks (PA/SA come from the weekly sums).
        periods = {
            "before": weeks_of(before_from or year.first_day, before_to or middle),
            "after": weeks_of(after_from or middle + dt.timedelta(days=7), after_to or today),
        }
        for name, (start, end) in periods.items():
            if end < start:
                raise Problem(
                    422, "validation", "Period is not valid", f"the {name} period ends before it starts"
                )
        async with rt.reads.connect() as conn:
            q = select(t.schools.c.urn, t.schools.c.name, t.schools.c.phase, t.schools.c.la_code).order_by(
                t.schools.c.name
            )
            all_schools = [
                s
                for s in (await conn.execute(q)).all()
                if viewer.principal.may_act_for_school(s.urn, s.la_code)
            ]
            known = {s.urn for s in all_schools}
            chosen = sorted(set(schools or ()) & known)
        results: dict[str, Any] = {}
        if chosen:
            # The two periods are independent reads: each on its own connection, at the same time.
            async def period(start: dt.date, end: dt.date) -> dict[str, Any]:
                async with rt.reads.connect() as own:
                    return await _compare_period(own, chosen, known, start, end)

            done = await asyncio.gather(*(period(*p) for p in periods.values()))
            results = dict(zip(periods, done, strict=True))
        chart = None
        if results:
            measures = [
                ("Absence", "absence_rate"),
                ("Unauthorised", "unauthorised_rate"),
                ("PA", "persistent_absence_rate"),
            ]
            chart = charts.grouped_bars(
                "Chosen schools: before and after",
                [m for m, _ in measures],
                [
                    (
                        f"{name} ({periods[name][0]:%d %b}–{periods[name][1]:%d %b %Y})",
                        [results[name]["group"][k] for _, k in measures],
                    )
                    for name in ("before", "after")
                ],
            )
        return render(
            request,
            "compare.html",
            {
                "viewer": viewer,
                "schools": all_schools,
                "chosen": chosen,
                "periods": periods,
                "results": results,
                "chart": chart,
            },
        )

    # --- the annual report -------------------------------------------------------------------

    @router.get("/report")
    async def report(request: Request, year: YearQuery = None) -> Response:
        viewer = await viewer_of(request)
        if viewer.role is not Role.LA:
            raise Problem(403, "forbidden", "Not for this role", "the borough report is for LA officers")
        rt = rt_of(request)
        chosen = year_of(rt, year)
        fig, legal = await asyncio.gather(
            figures_for(request, viewer, chosen),
            legal_figures(
                partners_of(rt_of(request)), viewer, chosen.first_day, min(chosen.last_day, rt.today())
            ),
        )
        return render(
            request,
            "report.html",
            {
                "viewer": viewer,
                "fig": fig,
                "legal": legal,
                "year": chosen,
                "generated": rt.now(),
                "charts_": kpi_charts(fig),
                "extra": report_charts(fig, legal),
            },
        )

    app.include_router(router)


async def _partner_items(
    call: Callable[..., Coroutine[Any, Any, tuple[int, Any]]],
    path: str,
    viewer: Viewer,
    scope: Scope,
    **params: Any,
) -> list[dict[str, Any]] | None:
    """The ``items`` a partner API answers, [] when the user lacks the scope, None when it is down."""
    if not viewer.may_see(scope):
        return []
    try:
        status, body = await call(path, viewer.token, **params)
    except PartnerUnavailable:
        return None
    if status != 200:
        return []
    items: list[dict[str, Any]] = body.get("items", [])
    return items


async def _compare_period(
    conn: Any, chosen: list[str], known: set[str], start: dt.date, end: dt.date
) -> dict[str, Any]:
    """Session rates for the chosen schools and for the rest of the LA, and the chosen schools' PA/SA
    (per enrolment over the period)."""
    group, rest = reports.Counts(), reports.Counts()
    for urn, c in (await reports.school_counts(conn, start, end)).items():
        if urn in chosen:
            group.add(c)
        elif urn in known:
            rest.add(c)
    enrolments = await reports.enrolments_in_weeks(conn, start, end - dt.timedelta(days=6), chosen)
    s = reports.summary(enrolments)
    return {
        "group": {
            **reports.measures(group),
            "persistent_absence_rate": s["persistent_absence_rate"],
            "severe_absence_rate": s["severe_absence_rate"],
            "enrolments": s["enrolments"],
        },
        "rest": reports.measures(rest),
    }


def weeks_of(start: dt.date, end: dt.date) -> tuple[dt.date, dt.date]:
    """The Monday of ``start``'s week to the Sunday of ``end``'s week."""
    return week_start(start), week_start(end) + dt.timedelta(days=6)


def safe_next(target: str) -> str:
    """Only a path inside the dashboard (no open redirect)."""
    return (
        target
        if target.startswith("/dashboard") and "//" not in target and "\\" not in target
        else "/dashboard"
    )


def with_session(request: Request, token: str, target: str) -> Response:
    settings = settings_of(request)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=settings.env == "production",
        path="/dashboard",
        max_age=8 * 3600,
    )
    log.info("dashboard_sign_in")
    return response
