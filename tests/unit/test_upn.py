"""Unique Pupil Numbers: validation via python-stdnum, and building valid ones."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum.gb.upn import calc_check_digit

from shared.upn import InvalidUPN, make_upn, validate_upn

# Known LA numbers (DfE "new local authority codes", January 2011): Sefton, its neighbours, a few others.
KNOWN_LAS = [201, 202, 213, 340, 341, 342, 343, 344, 350, 420, 800, 801, 888, 919, 938]


@pytest.mark.parametrize(
    ("value", "normalised"),
    [
        ("B801200005001", "B801200005001"),  # python-stdnum's own example
        ("b801200005001", "B801200005001"),
        ("B801 2000 05001", "B801200005001"),
    ],
)
def test_valid_upns_are_normalised(value: str, normalised: str) -> None:
    assert validate_upn(value) == normalised
    assert validate_upn(value) == normalised  # and again, from the memo of valid UPNs


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("A801200005001", "check letter"),
        ("I801200005001", "check letter"),  # I is not in the UPN alphabet at all
        ("X80120000A001", "format"),
        ("B80120000500!", "format"),
        ("B80120000500I", "format"),  # a temporary UPN's letter excludes I, O, S
        ("E000200005001", "LA number"),
        ("E999200005001", "LA number"),
        ("B80120000500", "13 characters"),
        ("B8012000050011", "13 characters"),
        ("", "13 characters"),
    ],
)
def test_invalid_upns_say_what_is_wrong(value: str, says: str) -> None:
    for _ in range(2):  # an invalid UPN is never remembered as valid
        with pytest.raises(InvalidUPN) as caught:
            validate_upn(value)
    assert says in caught.value.detail
    assert caught.value.value == value
    assert isinstance(caught.value, ValueError)


def test_unknown_la_detail_names_the_digits() -> None:
    with pytest.raises(InvalidUPN) as caught:
        validate_upn("E000200005001")
    assert "(000)" in caught.value.detail


def test_make_upn_builds_a_sefton_upn() -> None:
    upn = make_upn(343, 2001, 24, 7)
    assert upn[1:] == "343200124007"
    assert validate_upn(upn) == upn


def test_make_upn_accepts_a_four_digit_year() -> None:
    assert make_upn(343, 2001, 2024, 7) == make_upn(343, 2001, 24, 7)


def test_a_wrong_check_letter_on_a_made_upn_is_refused() -> None:
    upn = make_upn(343, 4000, 23, 123)
    wrong = next(c for c in "ABCDEFGH" if c != upn[0])
    with pytest.raises(InvalidUPN, match="check letter"):
        validate_upn(wrong + upn[1:])


def test_temporary_upn_is_accepted() -> None:
    # a temporary UPN ends in a letter: build one from a permanent UPN's first 11 characters
    body = make_upn(343, 2001, 24, 10)[1:-1] + "A"
    temporary = calc_check_digit(body) + body
    assert validate_upn(temporary) == temporary


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((1000, 1, 24, 1), "la_code"),
        ((-1, 1, 24, 1), "la_code"),
        ((343, 10000, 24, 1), "establishment"),
        ((343, -5, 24, 1), "establishment"),
        ((343, 1, -1, 1), "issue_year"),
        ((343, 1, 24, 1000), "serial"),
        ((343, 1, 24, -1), "serial"),
    ],
)
def test_make_upn_refuses_out_of_range_parts(args: tuple[int, int, int, int], field: str) -> None:
    with pytest.raises(InvalidUPN, match=field):
        make_upn(*args)


def test_make_upn_refuses_an_unknown_la() -> None:
    with pytest.raises(InvalidUPN, match="LA number"):
        make_upn(999, 2001, 24, 1)


@given(
    st.sampled_from(KNOWN_LAS),
    st.integers(0, 9999),
    st.integers(0, 99),
    st.integers(0, 999),
)
def test_make_upn_always_validates_and_round_trips(la: int, est: int, year: int, serial: int) -> None:
    upn = make_upn(la, est, year, serial)
    assert validate_upn(upn) == upn
    assert validate_upn(upn.lower()) == upn
    assert len(upn) == 13
    assert (int(upn[1:4]), int(upn[4:8]), int(upn[8:10]), int(upn[10:13])) == (la, est, year, serial)


@given(st.integers(0, 999), st.integers(0, 9999), st.integers(0, 99), st.integers(0, 999))
def test_make_upn_either_validates_or_names_the_la(la: int, est: int, year: int, serial: int) -> None:
    outcome: str | InvalidUPN
    try:
        outcome = make_upn(la, est, year, serial)
    except InvalidUPN as exc:
        outcome = exc
    if isinstance(outcome, InvalidUPN):
        assert "LA number" in outcome.detail
    else:
        assert validate_upn(outcome) == outcome


@given(st.sampled_from(KNOWN_LAS), st.integers(0, 9999), st.integers(0, 99), st.integers(0, 999))
def test_changing_one_digit_breaks_the_check_letter(la: int, est: int, year: int, serial: int) -> None:
    upn = make_upn(la, est, year, serial)
    last = str((int(upn[-1]) + 1) % 10)
    with pytest.raises(InvalidUPN, match="check letter"):
        validate_upn(upn[:-1] + last)
