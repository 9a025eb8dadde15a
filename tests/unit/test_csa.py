"""Compulsory school age (SPEC §6): start on a prescribed day, end on the school leaving date."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.csa import birthday, csa_end, csa_start, is_compulsory_school_age, last_friday_of_june


@pytest.mark.parametrize(
    ("dob", "start"),
    [
        # 5th birthday exactly on a prescribed day starts CSA that day
        (date(2019, 8, 31), date(2024, 8, 31)),
        (date(2019, 12, 31), date(2024, 12, 31)),
        (date(2020, 3, 31), date(2025, 3, 31)),
        # one day after each moves to the next prescribed day
        (date(2019, 9, 1), date(2024, 12, 31)),
        (date(2020, 1, 1), date(2025, 3, 31)),
        (date(2020, 4, 1), date(2025, 8, 31)),
        # one day before each
        (date(2019, 8, 30), date(2024, 8, 31)),
        (date(2019, 12, 30), date(2024, 12, 31)),
        (date(2020, 3, 30), date(2025, 3, 31)),
        (date(2019, 1, 1), date(2024, 3, 31)),
        (date(2019, 6, 15), date(2024, 8, 31)),
        (date(2019, 10, 20), date(2024, 12, 31)),
    ],
)
def test_csa_start(dob: date, start: date) -> None:
    assert csa_start(dob) == start


@pytest.mark.parametrize(
    ("dob", "age", "expected"),
    [
        (date(2020, 2, 29), 5, date(2025, 3, 1)),  # common year: 1 March
        (date(2020, 2, 29), 4, date(2024, 2, 29)),  # leap year: the day itself
        (date(2008, 2, 29), 16, date(2024, 2, 29)),
        (date(2009, 2, 28), 16, date(2025, 2, 28)),
        (date(2010, 7, 4), 16, date(2026, 7, 4)),
    ],
)
def test_birthday(dob: date, age: int, expected: date) -> None:
    assert birthday(dob, age) == expected


def test_born_29_february() -> None:
    # 5th birthday is 1 Mar 2025, so CSA starts on 31 Mar 2025
    assert csa_start(date(2020, 2, 29)) == date(2025, 3, 31)
    # 2100 is not a leap year: 16 on 1 Mar 2100, school year 2099-00
    assert birthday(date(2084, 2, 29), 16) == date(2100, 3, 1)
    assert csa_end(date(2084, 2, 29)) == date(2100, 6, 25)
    assert csa_end(date(2008, 2, 29)) == date(2024, 6, 28)
    assert csa_end(date(2012, 2, 29)) == date(2028, 6, 30)
    assert csa_start(date(2016, 2, 29)) == date(2021, 3, 31)


@pytest.mark.parametrize(
    ("year", "friday"),
    [
        (2020, date(2020, 6, 26)),
        (2021, date(2021, 6, 25)),
        (2022, date(2022, 6, 24)),
        (2023, date(2023, 6, 30)),  # 30 June is itself a Friday
        (2024, date(2024, 6, 28)),
        (2025, date(2025, 6, 27)),
        (2026, date(2026, 6, 26)),
        (2027, date(2027, 6, 25)),
        (2028, date(2028, 6, 30)),  # and again
        (2029, date(2029, 6, 29)),
    ],
)
def test_last_friday_of_june(year: int, friday: date) -> None:
    assert last_friday_of_june(year) == friday


@given(st.integers(1900, 2200))
def test_last_friday_of_june_is_a_friday_in_the_last_week(year: int) -> None:
    d = last_friday_of_june(year)
    assert d.weekday() == 4
    assert d.month == 6
    assert d.day >= 24


@pytest.mark.parametrize(
    ("dob", "end"),
    [
        # 16 on 1 Sep 2024: school year 2024-25, ends June 2025
        (date(2008, 9, 1), date(2025, 6, 27)),
        # 16 on 31 Aug 2024: school year 2023-24, ends June 2024, before the birthday
        (date(2008, 8, 31), date(2024, 6, 28)),
        # July birthday ends in the June before it
        (date(2008, 7, 15), date(2024, 6, 28)),
        (date(2008, 12, 25), date(2025, 6, 27)),
        (date(2009, 6, 1), date(2025, 6, 27)),
        # 16 on 30 Jun 2025 (a Monday), after that June's last Friday
        (date(2009, 6, 30), date(2025, 6, 27)),
        # 16 in school year 2022-23, whose last Friday of June is 30 June
        (date(2007, 1, 10), date(2023, 6, 30)),
    ],
)
def test_csa_end(dob: date, end: date) -> None:
    assert csa_end(dob) == end


def test_is_compulsory_school_age_inclusive_of_both_ends() -> None:
    dob = date(2008, 9, 1)
    start, end = csa_start(dob), csa_end(dob)
    assert start == date(2013, 12, 31)
    assert not is_compulsory_school_age(dob, start - timedelta(1))
    assert is_compulsory_school_age(dob, start)
    assert is_compulsory_school_age(dob, end)
    assert not is_compulsory_school_age(dob, end + timedelta(1))


@given(st.dates(date(1990, 1, 1), date(2030, 12, 31)))
def test_csa_always_starts_on_a_prescribed_day_after_5_and_ends_on_a_june_friday(dob: date) -> None:
    start, end = csa_start(dob), csa_end(dob)
    assert (start.month, start.day) in {(3, 31), (8, 31), (12, 31)}
    assert (
        birthday(dob, 5) <= start < birthday(dob, 5) + timedelta(days=153)
    )  # 1 Apr → 31 Aug is the longest wait
    assert end.weekday() == 4
    assert end.month == 6
    assert end.year in {birthday(dob, 16).year, birthday(dob, 16).year + 1}
    # roughly 10¾ to 11½ years of compulsory schooling
    assert timedelta(days=365 * 10 + 270) < end - start < timedelta(days=366 * 11 + 210)
