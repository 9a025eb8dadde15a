"""Statutory clocks of the legal workflow: calendar arithmetic and school days (pure, no I/O).

How days, months and years are counted (decisions, where SPEC §7 is silent):

* **"Within N days of" a date excludes that date** (the general rule of English law for periods
  running *from* an event). A penalty notice issued on 1 October is payable at the reduced rate up
  to and including 22 October (day 21) and at the full rate up to and including 29 October (day
  28); a payment on 23 October (day 22) is at the full rate; from 30 October it is unpaid.
  Education (Penalty Notices) (England) Regulations 2007 as amended 2024, reg. 4: "£80 if paid
  within 21 days of receipt … £160 if paid after 21 days but within 28 days"; the LA records as
  ``issued_on`` the date the notice was received (handed over, or deemed served by post).
* **Months and years are calendar months** (Interpretation Act 1978 sch. 1) counted with the
  *corresponding date rule* (Dodds v Walker [1981] 1 WLR 1441): the period ends on the same day
  of the month N months later, or on the last day of that month when it has no such day (31
  August + 6 months = 28/29 February; 29 February 2028 + 3 years = 28 February 2031). This
  differs on purpose from ``shared.csa.birthday`` (29 February → 1 March), which follows the rule
  for attaining an *age*.
* **6-month limit for laying an information** (Magistrates' Courts Act 1980 s127: "within six
  months from the time when the offence was committed"): the day of the offence is excluded, so
  the last day is the corresponding date 6 months later — an offence whose clock starts on 15
  January may be laid up to and including 15 July.
* **A period of years "beginning with" a date includes that date.** A penalty notice counts
  toward the limit of 2 in a rolling 3 years from its issue date up to the day before the 3rd
  anniversary: a notice issued exactly 3 years after the first no longer sees the first. An ESO
  "has effect for one year beginning with the date on which it is made" (Children Act 1989 sch. 3
  para 15(1)): made on 15 January 2025, its last day is 14 January 2026; it ends earlier when
  compulsory school age ends (para 15(6)).
* **ESO extension window**: an application may be made "within the period of three months before
  the time when it would otherwise expire" (para 15(2)); the order expires at the end of its last
  day, so the window opens on the corresponding date 3 months before the day after the last day
  (made 15 January 2025 → expires after 14 January 2026 → window opens 15 October 2025).
* **School days and school weeks** (deadline announcements, Notice to Improve periods) use the
  school's calendar for each academic year it has published; for a year without a calendar
  (typically the next one) every Monday–Friday counts. A school week is a Monday–Sunday week with
  at least one school day (as in ``shared.calendar``).
"""

from __future__ import annotations

import calendar as _cal
from datetime import date, timedelta

from shared.calendar import AcademicYear, Calendars, week_start

ONE_DAY = timedelta(days=1)


def add_months(d: date, months: int) -> date:
    """``d`` moved by ``months`` calendar months (negative: back), by the corresponding date rule."""
    index = d.year * 12 + (d.month - 1) + months
    year, month = divmod(index, 12)
    last = _cal.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(d.day, last))


def add_years(d: date, years: int) -> date:
    """``d`` moved by ``years`` years by the corresponding date rule (29 February → 28 February)."""
    return add_months(d, 12 * years)


def days_after(d: date, days: int) -> date:
    """The last day of a period of ``days`` days running from ``d`` (``d`` itself not counted)."""
    return d + timedelta(days=days)


def laying_limit(clock_start: date, months: int) -> date:
    """The last day on which an information may be laid for an offence whose clock starts on
    ``clock_start`` (Magistrates' Courts Act 1980 s127; the day of the offence excluded)."""
    return add_months(clock_start, months)


def counting_window_last_day(issued_on: date, years: int) -> date:
    """The last day a penalty notice issued on ``issued_on`` counts toward the limit: the day
    before its ``years``-th anniversary (a period of years beginning with the issue date)."""
    return add_years(issued_on, years) - ONE_DAY


def in_same_window(earlier: date, later: date, years: int) -> bool:
    """Whether two notices fall within one rolling period of ``years`` years."""
    return earlier <= later < add_years(earlier, years)


def eso_last_day(made_on: date, years: int, csa_end: date | None) -> date:
    """The last day of an ESO made on ``made_on`` for ``years`` years (sch. 3 para 15(1)),
    or the end of compulsory school age if sooner (para 15(6))."""
    last = add_years(made_on, years) - ONE_DAY
    return min(last, csa_end) if csa_end is not None else last


def eso_extension_opens(last_day: date, months: int) -> date:
    """The first day on which an extension of an ESO ending on ``last_day`` may be applied for:
    ``months`` months before the time it would otherwise expire (the end of ``last_day``)."""
    return add_months(last_day + ONE_DAY, -months)


class SchoolDays:
    """One school's school days: its calendar where it has one for the academic year, else Mon–Fri."""

    def __init__(self, calendars: Calendars | None = None) -> None:
        self._calendars = calendars
        self._years = frozenset(calendars.years) if calendars is not None else frozenset()

    def is_school_day(self, d: date) -> bool:
        if self._calendars is not None and AcademicYear.of(d) in self._years:
            return bool(self._calendars.school_days_between(d, d))
        return d.weekday() < 5

    def before(self, due: date, n: int) -> date:
        """The ``n``-th school day before ``due`` (``due`` itself not counted): on that day there
        are exactly ``n`` school days left before the due date."""
        d, seen = due, 0
        while seen < n:
            d -= ONE_DAY
            if self.is_school_day(d):
                seen += 1
        return d

    def is_school_week(self, monday: date) -> bool:
        return any(self.is_school_day(monday + timedelta(days=i)) for i in range(7))

    def weeks_after(self, d: date, n: int) -> date:
        """The last school day of the ``n``-th school week after the week containing ``d``.

        A Notice to Improve given on ``d`` runs for ``n`` whole school weeks starting with the
        next school week (weeks without a school day are skipped), so a parent always has the
        full period and a notice given mid-week does not lose the rest of that week.
        """
        monday, counted = week_start(d), 0
        for _ in range(n * 10 + 60):  # bounded: even a calendar full of holidays ends somewhere
            monday += timedelta(days=7)
            if self.is_school_week(monday):
                counted += 1
                if counted == n:
                    days = [monday + timedelta(days=i) for i in range(7)]
                    return max(x for x in days if self.is_school_day(x))
        raise ValueError(f"no {n} school weeks after {d}")
