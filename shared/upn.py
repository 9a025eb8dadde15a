"""Unique Pupil Numbers (DfE, "Unique pupil numbers (UPN)" guidance), via python-stdnum.

A UPN is 13 characters: a check letter, the 3-digit LA number of the issuing school, its
4-digit DfE establishment number, the 2-digit issue year and a 3-digit serial. A temporary
UPN ends in a letter instead of the last serial digit. The check letter and the list of LA
numbers come from `stdnum.gb.upn`; this module only explains its refusals in words.
"""

from __future__ import annotations

from functools import lru_cache

from stdnum.exceptions import InvalidChecksum, InvalidComponent, InvalidLength, ValidationError
from stdnum.gb import upn as _stdnum_upn


class InvalidUPN(ValueError):
    """A string that is not a valid UPN; `detail` says what is wrong with it."""

    def __init__(self, value: str, detail: str) -> None:
        super().__init__(detail)
        self.value = value
        self.detail = detail


def validate_upn(value: str) -> str:
    """The UPN, normalised (spaces removed, upper case), or `InvalidUPN` explaining why not.

    Accepts permanent and temporary UPNs, as the DfE guidance and python-stdnum do. Valid UPNs
    are remembered (``_valid``): a borough's MIS send the same pupils' marks every session.
    """
    valid = _valid(value)
    if valid is not None:
        return valid
    try:
        return _stdnum_upn.validate(value)
    except InvalidLength:
        detail = f"{value!r} is not 13 characters (a check letter then 12 characters)"
    except InvalidComponent:
        detail = f"{value!r}: characters 2–4 ({_stdnum_upn.compact(value)[1:4]}) are not a known LA number"
    except InvalidChecksum:
        detail = f"{value!r} has the wrong check letter (the first character)"
    except ValidationError:
        detail = (
            f"{value!r} is not in UPN format: a check letter, 11 digits, then a digit "
            "or (temporary UPN) a letter"
        )
    raise InvalidUPN(value, detail)


@lru_cache(maxsize=1 << 16)
def _valid(value: str) -> str | None:
    """``validate_upn``'s answer for a valid UPN, else None. 65,536 entries hold a borough's
    pupils (~38,000) in ~10 MB at most; checking a UPN costs ~7 µs, a look-up here ~0.15 µs."""
    try:
        return _stdnum_upn.validate(value)
    except ValidationError:
        return None


def make_upn(la_code: int, establishment: int, issue_year: int, serial: int) -> str:
    """A valid permanent UPN with its check letter, for synthetic data and tests.

    `issue_year` may be two digits (24) or four (2024); only its last two digits are used,
    as in a real UPN. Raises `InvalidUPN` for an out-of-range part or an unknown LA number.
    """
    parts = {
        "la_code": (la_code, 1000),
        "establishment": (establishment, 10000),
        "issue_year": (issue_year, 10000),
        "serial": (serial, 1000),
    }
    for name, (number, limit) in parts.items():
        if not 0 <= number < limit:
            raise InvalidUPN(str(number), f"{name} {number} is out of range 0–{limit - 1}")
    body = f"{la_code:03d}{establishment:04d}{issue_year % 100:02d}{serial:03d}"
    return validate_upn(_stdnum_upn.calc_check_digit(body) + body)
