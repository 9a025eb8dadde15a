"""Compulsory school age (CSA): when it starts and when it ends.

Education Act 1996 s8; the Education (Start of Compulsory School Age) Order 1998; the
Education (School Leaving Date) Order 1997; SPEC §6.

A child born on 29 February reaches an age on 1 March in a year that is not a leap year
(the common reading of Family Law Reform Act 1969 s9, which says an age is attained at the
start of the anniversary of the birth date). Because both CSA boundaries are fixed days well
away from late February, choosing 28 February instead would not change either result.
"""

from __future__ import annotations

from datetime import date, timedelta


def birthday(dob: date, age: int) -> date:
    """The date the child born on `dob` reaches `age` (29 February → 1 March in common years)."""
    try:
        return dob.replace(year=dob.year + age)
    except ValueError:
        return date(dob.year + age, 3, 1)


def csa_start(dob: date) -> date:
    """The first day of compulsory school age.

    The first of 31 March, 31 August and 31 December falling on or after the 5th birthday;
    a 5th birthday on one of those days starts CSA that very day (Education (Start of
    Compulsory School Age) Order 1998).
    """
    fifth = birthday(dob, 5)
    for prescribed in (date(fifth.year, 3, 31), date(fifth.year, 8, 31)):
        if fifth <= prescribed:
            return prescribed
    return date(fifth.year, 12, 31)


def csa_end(dob: date) -> date:
    """The last day of compulsory school age: the school leaving date.

    The last Friday in June of the school year (1 September – 31 August) in which the child
    turns 16 (Education (School Leaving Date) Order 1997). A 16th birthday in July or August
    belongs to the school year that began the previous September, so CSA ends in the June
    before that birthday; a 16th birthday on 1 September ends CSA in the following June.
    """
    sixteenth = birthday(dob, 16)
    june_year = sixteenth.year + 1 if sixteenth.month >= 9 else sixteenth.year
    return last_friday_of_june(june_year)


def last_friday_of_june(year: int) -> date:
    """The last Friday in June of `year` (30 June itself when that is a Friday)."""
    june_30 = date(year, 6, 30)
    return june_30 - timedelta(days=(june_30.weekday() - 4) % 7)


def is_compulsory_school_age(dob: date, on: date) -> bool:
    """Whether a child born on `dob` is of compulsory school age on `on`, both ends inclusive."""
    return csa_start(dob) <= on <= csa_end(dob)
