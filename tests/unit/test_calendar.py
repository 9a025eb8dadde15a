"""School calendars, sessions and school weeks (SPEC §1, §5.3)."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.calendar import (
    AcademicYear,
    CalendarError,
    Calendars,
    Closure,
    SchoolCalendar,
    Session,
    Term,
    week_start,
)

AM, PM = Session.AM, Session.PM
Y2024 = AcademicYear(2024)

# A Sefton-like 2024-25: six half-terms, INSET days and a bank holiday.
TERMS_2024 = (
    Term(date(2024, 9, 3), date(2024, 10, 25)),
    Term(date(2024, 11, 4), date(2024, 12, 20)),
    Term(date(2025, 1, 6), date(2025, 2, 14)),
    Term(date(2025, 2, 24), date(2025, 4, 4)),
    Term(date(2025, 4, 22), date(2025, 5, 23)),
    Term(date(2025, 6, 2), date(2025, 7, 22)),
)
CLOSURES_2024 = (
    Closure(date(2024, 9, 3), "ALL", "INSET"),
    Closure(date(2024, 11, 4), "ALL", "INSET"),
    Closure(date(2025, 5, 5), "ALL", "Early May bank holiday"),
    Closure(date(2025, 2, 28), "PM", "INSET (afternoon)"),
    Closure(date(2025, 3, 3), "AM", "polling station"),
)


def sefton_2024() -> SchoolCalendar:
    return SchoolCalendar.build(Y2024, TERMS_2024, CLOSURES_2024)


def summer_2023_24() -> SchoolCalendar:
    return SchoolCalendar.build(
        "2023-24",
        [Term(date(2024, 6, 3), date(2024, 7, 19))],
        [Closure(date(2024, 7, 19), "PM", "early finish")],
    )


# --- academic years ------------------------------------------------------------------------


def test_academic_year_label_and_bounds() -> None:
    assert Y2024.label == "2024-25"
    assert Y2024.first_day == date(2024, 9, 1)
    assert Y2024.last_day == date(2025, 8, 31)
    assert AcademicYear(1999).label == "1999-00"
    assert AcademicYear(2009).label == "2009-10"


@pytest.mark.parametrize(("label", "start"), [("2024-25", 2024), ("1999-00", 1999), ("2009-10", 2009)])
def test_academic_year_parse(label: str, start: int) -> None:
    assert AcademicYear.parse(label) == AcademicYear(start)
    assert AcademicYear.parse(label).label == label


@pytest.mark.parametrize(
    "label", ["2024-26", "2024-24", "2024/25", "24-25", "2024-2025", " 2024-25", "2024-25 ", "", "abcd-ef"]
)
def test_academic_year_parse_refuses_anything_else(label: str) -> None:
    with pytest.raises(CalendarError) as caught:
        AcademicYear.parse(label)
    assert [path for path, _ in caught.value.errors] == ["year"]


@pytest.mark.parametrize(
    ("d", "start"),
    [
        (date(2024, 8, 31), 2023),
        (date(2024, 9, 1), 2024),
        (date(2025, 1, 1), 2024),
        (date(2025, 8, 31), 2024),
        (date(2025, 9, 1), 2025),
    ],
)
def test_academic_year_of(d: date, start: int) -> None:
    assert AcademicYear.of(d) == AcademicYear(start)


def test_academic_years_order_and_contain() -> None:
    assert AcademicYear(2023) < AcademicYear(2024)
    assert date(2024, 9, 1) in Y2024
    assert date(2025, 8, 31) in Y2024
    assert date(2024, 8, 31) not in Y2024
    assert date(2025, 9, 1) not in Y2024


def test_week_start_is_the_monday() -> None:
    assert week_start(date(2024, 9, 2)) == date(2024, 9, 2)  # Monday
    assert week_start(date(2024, 9, 8)) == date(2024, 9, 2)  # Sunday
    assert week_start(date(2024, 9, 1)) == date(2024, 8, 26)  # Sunday, previous week


# --- validation ----------------------------------------------------------------------------


def test_build_collects_every_error() -> None:
    with pytest.raises(CalendarError) as caught:
        SchoolCalendar.build(
            Y2024,
            [
                Term(date(2024, 9, 3), date(2024, 10, 25)),
                Term(date(2024, 12, 20), date(2024, 11, 4)),  # ends before it starts
                Term(date(2024, 10, 21), date(2024, 11, 1)),  # overlaps terms[0]
                Term(date(2025, 7, 1), date(2025, 9, 3)),  # runs past 31 Aug
                Term(date(2024, 8, 28), date(2024, 8, 30)),  # before 1 Sep
            ],
            [
                Closure(date(2025, 9, 1), "ALL", "next year"),
                Closure(date(2024, 9, 3), "am", "lower case"),
                Closure(date(2023, 1, 1), "EVENING", "both wrong"),
            ],
        )
    assert caught.value.errors == [
        ("terms[1].end", "2024-11-04 is before the term's start 2024-12-20"),
        ("terms[3].end", "2025-09-03 is outside academic year 2024-25"),
        ("terms[4].start", "2024-08-28 is outside academic year 2024-25"),
        ("terms[4].end", "2024-08-30 is outside academic year 2024-25"),
        ("terms[2].start", "term 2024-10-21–2024-11-01 overlaps terms[0] 2024-09-03–2024-10-25"),
        ("closures[0].date", "2025-09-01 is outside academic year 2024-25"),
        ("closures[1].session", "'am' is not one of AM, PM, ALL"),
        ("closures[2].date", "2023-01-01 is outside academic year 2024-25"),
        ("closures[2].session", "'EVENING' is not one of AM, PM, ALL"),
    ]
    assert isinstance(caught.value, ValueError)
    assert "terms[1].end" in str(caught.value)


def test_terms_touching_on_one_day_overlap() -> None:
    with pytest.raises(CalendarError) as caught:
        SchoolCalendar.build(
            Y2024, [Term(date(2024, 9, 2), date(2024, 9, 6)), Term(date(2024, 9, 6), date(2024, 9, 13))]
        )
    assert [p for p, _ in caught.value.errors] == ["terms[1].start"]


def test_overlap_is_found_whatever_the_order_terms_are_given_in() -> None:
    with pytest.raises(CalendarError) as caught:
        SchoolCalendar.build(
            Y2024, [Term(date(2025, 1, 6), date(2025, 2, 14)), Term(date(2024, 9, 2), date(2025, 1, 6))]
        )
    assert [p for p, _ in caught.value.errors] == ["terms[0].start"]


def test_direct_construction_validates_too() -> None:
    with pytest.raises(CalendarError):
        SchoolCalendar(Y2024, (Term(date(2024, 9, 6), date(2024, 9, 2)),), ())


def test_build_accepts_a_label_and_a_single_day_term() -> None:
    cal = SchoolCalendar.build("2024-25", [Term(date(2024, 9, 2), date(2024, 9, 2))], [])
    assert cal.year == Y2024
    assert cal.sessions() == [(date(2024, 9, 2), AM), (date(2024, 9, 2), PM)]


def test_empty_calendar_has_no_sessions() -> None:
    cal = SchoolCalendar.build(Y2024, [], [])
    assert cal.sessions() == []
    assert cal.school_days() == []


def test_calendar_is_immutable() -> None:
    cal = sefton_2024()
    with pytest.raises(FrozenInstanceError):
        cal.terms = ()  # type: ignore[misc]


# --- school sessions -----------------------------------------------------------------------


def test_sefton_year_session_count() -> None:
    cal = sefton_2024()
    weekdays = sum(
        1
        for t in TERMS_2024
        for n in range((t.end - t.start).days + 1)
        if (t.start + timedelta(n)).weekday() < 5
    )
    # three whole days and two half days closed
    assert len(cal.sessions()) == 2 * weekdays - 3 * 2 - 2
    assert len(cal.school_days()) == weekdays - 3


def test_weekday_in_term_is_a_school_session_both_sessions() -> None:
    cal = sefton_2024()
    assert cal.is_school_session(date(2024, 9, 4), AM)
    assert cal.is_school_session(date(2024, 9, 4), PM)
    assert cal.is_school_session(date(2024, 9, 4), "AM")
    assert cal.is_school_session(date(2024, 9, 4), "PM")


@pytest.mark.parametrize("d", [date(2024, 9, 7), date(2024, 9, 8)])
def test_weekends_are_not_school_sessions(d: date) -> None:
    assert not sefton_2024().is_school_session(d, AM)
    assert not sefton_2024().is_school_session(d, PM)


@pytest.mark.parametrize("d", [date(2024, 9, 2), date(2024, 10, 30), date(2024, 12, 25), date(2025, 8, 1)])
def test_holidays_are_not_school_sessions(d: date) -> None:
    assert not sefton_2024().is_school_session(d, AM)
    assert not sefton_2024().is_school_session(d, PM)


def test_all_day_closure_closes_both_sessions() -> None:
    cal = sefton_2024()
    assert not cal.is_school_session(date(2025, 5, 5), AM)
    assert not cal.is_school_session(date(2025, 5, 5), PM)
    assert date(2025, 5, 5) not in cal.school_days()


def test_am_closure_leaves_pm_and_pm_closure_leaves_am() -> None:
    cal = sefton_2024()
    assert not cal.is_school_session(date(2025, 3, 3), AM)
    assert cal.is_school_session(date(2025, 3, 3), PM)
    assert cal.is_school_session(date(2025, 2, 28), AM)
    assert not cal.is_school_session(date(2025, 2, 28), PM)
    # a half-open day is still a school day
    assert date(2025, 3, 3) in cal.school_days()
    assert date(2025, 2, 28) in cal.school_days()


@pytest.mark.parametrize("s", ["ALL", "am", "", "pm"])
def test_anything_but_am_or_pm_is_not_a_session(s: str) -> None:
    assert not sefton_2024().is_school_session(date(2024, 9, 4), s)


def test_closure_outside_a_term_is_harmless() -> None:
    cal = SchoolCalendar.build(
        Y2024, [Term(date(2024, 9, 2), date(2024, 9, 6))], [Closure(date(2024, 12, 25), "ALL", "Christmas")]
    )
    assert len(cal.sessions()) == 10


def test_sessions_are_sorted_date_then_am_pm() -> None:
    sessions = SchoolCalendar.build(Y2024, reversed(TERMS_2024), CLOSURES_2024).sessions()
    assert sessions == sorted(sessions)
    assert sessions[:3] == [(date(2024, 9, 4), AM), (date(2024, 9, 4), PM), (date(2024, 9, 5), AM)]


# --- several years, school weeks -----------------------------------------------------------


def test_calendars_know_their_years_and_nothing_else() -> None:
    cals = Calendars([sefton_2024(), summer_2023_24()])
    assert cals.years == (AcademicYear(2023), AcademicYear(2024))
    assert cals.is_school_session(date(2024, 7, 19), "AM")
    assert not cals.is_school_session(date(2024, 7, 19), "PM")
    assert cals.is_school_session(date(2024, 9, 4), PM)
    # 2022-23 has no calendar
    assert not cals.is_school_session(date(2023, 3, 1), AM)


def test_two_calendars_for_one_year_are_refused() -> None:
    with pytest.raises(CalendarError) as caught:
        Calendars([sefton_2024(), summer_2023_24(), SchoolCalendar.build(Y2024, [], [])])
    assert [p for p, _ in caught.value.errors] == ["calendars[2].year"]


def test_no_calendars() -> None:
    cals = Calendars([])
    assert cals.years == ()
    assert cals.sessions_between(date(2000, 1, 1), date(2100, 1, 1)) == []
    assert cals.school_weeks_between(date(2000, 1, 1), date(2100, 1, 1)) == []


def test_window_across_half_term_skips_the_holiday_week() -> None:
    cals = Calendars([sefton_2024()])
    start, end = date(2024, 10, 21), date(2024, 11, 10)
    assert cals.school_weeks_between(start, end) == [date(2024, 10, 21), date(2024, 11, 4)]
    days = cals.school_days_between(start, end)
    assert days[:5] == [date(2024, 10, d) for d in range(21, 26)]
    # 4 Nov is INSET
    assert days[5:] == [date(2024, 11, d) for d in range(5, 9)]
    sessions = cals.sessions_between(start, end)
    assert len(sessions) == 18
    assert sessions[0] == (date(2024, 10, 21), AM)
    assert sessions[-1] == (date(2024, 11, 8), PM)


def test_window_across_31_august_uses_both_calendars() -> None:
    cals = Calendars([sefton_2024(), summer_2023_24()])
    weeks = cals.school_weeks_between(date(2024, 7, 1), date(2024, 9, 13))
    assert weeks == [
        date(2024, 7, 1),
        date(2024, 7, 8),
        date(2024, 7, 15),
        date(2024, 9, 2),  # 3 Sep INSET, teaching from 4 Sep
        date(2024, 9, 9),
    ]
    sessions = cals.sessions_between(date(2024, 7, 19), date(2024, 9, 4))
    assert sessions == [(date(2024, 7, 19), AM), (date(2024, 9, 4), AM), (date(2024, 9, 4), PM)]


def test_a_week_straddling_1_september_is_one_school_week() -> None:
    # 2023: Thursday 31 Aug ends one academic year, Friday 1 Sep starts the next.
    old = SchoolCalendar.build("2022-23", [Term(date(2023, 8, 31), date(2023, 8, 31))], [])
    new = SchoolCalendar.build("2023-24", [Term(date(2023, 9, 1), date(2023, 9, 1))], [])
    cals = Calendars([new, old])
    assert cals.school_weeks_between(date(2023, 8, 1), date(2023, 9, 30)) == [date(2023, 8, 28)]
    assert cals.school_days_between(date(2023, 8, 1), date(2023, 9, 30)) == [
        date(2023, 8, 31),
        date(2023, 9, 1),
    ]


def test_a_week_with_a_single_session_is_a_school_week() -> None:
    # Term ends on a Monday whose afternoon is closed: that week has one session.
    cal = SchoolCalendar.build(
        Y2024,
        [Term(date(2024, 9, 2), date(2024, 9, 6)), Term(date(2024, 9, 16), date(2024, 9, 16))],
        [Closure(date(2024, 9, 16), "PM", "training")],
    )
    cals = Calendars([cal])
    assert cals.sessions_between(date(2024, 9, 9), date(2024, 9, 22)) == [(date(2024, 9, 16), AM)]
    assert cals.school_weeks_between(date(2024, 9, 1), date(2024, 9, 30)) == [
        date(2024, 9, 2),
        date(2024, 9, 16),
    ]


def test_school_weeks_count_only_sessions_inside_the_window() -> None:
    cals = Calendars([sefton_2024()])
    # Saturday start: the week of 2 Sep has no session on or after 7 Sep
    assert cals.school_weeks_between(date(2024, 9, 7), date(2024, 9, 9)) == [date(2024, 9, 9)]
    # mid-week start still counts its week
    assert cals.school_weeks_between(date(2024, 9, 6), date(2024, 9, 6)) == [date(2024, 9, 2)]
    assert cals.school_weeks_between(date(2024, 9, 9), date(2024, 9, 1)) == []


def test_ten_school_weeks_span_a_half_term() -> None:
    cals = Calendars([sefton_2024()])
    weeks = cals.school_weeks_between(date(2024, 9, 1), date(2024, 11, 17))
    assert len(weeks) == 10  # 8 autumn-1 weeks, half-term skipped, then 2 more
    assert date(2024, 10, 28) not in weeks


# --- properties ----------------------------------------------------------------------------

SESSION_NAMES = st.sampled_from(["AM", "PM", "ALL"])


@st.composite
def calendars(draw: st.DrawFn) -> SchoolCalendar:
    year = AcademicYear(draw(st.integers(1990, 2060)))
    terms: list[Term] = []
    cursor = year.first_day
    for gap, length in draw(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 70)), max_size=7)):
        start = cursor + timedelta(gap)
        end = start + timedelta(length)
        if end > year.last_day:
            break
        terms.append(Term(start, end))
        cursor = end + timedelta(1)
    span = (year.last_day - year.first_day).days
    closures = [
        Closure(year.first_day + timedelta(offset), session, "closed")
        for offset, session in draw(st.lists(st.tuples(st.integers(0, span), SESSION_NAMES), max_size=30))
    ]
    order = draw(st.permutations(terms))
    return SchoolCalendar.build(year, order, closures)


def _closed(cal: SchoolCalendar, d: date, s: Session) -> bool:
    return any(c.date == d and c.session in (s, "ALL") for c in cal.closures)


@given(calendars())
def test_sessions_are_weekdays_inside_terms_and_never_closed(cal: SchoolCalendar) -> None:
    sessions = cal.sessions()
    assert sessions == sorted(set(sessions))
    for d, s in sessions:
        assert d.weekday() < 5
        assert any(t.start <= d <= t.end for t in cal.terms)
        assert not _closed(cal, d, s)
        assert cal.is_school_session(d, s)
        assert d in cal.year


@given(calendars())
def test_every_open_weekday_session_in_a_term_is_a_session(cal: SchoolCalendar) -> None:
    expected = {
        (t.start + timedelta(n), s)
        for t in cal.terms
        for n in range((t.end - t.start).days + 1)
        for s in (AM, PM)
        if (t.start + timedelta(n)).weekday() < 5 and not _closed(cal, t.start + timedelta(n), s)
    }
    assert set(cal.sessions()) == expected
    assert cal.school_days() == sorted({d for d, _ in expected})


@given(calendars(), st.integers(0, 400), st.integers(0, 120))
def test_windows_agree_with_the_session_list(cal: SchoolCalendar, offset: int, length: int) -> None:
    cals = Calendars([cal])
    start = cal.year.first_day - timedelta(20) + timedelta(offset)
    end = start + timedelta(length)
    inside = [(d, s) for d, s in cal.sessions() if start <= d <= end]
    assert cals.sessions_between(start, end) == inside
    assert cals.school_days_between(start, end) == sorted({d for d, _ in inside})
    weeks = cals.school_weeks_between(start, end)
    assert weeks == sorted({week_start(d) for d, _ in inside})
    assert all(w.weekday() == 0 for w in weeks)
