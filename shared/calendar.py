"""School calendars: academic years, terms, closures, school sessions and school weeks.

A school session is an AM or PM session on a Monday–Friday inside one of the school's terms
and not closed (SPEC §1; School Attendance (Pupil Registration) (England) Regulations 2024,
which require a mark for every session the school meets). A school week is any Monday–Sunday
week in which the school has at least one school session (national penalty notice framework,
August 2024; SPEC §5.3).
"""

from __future__ import annotations

import datetime as dt
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from functools import cached_property
from itertools import pairwise

_ONE_DAY = timedelta(days=1)
_CLOSURE_SESSIONS = frozenset({"AM", "PM", "ALL"})
_LABEL = re.compile(r"(\d{4})-(\d{2})")


class Session(StrEnum):
    """The two registration sessions of a school day (Regulations 2024, reg. 10)."""

    AM = "AM"
    PM = "PM"


class CalendarError(ValueError):
    """An invalid calendar; `errors` holds every problem as (field path, detail)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{path}: {detail}" for path, detail in errors))
        self.errors = errors


def week_start(d: date) -> date:
    """The Monday of the Monday–Sunday week containing `d`."""
    return d - timedelta(days=d.weekday())


@dataclass(frozen=True, order=True)
class AcademicYear:
    """An academic year, 1 September to 31 August (SPEC §1), named by the year it starts in."""

    start_year: int

    @property
    def label(self) -> str:
        """The conventional label, e.g. "2024-25"."""
        return f"{self.start_year}-{(self.start_year + 1) % 100:02d}"

    @property
    def first_day(self) -> date:
        return date(self.start_year, 9, 1)

    @property
    def last_day(self) -> date:
        return date(self.start_year + 1, 8, 31)

    def __contains__(self, d: object) -> bool:
        return isinstance(d, date) and self.first_day <= d <= self.last_day

    @classmethod
    def parse(cls, label: str) -> AcademicYear:
        """Parse "YYYY-YY" where the second year follows the first ("2024-25", "1999-00")."""
        m = _LABEL.fullmatch(label)
        if m is None or int(m[2]) != (int(m[1]) + 1) % 100:
            raise CalendarError(
                [("year", f"{label!r} is not an academic year label like '2024-25' (consecutive years)")]
            )
        return cls(int(m[1]))

    @classmethod
    def of(cls, d: date) -> AcademicYear:
        """The academic year containing `d`."""
        return cls(d.year if d.month >= 9 else d.year - 1)


@dataclass(frozen=True)
class Term:
    """A term (or half-term) as the school publishes it: first and last day, inclusive."""

    start: date
    end: date


@dataclass(frozen=True)
class Closure:
    """A closed session on a term day: INSET, bank holiday or planned closure.

    `session` is "AM", "PM" or "ALL" (both sessions).
    """

    date: dt.date
    session: str
    reason: str


@dataclass(frozen=True)
class SchoolCalendar:
    """One school's calendar for one academic year (SPEC §1).

    Constructing one validates it and raises a single `CalendarError` listing every problem:
    each term starts on or before it ends and lies inside the academic year, terms do not
    overlap, closures fall inside the academic year and name AM, PM or ALL. A closure on a day
    that is not a term day is allowed (schools list bank holidays that fall in the holidays).
    """

    year: AcademicYear
    terms: tuple[Term, ...]
    closures: tuple[Closure, ...] = ()

    def __post_init__(self) -> None:
        errors = _validate(self.year, self.terms, self.closures)
        if errors:
            raise CalendarError(errors)

    # cached_property writes to the instance __dict__ directly, so it works on a frozen
    # dataclass and keeps the derived lookups out of fields(), asdict() and equality.
    @cached_property
    def _ordered(self) -> tuple[tuple[date, Session], ...]:
        return tuple(_school_sessions(self.terms, self.closures))

    @cached_property
    def _sessions(self) -> frozenset[tuple[date, Session]]:
        return frozenset(self._ordered)

    @classmethod
    def build(
        cls, year: AcademicYear | str, terms: Iterable[Term], closures: Iterable[Closure] = ()
    ) -> SchoolCalendar:
        """Build and validate a calendar; `year` may be an `AcademicYear` or a label like "2024-25"."""
        if isinstance(year, str):
            year = AcademicYear.parse(year)
        return cls(year, tuple(terms), tuple(closures))

    def is_school_session(self, d: date, s: Session | str) -> bool:
        """Whether the school meets on `d` in session `s` ("AM"/"PM")."""
        # Session is a StrEnum, so a plain "AM" hashes and compares equal to Session.AM.
        return (d, s) in self._sessions

    def sessions(self) -> list[tuple[date, Session]]:
        """Every school session of the year, in date then AM/PM order."""
        return list(self._ordered)

    def school_days(self) -> list[date]:
        """Every day with at least one school session (a half-closed day still counts)."""
        return _days(self._ordered)


def _validate(
    year: AcademicYear, terms: tuple[Term, ...], closures: tuple[Closure, ...]
) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    for i, term in enumerate(terms):
        if term.start > term.end:
            errors.append((f"terms[{i}].end", f"{term.end} is before the term's start {term.start}"))
        for end in ("start", "end"):
            d: date = getattr(term, end)
            if d not in year:
                errors.append((f"terms[{i}].{end}", f"{d} is outside academic year {year.label}"))
    by_start = sorted((i for i, t in enumerate(terms) if t.start <= t.end), key=lambda i: (terms[i].start, i))
    for earlier, later in pairwise(by_start):
        if terms[later].start <= terms[earlier].end:
            errors.append(
                (
                    f"terms[{later}].start",
                    f"term {terms[later].start}–{terms[later].end} overlaps "
                    f"terms[{earlier}] {terms[earlier].start}–{terms[earlier].end}",
                )
            )
    for i, closure in enumerate(closures):
        if closure.date not in year:
            errors.append((f"closures[{i}].date", f"{closure.date} is outside academic year {year.label}"))
        if closure.session not in _CLOSURE_SESSIONS:
            errors.append((f"closures[{i}].session", f"{closure.session!r} is not one of AM, PM, ALL"))
    return errors


def _school_sessions(terms: tuple[Term, ...], closures: tuple[Closure, ...]) -> list[tuple[date, Session]]:
    closed: set[tuple[date, Session]] = set()
    for c in closures:
        if c.session == "ALL":
            closed.update({(c.date, Session.AM), (c.date, Session.PM)})
        else:
            closed.add((c.date, Session(c.session)))
    out: list[tuple[date, Session]] = []
    for term in sorted(terms, key=lambda t: t.start):
        d = term.start
        while d <= term.end:
            if d.weekday() < 5:
                out.extend((d, s) for s in (Session.AM, Session.PM) if (d, s) not in closed)
            d += _ONE_DAY
    return out


def _days(sessions: Iterable[tuple[date, Session]]) -> list[date]:
    # Sessions arrive sorted, so a day's two sessions are adjacent.
    days: list[date] = []
    for d, _ in sessions:
        if not days or days[-1] != d:
            days.append(d)
    return days


class Calendars:
    """One school's calendars across academic years, for windows that span 31 Aug / 1 Sep.

    A date in a year with no calendar has no school sessions. Two calendars for the same
    academic year are refused.
    """

    def __init__(self, calendars: Iterable[SchoolCalendar]) -> None:
        by_year: dict[AcademicYear, SchoolCalendar] = {}
        errors: list[tuple[str, str]] = []
        for i, cal in enumerate(calendars):
            if cal.year in by_year:
                errors.append((f"calendars[{i}].year", f"a second calendar for {cal.year.label}"))
            by_year[cal.year] = cal
        if errors:
            raise CalendarError(errors)
        self._by_year = dict(sorted(by_year.items()))
        self._ordered: list[tuple[date, Session]] = [
            s for cal in self._by_year.values() for s in cal.sessions()
        ]
        self._sessions = frozenset(self._ordered)
        self._session_dates = [d for d, _ in self._ordered]
        self._days = _days(self._ordered)

    @property
    def years(self) -> tuple[AcademicYear, ...]:
        """The academic years with a calendar, in order."""
        return tuple(self._by_year)

    def is_school_session(self, d: date, s: Session | str) -> bool:
        """Whether the school meets on `d` in session `s`; False for a year with no calendar."""
        return (d, s) in self._sessions

    def sessions_between(self, start: date, end: date) -> list[tuple[date, Session]]:
        """School sessions from `start` to `end` inclusive, in order."""
        lo = bisect_left(self._session_dates, start)
        hi = bisect_right(self._session_dates, end)
        return self._ordered[lo:hi]

    def school_days_between(self, start: date, end: date) -> list[date]:
        """Days with at least one school session, from `start` to `end` inclusive."""
        return self._days[bisect_left(self._days, start) : bisect_right(self._days, end)]

    def school_weeks_between(self, start: date, end: date) -> list[date]:
        """The Mondays of the school weeks with a school session between `start` and `end`.

        A school week is any Monday–Sunday week in which the school has at least one session,
        even a single one (national penalty notice framework, August 2024; SPEC §5.3). Only
        sessions inside [start, end] count, so a window starting mid-week includes that week
        only if a session falls on or after `start`.
        """
        weeks: list[date] = []
        for d in self.school_days_between(start, end):
            monday = week_start(d)
            if not weeks or weeks[-1] != monday:
                weeks.append(monday)
        return weeks
