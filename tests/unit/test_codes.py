"""Attendance codes: every code of both DfE sets, its category, and the 19 Aug 2024 switch."""

from __future__ import annotations

from datetime import date

import pytest

from shared.codes import (
    CODES_2024_FROM,
    PENALTY_CODES,
    AttendanceCode,
    Category,
    CodeError,
    CodeNotYetInForce,
    RetiredCode,
    UnknownCode,
    code_set,
    lookup,
)

BEFORE = date(2024, 8, 18)
FROM = date(2024, 8, 19)

# Written out from SPEC §2, not derived from the module under test.
EXPECTED_2024 = {
    "/": "present",
    "\\": "present",
    "L": "present",
    "K": "aea",
    "V": "aea",
    "P": "aea",
    "W": "aea",
    "B": "aea",
    "C1": "authorised",
    "M": "authorised",
    "J1": "authorised",
    "S": "authorised",
    "C2": "authorised",
    "C": "authorised",
    "T": "authorised",
    "R": "authorised",
    "I": "authorised",
    "E": "authorised",
    "G": "unauthorised",
    "N": "unauthorised",
    "O": "unauthorised",
    "U": "unauthorised",
    "D": "not_possible",
    "Q": "not_possible",
    "Y1": "not_possible",
    "Y2": "not_possible",
    "Y3": "not_possible",
    "Y4": "not_possible",
    "Y5": "not_possible",
    "Y6": "not_possible",
    "Y7": "not_possible",
    "X": "not_possible",
    "Z": "administrative",
    "#": "administrative",
}

EXPECTED_2006 = {
    "/": "present",
    "\\": "present",
    "L": "present",
    "B": "aea",
    "J": "aea",
    "P": "aea",
    "V": "aea",
    "W": "aea",
    "C": "authorised",
    "E": "authorised",
    "F": "authorised",
    "H": "authorised",
    "I": "authorised",
    "M": "authorised",
    "R": "authorised",
    "S": "authorised",
    "T": "authorised",
    "G": "unauthorised",
    "N": "unauthorised",
    "O": "unauthorised",
    "U": "unauthorised",
    "D": "not_possible",
    "X": "not_possible",
    "Y": "not_possible",
    "Z": "administrative",
    "#": "administrative",
}

RETIRED = {
    "H": "G (holiday not granted) or C (exceptional circumstances)",
    "J": "J1",
    "Y": "Y1–Y7",
    "F": "C",
}
NEW_IN_2024 = ["C1", "C2", "J1", "K", "Q", "Y1", "Y2", "Y3", "Y4", "Y5", "Y6", "Y7"]
POSSIBLE = {"present", "aea", "authorised", "unauthorised"}


def test_the_2024_set_starts_on_19_august_2024() -> None:
    assert date(2024, 8, 19) == CODES_2024_FROM


@pytest.mark.parametrize(("code", "category"), sorted(EXPECTED_2024.items()))
@pytest.mark.parametrize("on", [FROM, date(2024, 9, 2), date(2031, 1, 6)])
def test_every_2024_code_has_its_category(code: str, category: str, on: date) -> None:
    found = lookup(code, on)
    assert found.code == code
    assert found.category == category
    assert found.meaning
    assert found.counts_in_possible is (category in POSSIBLE)


@pytest.mark.parametrize(("code", "category"), sorted(EXPECTED_2006.items()))
@pytest.mark.parametrize("on", [BEFORE, date(2019, 3, 4), date(2006, 9, 1)])
def test_every_2006_code_has_its_category(code: str, category: str, on: date) -> None:
    found = lookup(code, on)
    assert found.code == code
    assert found.category == category
    assert found.counts_in_possible is (category in POSSIBLE)


def test_code_sets_are_exactly_the_tables() -> None:
    assert set(code_set(FROM)) == set(EXPECTED_2024)
    assert set(code_set(BEFORE)) == set(EXPECTED_2006)
    assert {c: ac.category.value for c, ac in code_set(FROM).items()} == EXPECTED_2024
    assert {c: ac.category.value for c, ac in code_set(BEFORE).items()} == EXPECTED_2006


