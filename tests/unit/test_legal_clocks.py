"""Statutory clocks of the legal workflow: month/year arithmetic, school days and the boundaries
(day 21 vs 22, exactly 3 years, the last day of the 6-month limit, the ESO extension window)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.legal.clocks import (
    SchoolDays,
    add_months,
    add_years,
    counting_window_last_day,
    days_after,
    eso_extension_opens,
    eso_last_day,
    in_same_window,
    laying_limit,
)
from shared.calendar import Calendars, Closure, SchoolCalendar, Term

CAL = Calendars(
    [
        SchoolCalendar.build(
            "2024-25",
            [
                Term(date(2024, 9, 3), date(2024, 10, 25)),
                Term(date(2024, 11, 4), date(2024, 12, 20)),
                Term(date(2025, 1, 6), date(2025, 2, 14)),
                Term(date(2025, 2, 24), date(2025, 4, 4)),
            ],
            [Closure(date(2024, 11, 11), "ALL", "INSET")],
        )
    ]
)


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (date(2025, 1, 15), 6, date(2025, 7, 15)),
        (date(2024, 8, 31), 6, date(2025, 2, 28)),  # no 31 February: the last day of the month
        (date(2023, 8, 31), 6, date(2024, 2, 29)),  # leap year
        (date(2025, 10, 31), 4, date(2026, 2, 28)),
        (date(2026, 1, 15), -3, date(2025, 10, 15)),
        (date(2025, 5, 31), -3, date(2025, 2, 28)),
        (date(2024, 12, 31), 1, date(2025, 1, 31)),
    ],
)
def test_add_months_corresponding_date(start: date, months: int, expected: date) -> None:
    assert add_months(start, months) == expected


def test_add_years_29_february_becomes_28_february() -> None:
    assert add_years(date(2028, 2, 29), 3) == date(2031, 2, 28)
    assert add_years(date(2028, 2, 29), 4) == date(2032, 2, 29)


@given(st.dates(min_value=date(1990, 1, 1), max_value=date(2090, 12, 31)), st.integers(-60, 60))
def test_add_months_lands_in_the_right_month_never_later_in_it(d: date, months: int) -> None:
    out = add_months(d, months)
    assert (out.year * 12 + out.month) - (d.year * 12 + d.month) == months
    assert out.day <= d.day
    assert out.day == d.day or (out + timedelta(days=1)).month != out.month  # clamped to month end


def test_penalty_periods_exclude_the_issue_date() -> None:
    issued = date(2024, 10, 1)
    assert days_after(issued, 21) == date(2024, 10, 22)
    assert days_after(issued, 28) == date(2024, 10, 29)


def test_laying_limit_last_day_is_the_corresponding_date_six_months_on() -> None:
    assert laying_limit(date(2025, 1, 15), 6) == date(2025, 7, 15)
    assert laying_limit(date(2024, 8, 31), 6) == date(2025, 2, 28)


def test_counting_window_ends_the_day_before_the_third_anniversary() -> None:
    first = date(2024, 10, 1)
    assert counting_window_last_day(first, 3) == date(2027, 9, 30)
    assert in_same_window(first, date(2027, 9, 30), 3)
    assert not in_same_window(first, date(2027, 10, 1), 3)  # exactly 3 years after
    assert in_same_window(first, first, 3)
    assert not in_same_window(date(2025, 1, 1), date(2024, 12, 31), 3)  # order matters


def test_eso_runs_one_year_beginning_with_the_day_made() -> None:
    assert eso_last_day(date(2025, 1, 15), 1, None) == date(2026, 1, 14)
    assert eso_last_day(date(2025, 1, 15), 1, date(2025, 6, 27)) == date(2025, 6, 27)  # CSA ends first
    assert eso_extension_opens(date(2026, 1, 14), 3) == date(2025, 10, 15)
    # Ending on 30 November: expires at the start of 1 December, window opens 1 September.
    assert eso_extension_opens(date(2025, 11, 30), 3) == date(2025, 9, 1)


def test_school_days_weekdays_without_a_calendar() -> None:
    days = SchoolDays()
    assert days.before(date(2025, 3, 14), 10) == date(2025, 2, 28)  # Fri → Fri two weeks before
    assert days.before(date(2025, 3, 17), 1) == date(2025, 3, 14)  # Monday → the Friday before
    assert not days.is_school_day(date(2025, 3, 15))


def test_school_days_follow_the_calendar_and_weekdays_beyond_it() -> None:
    days = SchoolDays(CAL)
    # 10 school days before Fri 8 Nov 2024, across the half-term (28 Oct – 1 Nov).
    assert days.before(date(2024, 11, 8), 10) == date(2024, 10, 18)
    assert not days.is_school_day(date(2024, 11, 11))  # INSET
    assert not days.is_school_day(date(2025, 4, 7))  # Easter holiday: in the year's calendar, no term
    assert days.is_school_day(date(2025, 9, 10))  # 2025-26 has no calendar: weekdays


def test_nti_period_counts_whole_school_weeks_after_the_notice_week() -> None:
    days = SchoolDays(CAL)
    # Given Wed 16 Oct 2024: weeks of 21 Oct, (half-term skipped) 4 Nov, 11 Nov, 18 Nov → Fri 22 Nov.
    assert days.weeks_after(date(2024, 10, 16), 4) == date(2024, 11, 22)
    assert SchoolDays().weeks_after(date(2024, 10, 16), 4) == date(2024, 11, 15)
    # A week whose only school day is its Monday still counts, ending on that Monday.
    one_day = Calendars([SchoolCalendar.build("2024-25", [Term(date(2024, 9, 2), date(2024, 9, 9))])])
    assert SchoolDays(one_day).weeks_after(date(2024, 9, 4), 1) == date(2024, 9, 9)
