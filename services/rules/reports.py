"""The LA's figures (SPEC §3, §10): sums of sessions over enrolments, then rates — never an
average of percentages — for a school, the LA, and the groupings the strategy uses.

Two sources of per-enrolment counts: the stored year-to-date assessments (the default period,
fast), and the register itself for an explicit ``from``/``to``. Hotspots by ward use the pupil's
home ward (falling back to the school's), since the strategy maps where children live; locality
and phase are the school's. The severe-absence cohort breakdown follows the strategy's table:
counts of SA enrolments in each vulnerable group, as % of the full cohort and of the SA cohort;
primary/secondary by year group (R–6 / 7+), as the strategy counts by age.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from sqlalchemy import case, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.rules import tables as t
from shared.calendar import AcademicYear, week_start

COHORTS = ("fsm", "sen_support", "ehcp", "early_help", "cin", "cp", "cla", "primary", "secondary")
PRIMARY_YEARS = {"N1", "N2", "R", "1", "2", "3", "4", "5", "6"}


@dataclass(slots=True)
class Counts:
    possible: int = 0
    present: int = 0
    aea: int = 0
    authorised: int = 0
    unauthorised: int = 0
    not_counted: int = 0
    holiday: int = 0
    part_time: int = 0

    def add(self, other: Counts) -> None:
        for f in self.__slots__:
            setattr(self, f, getattr(self, f) + getattr(other, f))

    def add_category(self, category: str, n: int) -> None:
        """Count ``n`` marks of a code category (``shared.codes.Category`` values)."""
        if category in ("present", "aea", "authorised", "unauthorised"):
            setattr(self, category, getattr(self, category) + n)
            self.possible += n
        else:
            self.not_counted += n

    @property
    def absence(self) -> int:
        return self.authorised + self.unauthorised

    def rate(self, n: int) -> float | None:
        return n / self.possible * 100 if self.possible else None

    @property
    def persistent(self) -> bool:
        return self.possible > 0 and self.absence * 10 >= self.possible

    @property
    def severe(self) -> bool:
        return self.possible > 0 and self.absence * 2 >= self.possible


@dataclass(slots=True)
class Enrolment:
    upn: str
    school_urn: str
    counts: Counts
    band: str | None
    attrs: dict[str, Any]


def measures(counts: Counts) -> dict[str, Any]:
    return {
        "sessions": {
            "possible": counts.possible,
            "present": counts.present,
            "aea": counts.aea,
            "authorised": counts.authorised,
            "unauthorised": counts.unauthorised,
            "not_counted": counts.not_counted,
        },
        "attendance_rate": counts.rate(counts.present + counts.aea),
        "absence_rate": counts.rate(counts.absence),
        "authorised_rate": counts.rate(counts.authorised),
        "unauthorised_rate": counts.rate(counts.unauthorised),
        "holiday_sessions": counts.holiday,
        "holiday_rate": counts.rate(counts.holiday),
        "part_time_sessions": counts.part_time,
    }


def summary(enrolments: list[Enrolment]) -> dict[str, Any]:
    """Sums over enrolments, then rates; PA/SA counts and rates (per enrolment, DfE)."""
    total = Counts()
    pa = sa = counted = 0
    bands: dict[str, int] = defaultdict(int)
    for e in enrolments:
        total.add(e.counts)
        if e.counts.possible:
            counted += 1
            pa += e.counts.persistent
            sa += e.counts.severe
        if e.band:
            bands[e.band] += 1
    return {
        **measures(total),
        "enrolments": counted,
        "persistent_absence": pa,
        "severe_absence": sa,
        "persistent_absence_rate": pa / counted * 100 if counted else None,
        "severe_absence_rate": sa / counted * 100 if counted else None,
        "pupils_by_band": {
            b: bands.get(b, 0) for b in ("excellent", "at_risk", "persistent", "persistent_high", "severe")
        },
        "part_time_timetables": sum(1 for e in enrolments if e.counts.part_time),
    }


def _in_cohort(e: Enrolment, cohort: str) -> bool:
    a = e.attrs
    membership: dict[str, bool] = {
        "fsm": bool(a["fsm"]),
        "sen_support": a["sen"] == "support",
        "ehcp": a["sen"] == "ehcp",
        "early_help": bool(a["early_help"]),
        "cin": bool(a["cin"]),
        "cp": bool(a["cp"]),
        "cla": bool(a["cla"]),
        "primary": a["year_group"] in PRIMARY_YEARS,
        "secondary": a["year_group"] not in PRIMARY_YEARS,
    }
    return membership[cohort]


def severe_cohort(enrolments: list[Enrolment]) -> dict[str, Any]:
    full = [e for e in enrolments if e.counts.possible]
    severe = [e for e in full if e.counts.severe]
    groups = []
    for cohort in COHORTS:
        n = sum(1 for e in severe if _in_cohort(e, cohort))
        groups.append(
            {
                "group": cohort,
                "count": n,
                "pct_of_full_cohort": n / len(full) * 100 if full else None,
                "pct_of_severe_cohort": n / len(severe) * 100 if severe else None,
            }
        )
    return {
        "full_cohort": len(full),
        "severe_absence_cohort": len(severe),
        "pct_of_full_cohort": len(severe) / len(full) * 100 if full else None,
        "groups": groups,
    }


def grouped(enrolments: list[Enrolment], group_by: str) -> list[dict[str, Any]]:
    keyed: dict[str, list[Enrolment]] = defaultdict(list)
    labels: dict[str, str] = {}
    if group_by == "cohort":
        for cohort in ("all", *COHORTS):
            keyed[cohort] = [e for e in enrolments if cohort == "all" or _in_cohort(e, cohort)]
    else:
        key_of: Callable[[Enrolment], str] = {
            "school": lambda e: e.school_urn,
            "phase": lambda e: e.attrs["phase"] or "unknown",
            "locality": lambda e: e.attrs["locality"] or "unknown",
            "ward": lambda e: e.attrs["pupil_ward"] or e.attrs["school_ward"] or "unknown",
        }[group_by]
        for e in enrolments:
            k = key_of(e)
            keyed[k].append(e)
            if group_by == "school":
                labels[k] = e.attrs["school_name"]
    out = []
    for k in sorted(keyed):
        row = {"key": k, **summary(keyed[k])}
        if k in labels:
            row["name"] = labels[k]
        out.append(row)
    return out


def _attrs_query(school: str | None, schools: Iterable[str] | None = None) -> Any:
    e, p, c, s = t.enrolments.c, t.pupils.c, t.care.c, t.schools.c
    q = (
        select(
            e.upn,
            e.school_urn,
            e.year_group,
            p.fsm,
            p.sen,
            p.ward.label("pupil_ward"),
            func.coalesce(c.cin, False).label("cin"),
            func.coalesce(c.cp, False).label("cp"),
            func.coalesce(c.cla, False).label("cla"),
            func.coalesce(c.early_help, False).label("early_help"),
            s.name.label("school_name"),
            s.phase,
            s.locality,
            s.ward.label("school_ward"),
            s.la_code,
        )
        .join(t.pupils, p.upn == e.upn)
        .join(t.schools, s.urn == e.school_urn)
        .outerjoin(t.care, c.upn == e.upn)
    )
    if schools is not None:
        q = q.where(e.school_urn.in_(sorted(schools)))
    return q.where(e.school_urn == school) if school else q


async def enrolments_ytd(conn: AsyncConnection, school: str | None = None) -> list[Enrolment]:
    """Per-enrolment counts from the stored year-to-date assessments."""
    a = t.assessments.c
    counts: dict[tuple[str, str], tuple[Counts, str | None]] = {}
    q = select(a.upn, a.school_urn, a.possible, a.present, a.aea, a.authorised, a.unauthorised, a.not_counted,
               a.holiday, a.part_time, a.band)  # fmt: skip
    if school:
        q = q.where(a.school_urn == school)
    for r in await conn.execute(q):
        counts[(r.upn, r.school_urn)] = (
            Counts(
                r.possible,
                r.present,
                r.aea,
                r.authorised,
                r.unauthorised,
                r.not_counted,
                r.holiday,
                r.part_time,
            ),
            r.band,
        )
    return await _with_attrs(conn, counts, school)


async def enrolments_between(
    conn: AsyncConnection,
    start: dt.date,
    end: dt.date,
    school: str | None = None,
    band_of: Callable[[float], str] | None = None,
    schools: Iterable[str] | None = None,
) -> list[Enrolment]:
    """Per-enrolment counts for an explicit period, summed from the register (one school, some
    schools, or all)."""
    r = t.register.c
    q = (
        select(
            r.upn,
            r.school_urn,
            r.category,
            func.count().label("n"),
            func.sum(case((r.code == "G", 1), else_=0)).label("holiday"),
            func.sum(case((r.code == "C2", 1), else_=0)).label("part_time"),
        )
        .where(r.date >= start, r.date <= end)
        .group_by(r.upn, r.school_urn, r.category)
    )
    if school:
        q = q.where(r.school_urn == school)
    if schools is not None:
        q = q.where(r.school_urn.in_(sorted(schools)))
    acc: dict[tuple[str, str], Counts] = defaultdict(Counts)
    for row in await conn.execute(q):
        c = acc[(row.upn, row.school_urn)]
        c.add_category(row.category, int(row.n))
        c.holiday += int(row.holiday or 0)
        c.part_time += int(row.part_time or 0)
    counts: dict[tuple[str, str], tuple[Counts, str | None]] = {}
    for key, c in acc.items():
        rate = c.rate(c.present + c.aea)
        counts[key] = (c, band_of(rate) if band_of and rate is not None else None)
    return await _with_attrs(conn, counts, school, schools)


async def rebuild_sums(conn: AsyncConnection) -> None:
    """Recompute ``register_days`` and ``register_weeks`` from the register (after writing the
    register directly, as the benchmarks do; the service keeps them by deltas)."""
    monday = (
        "CAST(date_trunc('week', date) AS date)"
        if conn.dialect.name == "postgresql"
        else "date(date, 'weekday 0', '-6 days')"
    )
    counted = ("present", "aea", "authorised", "unauthorised")
    sums = ", ".join(f"SUM(CASE WHEN category = '{c}' THEN 1 ELSE 0 END)" for c in counted)
    other = "SUM(CASE WHEN category IN ('present', 'aea', 'authorised', 'unauthorised') THEN 0 ELSE 1 END)"
    await conn.execute(t.register_days.delete())
    await conn.execute(t.register_weeks.delete())
    await conn.execute(
        text(
            "INSERT INTO register_days (school_urn, date, code, category, sessions) "
            "SELECT school_urn, date, code, MIN(category), COUNT(*) FROM register "
            "GROUP BY school_urn, date, code"
        )
    )
    await conn.execute(
        text(
            "INSERT INTO register_weeks (school_urn, week, upn, present, aea, authorised, unauthorised, "  # noqa: S608 - constants only
            f"not_counted) SELECT school_urn, {monday}, upn, {sums}, {other} FROM register "
            f"GROUP BY school_urn, {monday}, upn"
        )
    )


async def enrolments_in_weeks(
    conn: AsyncConnection, first_monday: dt.date, last_monday: dt.date, schools: Iterable[str]
) -> list[Enrolment]:
    """Per-enrolment counts over whole Monday–Sunday weeks of some schools, from the weekly sums
    (for PA/SA over a period without reading the register)."""
    w = t.register_weeks.c
    q = (
        select(
            w.upn,
            w.school_urn,
            func.sum(w.present).label("present"),
            func.sum(w.aea).label("aea"),
            func.sum(w.authorised).label("authorised"),
            func.sum(w.unauthorised).label("unauthorised"),
            func.sum(w.not_counted).label("not_counted"),
        )
        .where(w.school_urn.in_(sorted(schools)), w.week >= first_monday, w.week <= last_monday)
        .group_by(w.school_urn, w.upn)
    )
    counts: dict[tuple[str, str], tuple[Counts, str | None]] = {}
    for r in await conn.execute(q):
        c = Counts(present=int(r.present), aea=int(r.aea), authorised=int(r.authorised),
                   unauthorised=int(r.unauthorised), not_counted=int(r.not_counted))  # fmt: skip
        c.possible = c.present + c.aea + c.authorised + c.unauthorised
        counts[(r.upn, r.school_urn)] = (c, None)
    return await _with_attrs(conn, counts, None, schools)


async def _with_attrs(
    conn: AsyncConnection,
    counts: dict[tuple[str, str], tuple[Counts, str | None]],
    school: str | None,
    schools: Iterable[str] | None = None,
) -> list[Enrolment]:
    out = []
    for row in await conn.execute(_attrs_query(school, schools)):
        found = counts.get((row.upn, row.school_urn))
        if found is None:
            continue
        out.append(Enrolment(row.upn, row.school_urn, found[0], found[1], dict(row._mapping)))
    return out


async def _day_sums(
    conn: AsyncConnection, key: Any, start: dt.date, end: dt.date, schools: Iterable[str] | None
) -> dict[Any, Counts]:
    """Sessions between ``start`` and ``end`` from the register's daily sums, summed in SQL by ``key``."""
    d = t.register_days.c
    q = (
        select(
            key.label("key"),
            d.category,
            func.sum(d.sessions).label("n"),
            func.sum(case((d.code == "G", d.sessions), else_=0)).label("holiday"),
            func.sum(case((d.code == "C2", d.sessions), else_=0)).label("part_time"),
        )
        .where(d.date >= start, d.date <= end)
        .group_by(key, d.category)
    )
    if schools is not None:
        q = q.where(d.school_urn.in_(sorted(schools)))
    out: dict[Any, Counts] = defaultdict(Counts)
    for row in await conn.execute(q):
        c = out[row.key]
        c.add_category(row.category, int(row.n))
        c.holiday += int(row.holiday)
        c.part_time += int(row.part_time)
    return out