def test_code_set_is_read_only() -> None:
    with pytest.raises(TypeError):
        code_set(FROM)["A"] = AttendanceCode("A", "made up", Category.PRESENT)  # type: ignore[index]


def test_retired_and_new_lists_are_the_set_differences() -> None:
    assert set(EXPECTED_2006) - set(EXPECTED_2024) == set(RETIRED)
    assert sorted(set(EXPECTED_2024) - set(EXPECTED_2006)) == sorted(NEW_IN_2024)


@pytest.mark.parametrize(("code", "replacement"), sorted(RETIRED.items()))
def test_retired_code_is_refused_from_19_august_2024_naming_its_replacement(
    code: str, replacement: str
) -> None:
    with pytest.raises(RetiredCode) as caught:
        lookup(code, FROM)
    err = caught.value
    assert err.code == code
    assert err.replacement == replacement
    assert replacement in err.detail
    assert replacement in str(err)
    assert "19 August 2024" in err.detail
    assert isinstance(err, CodeError)
    assert isinstance(err, ValueError)


@pytest.mark.parametrize("code", sorted(RETIRED))
def test_retired_code_is_accepted_the_day_before(code: str) -> None:
    assert lookup(code, BEFORE).code == code


@pytest.mark.parametrize("code", sorted(RETIRED))
def test_retired_code_stays_refused_years_later(code: str) -> None:
    with pytest.raises(RetiredCode):
        lookup(code, date(2027, 5, 10))


@pytest.mark.parametrize("code", NEW_IN_2024)
def test_2024_only_code_is_refused_before_19_august_2024(code: str) -> None:
    with pytest.raises(CodeNotYetInForce) as caught:
        lookup(code, BEFORE)
    assert caught.value.code == code
    assert "19 August 2024" in caught.value.detail
    assert lookup(code, FROM).code == code


@pytest.mark.parametrize("code", ["A", "n", "y1", "Y8", "Y0", "C3", "J2", "", " N", "N ", "//", "-", "*"])
@pytest.mark.parametrize("on", [BEFORE, FROM])
def test_unknown_codes_are_refused_exactly_as_written(code: str, on: date) -> None:
    with pytest.raises(UnknownCode) as caught:
        lookup(code, on)
    assert caught.value.code == code
    assert repr(code) in caught.value.detail


def test_meanings_follow_the_date() -> None:
    # B, C, T and X kept their letters in 2024 but changed meaning.
    assert lookup("B", BEFORE).meaning != lookup("B", FROM).meaning
    assert lookup("T", BEFORE).meaning != lookup("T", FROM).meaning
    assert "part-time" in lookup("C2", FROM).meaning


def test_penalty_codes_are_g_n_o_u_and_unauthorised() -> None:
    assert frozenset({"G", "N", "O", "U"}) == PENALTY_CODES
    for code in PENALTY_CODES:
        assert lookup(code, FROM).category is Category.UNAUTHORISED
        assert lookup(code, BEFORE).category is Category.UNAUTHORISED


@pytest.mark.parametrize(
    ("category", "counts"),
    [
        (Category.PRESENT, True),
        (Category.AEA, True),
        (Category.AUTHORISED, True),
        (Category.UNAUTHORISED, True),
        (Category.NOT_POSSIBLE, False),
        (Category.ADMINISTRATIVE, False),
    ],
)
def test_category_counts_in_possible(category: Category, counts: bool) -> None:
    assert category.counts_in_possible is counts


def test_category_values_are_the_wire_strings() -> None:
    assert [c.value for c in Category] == [
        "present",
        "aea",
        "authorised",
        "unauthorised",
        "not_possible",
        "administrative",
    ]


def test_attendance_code_is_immutable() -> None:
    code = lookup("N", FROM)
    with pytest.raises(AttributeError):
        code.code = "O"  # type: ignore[misc]
