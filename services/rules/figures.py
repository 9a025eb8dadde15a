"""The dashboard's figures (SPEC §10) as snapshots, so a page for the whole borough is served in
milliseconds however many marks arrive.

A snapshot holds everything the KPI and hotspot pages show for one academic year and one view
(the LA, or a set of schools): the headline table, bands, the severe-absence cohort, hotspots by
school, phase, locality and ward, and the weekly trend. It is built from the stored year-to-date
assessments (this year) or the register (a past year) and the daily register sums. A snapshot
older than ``figures_max_age_seconds`` is served while a fresh one is built in the background
(stale-while-revalidate); pages say when their figures were computed. Only the first request for
a view waits for its build.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.rules import reports
from services.rules import tables as t
from shared.calendar import AcademicYear
from shared.observability import error_fields
from shared.policy import Policy

log = structlog.get_logger()
GROUPINGS = ("school", "phase", "locality", "ward")


@dataclass(frozen=True, slots=True)
class View:
    """Whose figures: every school of the LA (``schools`` None) or only some schools."""

    year: AcademicYear
    schools: frozenset[str] | None = None
    la: str | None = None


@dataclass(frozen=True, slots=True)
class Figures:
    view: View
    period: tuple[dt.date, dt.date]
    computed_at: dt.datetime
    summary: dict[str, Any]
    headline: dict[str, Any]
    cohort: dict[str, Any]
    groups: dict[str, list[dict[str, Any]]]
    weeks: list[dict[str, Any]]
    build_seconds: float
    version: tuple[int, Any]  # the assessments it was built from: (count, latest computed_at)


async def build(engine: AsyncEngine, policy: Policy, view: View, today: dt.date, now: dt.datetime) -> Figures:
    """Compute one view's figures (this year: from the assessments; a past year: the register)."""
    started = time.perf_counter()
    year = view.year
    current = AcademicYear.of(today)
    async with engine.connect() as conn:
        version = await data_version(conn)
        if year == current:
            one = next(iter(view.schools)) if view.schools and len(view.schools) == 1 else None
            enrolments = await reports.enrolments_ytd(conn, one)
            period = (year.first_day, today)
        else:
            period = (year.first_day, min(year.last_day, today))
            enrolments = await reports.enrolments_between(
                conn, *period, band_of=lambda rate: str(policy.bands.band_for(rate))
            )
        if view.schools is not None:
            enrolments = [e for e in enrolments if e.school_urn in view.schools]
        if view.la is not None:
            enrolments = [e for e in enrolments if e.attrs["la_code"] == view.la]
        schools: frozenset[str] | None = view.schools
        if view.la is not None:
            q = select(t.schools.c.urn).where(t.schools.c.la_code == view.la)
            in_la = frozenset((await conn.execute(q)).scalars())
            schools = in_la if schools is None else schools & in_la
        weeks = reports.by_week(await reports.day_counts(conn, *period, schools))
        last_year = AcademicYear(year.start_year - 1)
        last: list[reports.Enrolment] = []
        if await _has_register(conn, last_year):
            last = await reports.enrolments_between(conn, last_year.first_day, last_year.last_day)
            if view.schools is not None:
                last = [e for e in last if e.school_urn in view.schools]
    total = reports.summary(enrolments)
    headline = reports.comparison(
        reports.headline(total), year, reports.headline(reports.summary(last)) if last else None
    )
    return Figures(
        view=view,
        period=period,
        computed_at=now,
        summary=total,
        headline=headline,
        cohort=reports.severe_cohort(enrolments),
        groups={g: reports.grouped(enrolments, g) for g in GROUPINGS},
        weeks=weeks,
        build_seconds=time.perf_counter() - started,
        version=version,
    )


async def data_version(conn: Any) -> tuple[int, Any]:
    """Changes whenever a pupil is recomputed (every mark, registry or calendar change does that)."""
    a = t.assessments.c
    row = (await conn.execute(select(func.count(), func.max(a.computed_at)))).one()
    return int(row[0]), row[1]


async def _has_register(conn: Any, year: AcademicYear) -> bool:
    d = t.register_days.c
    q = select(d.date).where(d.date >= year.first_day, d.date <= year.last_day).limit(1)
    return (await conn.execute(q)).first() is not None


@dataclass
class FiguresCache:
    """Snapshots by view, refreshed in the background once older than ``max_age`` seconds."""

    max_age: float
    snapshots: dict[View, tuple[float, Figures]] = field(default_factory=dict)
    building: dict[View, asyncio.Task[Figures]] = field(default_factory=dict)

    async def get(
        self, engine: AsyncEngine, policy: Policy, view: View, today: dt.date, now: dt.datetime
    ) -> Figures:
        held = self.snapshots.get(view)
        if held is not None:
            if time.monotonic() - held[0] > self.max_age and view not in self.building:
                self._start(engine, policy, view, today, now)
            return held[1]
        task = self.building.get(view) or self._start(engine, policy, view, today, now)
        return await asyncio.shield(task)

    def _start(
        self, engine: AsyncEngine, policy: Policy, view: View, today: dt.date, now: dt.datetime
    ) -> asyncio.Task[Figures]:
        held = self.snapshots.get(view)
        task = asyncio.create_task(self._refresh(engine, policy, view, today, now, held[1] if held else None))
        self.building[view] = task

        def done(task: asyncio.Task[Figures]) -> None:
            self.building.pop(view, None)
            if task.cancelled():
                return
            if (exc := task.exception()) is not None:
                log.error("figures_build_failed", **error_fields(exc))
                return
            figures = task.result()
            fresh = view not in self.snapshots or self.snapshots[view][1] is not figures
            self.snapshots[view] = (time.monotonic(), figures)
            if fresh:
                seconds = round(figures.build_seconds, 3)
                log.info(
                    "figures_built", schools=len(view.schools) if view.schools else "all", seconds=seconds
                )

        task.add_done_callback(done)
        return task

    @staticmethod
    async def _refresh(
        engine: AsyncEngine,
        policy: Policy,
        view: View,
        today: dt.date,
        now: dt.datetime,
        held: Figures | None,
    ) -> Figures:
        """A new snapshot, unless nothing was recomputed since ``held`` was built (then ``held``)."""
        if held is not None and held.period[1] == today:
            async with engine.connect() as conn:
                if await data_version(conn) == held.version:
                    return held
        return await build(engine, policy, view, today, now)


def cache_of(rt: Any) -> FiguresCache:
    """The process's figures cache (``rt`` is the service Runtime), made on first use."""
    cache = rt.state.get("figures")
    if cache is None:
        cache = rt.state["figures"] = FiguresCache(getattr(rt.settings, "figures_max_age_seconds", 30.0))
    assert isinstance(cache, FiguresCache)
    return cache


async def keep_fresh(rt: Any) -> None:
    """A worker: keeps the LA-wide figures of the current year built, so no officer's page waits
    for a whole-borough sum (``rt`` is the service Runtime)."""
    cache = cache_of(rt)
    while True:
        view = View(AcademicYear.of(rt.today()), None, rt.policy.la_code)
        try:
            await cache.get(rt.reads, rt.policy, view, rt.today(), rt.now())
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log.error("figures_refresh_failed", **error_fields(exc))
        await asyncio.sleep(cache.max_age)