async def day_counts(
    conn: AsyncConnection, start: dt.date, end: dt.date, schools: Iterable[str] | None = None
) -> dict[dt.date, Counts]:
    """Sessions per day (of the given schools, or all)."""
    return await _day_sums(conn, t.register_days.c.date, start, end, schools)


async def school_counts(conn: AsyncConnection, start: dt.date, end: dt.date) -> dict[str, Counts]:
    """Sessions per school over a period."""
    return await _day_sums(conn, t.register_days.c.school_urn, start, end, None)


def by_week(days: dict[dt.date, Counts]) -> list[dict[str, Any]]:
    """The trend by school week: sessions and rates per Monday–Sunday week."""
    weeks: dict[dt.date, Counts] = defaultdict(Counts)
    for day, c in days.items():
        weeks[week_start(day)].add(c)
    return [
        {"key": monday.isoformat(), "week_start": monday.isoformat(), **measures(weeks[monday])}
        for monday in sorted(weeks)
    ]


async def weekly(
    conn: AsyncConnection, start: dt.date, end: dt.date, school: str | None = None
) -> list[dict[str, Any]]:
    """The trend by school week for the LA or one school."""
    return by_week(await day_counts(conn, start, end, [school] if school else None))


@cache
def reference_figures() -> dict[str, dict[str, dict[str, float]]]:
    text = files("shared.policies").joinpath("reference.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def headline(summary_now: dict[str, Any]) -> dict[str, float | None]:
    return {
        "overall_absence": summary_now["absence_rate"],
        "authorised_absence": summary_now["authorised_rate"],
        "unauthorised_absence": summary_now["unauthorised_rate"],
        "persistent_absence": summary_now["persistent_absence_rate"],
        "severe_absence": summary_now["severe_absence_rate"],
    }


def comparison(
    this_year: dict[str, float | None], year: AcademicYear, last_year: dict[str, float | None] | None
) -> dict[str, Any]:
    """The strategy's headline table: this year, last year, change, national, difference."""
    ref = reference_figures()
    previous = AcademicYear(year.start_year - 1).label
    last_source = "register"
    if last_year is None and previous in ref.get("la", {}):
        last_year, last_source = dict(ref["la"][previous]), "reference"
    national_year = (
        year.label if year.label in ref.get("national", {}) else max(ref.get("national", {}), default=None)
    )
    national: dict[str, float | None] | None = dict(ref["national"][national_year]) if national_year else None

    def diff(
        a: dict[str, float | None] | None, b: dict[str, float | None] | None
    ) -> dict[str, float | None] | None:
        if a is None or b is None:
            return None
        return {k: (a[k] - b[k]) if a.get(k) is not None and b.get(k) is not None else None for k in a}  # type: ignore[operator]

    return {
        "this_year": {"year": year.label, **this_year},
        "last_year": {"year": previous, "source": last_source, **last_year} if last_year else None,
        "change": diff(this_year, last_year),
        "national": {"year": national_year, **national} if national else None,
        "difference_to_national": diff(this_year, national),
    }
