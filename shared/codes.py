"""Attendance codes and their statistical categories, date-effective.

Two code sets apply, chosen by the date of the session being marked:

* from 19 August 2024, the School Attendance (Pupil Registration) (England) Regulations 2024
  and DfE "Working together to improve school attendance" (August 2024);
* before that date, the Education (Pupil Registration) (England) Regulations 2006 as amended,
  with the DfE national code set (the "2006 set").

A code in the 2006 set that is not in the 2024 set is *retired* for sessions on or after
19 August 2024 and is refused with the code that replaces it; a code new in 2024 is refused
for earlier sessions. Codes are case-sensitive, exactly as DfE writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from types import MappingProxyType

CODES_2024_FROM = date(2024, 8, 19)
"""The day the 2024 Regulations' code set came into force (SPEC §2)."""


class Category(StrEnum):
    """The DfE statistical category of a code (DfE attendance statistics methodology)."""

    PRESENT = "present"
    AEA = "aea"
    AUTHORISED = "authorised"
    UNAUTHORISED = "unauthorised"
    NOT_POSSIBLE = "not_possible"
    ADMINISTRATIVE = "administrative"

    @property
    def counts_in_possible(self) -> bool:
        """Whether a session in this category is a *possible* session.

        possible = present + AEA + authorised + unauthorised (DfE methodology, SPEC §3);
        "not possible to attend" and administrative sessions are left out of the denominator.
        """
        return self in _COUNTS_IN_POSSIBLE


_COUNTS_IN_POSSIBLE = frozenset({Category.PRESENT, Category.AEA, Category.AUTHORISED, Category.UNAUTHORISED})


@dataclass(frozen=True, slots=True)
class AttendanceCode:
    """One register code as it stood on a given date: the code, its meaning, its category."""

    code: str
    meaning: str
    category: Category

    @property
    def counts_in_possible(self) -> bool:
        """Whether a session with this code counts in possible sessions (see `Category`)."""
        return self.category.counts_in_possible


PENALTY_CODES: frozenset[str] = frozenset({"G", "N", "O", "U"})
"""Unauthorised codes counted toward the penalty notice threshold and the attendance return.

National penalty notice framework (August 2024) and SPEC §5.3–5.4: 10 sessions of G, N, O
or U within a rolling 10 school weeks; the thresholds themselves are policy (shared.policy).
"""


def _table(*rows: tuple[str, str, Category]) -> dict[str, AttendanceCode]:
    return {code: AttendanceCode(code, meaning, cat) for code, meaning, cat in rows}


_P, _A, _AU, _UN, _NP, _AD = (
    Category.PRESENT,
    Category.AEA,
    Category.AUTHORISED,
    Category.UNAUTHORISED,
    Category.NOT_POSSIBLE,
    Category.ADMINISTRATIVE,
)

# School Attendance (Pupil Registration) (England) Regulations 2024, SPEC §2.
_CODES_2024 = _table(
    ("/", "present (AM)", _P),
    ("\\", "present (PM)", _P),
    ("L", "late arrival before the register closed", _P),
    ("K", "attending education provision arranged by the local authority", _A),
    ("V", "attending an educational visit or trip", _A),
    ("P", "participating in a supervised sporting activity", _A),
    ("W", "attending work experience", _A),
    ("B", "attending any other approved educational activity", _A),
    ("C1", "leave of absence for a regulated performance or regulated employment abroad", _AU),
    ("M", "leave of absence for a medical or dental appointment", _AU),
    ("J1", "leave of absence for an interview", _AU),
    ("S", "leave of absence for study leave", _AU),
    ("C2", "leave of absence for a part-time timetable", _AU),
    ("C", "leave of absence for exceptional circumstances", _AU),
    ("T", "parent travelling for occupational purposes", _AU),
    ("R", "religious observance", _AU),
    ("I", "illness (not medical or dental appointment)", _AU),
    ("E", "suspended or permanently excluded and no alternative provision made", _AU),
    ("G", "holiday not granted by the school", _UN),
    ("N", "reason for absence not yet provided", _UN),
    ("O", "absent in other or unknown circumstances", _UN),
    ("U", "arrived in school after the register closed", _UN),
    ("D", "dual registered: attending another school", _NP),
    ("Q", "unable to attend: lack of access arrangements by the local authority", _NP),
    ("Y1", "unable to attend: transport normally provided not available", _NP),
    ("Y2", "unable to attend: widespread disruption to travel", _NP),
    ("Y3", "unable to attend: part of the school premises closed", _NP),
    ("Y4", "unable to attend: whole school site unexpectedly closed", _NP),
    ("Y5", "unable to attend: pupil in criminal justice detention", _NP),
    ("Y6", "unable to attend: public health guidance or law", _NP),
    ("Y7", "unable to attend: any other unavoidable cause", _NP),
    ("X", "not required to be in school (non-compulsory school age)", _NP),
    ("Z", "prospective pupil not on the admission register", _AD),
    ("#", "planned whole or partial school closure", _AD),
)

# Education (Pupil Registration) (England) Regulations 2006 and the DfE code set used with them
# until 18 August 2024; historic marks keep the meanings they had when they were made.
_CODES_2006 = _table(
    ("/", "present (AM)", _P),
    ("\\", "present (PM)", _P),
    ("L", "late before the register closed", _P),
    ("B", "educated off site (not dual registration)", _A),
    ("J", "at an interview with prospective employers or another educational establishment", _A),
    ("P", "participating in a supervised sporting activity", _A),
    ("V", "educational visit or trip", _A),
    ("W", "work experience", _A),
    ("C", "other authorised circumstances", _AU),
    ("E", "excluded (no alternative provision made)", _AU),
    ("F", "extended family holiday (agreed)", _AU),
    ("H", "family holiday (agreed)", _AU),
    ("I", "illness (not medical or dental appointment)", _AU),
    ("M", "medical or dental appointment", _AU),
    ("R", "religious observance", _AU),
    ("S", "study leave", _AU),
    ("T", "traveller absence", _AU),
    ("G", "family holiday (not agreed or days in excess)", _UN),
    ("N", "no reason yet provided for absence", _UN),
    ("O", "unauthorised absence not covered by any other code", _UN),
    ("U", "arrived after the register closed", _UN),
    ("D", "dual registration: attending another establishment", _NP),
    ("X", "non-compulsory school age absence, or untimetabled session", _NP),
    ("Y", "enforced closure or unable to attend due to exceptional circumstances", _NP),
    ("Z", "pupil not yet on roll", _AD),
    ("#", "school closed to pupils", _AD),
)

# What a school should record instead of each retired code (DfE, "Working together to
# improve school attendance", August 2024, code guidance).
_REPLACEMENTS: Mapping[str, str] = MappingProxyType(
    {
        "H": "G (holiday not granted) or C (exceptional circumstances)",
        "J": "J1",
        "Y": "Y1–Y7",
        "F": "C",
    }
)

# Read-only views handed out by code_set; lookup reads the plain dicts, which is measurably
# faster on the per-mark path.
_VIEW_2024: Mapping[str, AttendanceCode] = MappingProxyType(_CODES_2024)
_VIEW_2006: Mapping[str, AttendanceCode] = MappingProxyType(_CODES_2006)


class CodeError(ValueError):
    """A code refused for the session date; `detail` is a sentence fit to show a school."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class UnknownCode(CodeError):
    """Not an attendance code in either DfE set."""


class RetiredCode(CodeError):
    """A 2006-set code used for a session on or after 19 August 2024; `replacement` names its successor."""

    def __init__(self, code: str, detail: str, replacement: str) -> None:
        super().__init__(code, detail)
        self.replacement = replacement


class CodeNotYetInForce(CodeError):
    """A code introduced by the 2024 Regulations used for a session before 19 August 2024."""


def code_set(on: date) -> Mapping[str, AttendanceCode]:
    """The code set in force for a session on `on` (2024 set from 19 August 2024, else 2006)."""
    return _VIEW_2024 if on >= CODES_2024_FROM else _VIEW_2006


def lookup(code: str, on: date) -> AttendanceCode:
    """The code as it stood on the session date `on`, or a `CodeError` saying why not.

    Date-effective per the School Attendance (Pupil Registration) (England) Regulations 2024:
    retired codes (H, J, F, single Y) are refused from 19 August 2024 with their replacement;
    2024-only codes (C1, C2, J1, K, Q, Y1–Y7) are refused before it. `code` is matched exactly:
    no case folding or whitespace stripping, so a malformed feed is reported, not guessed at.
    """
    table = _CODES_2024 if on >= CODES_2024_FROM else _CODES_2006
    found = table.get(code)
    if found is not None:
        return found
    raise _refusal(code, on)


def _refusal(code: str, on: date) -> CodeError:
    if on >= CODES_2024_FROM and code in _CODES_2006:
        replacement = _REPLACEMENTS[code]
        return RetiredCode(
            code,
            f"Code {code!r} ({_CODES_2006[code].meaning}) was withdrawn on 19 August 2024 by the "
            f"School Attendance (Pupil Registration) (England) Regulations 2024 and cannot be used "
            f"for {on.isoformat()}; use {replacement} instead.",
            replacement,
        )
    if on < CODES_2024_FROM and code in _CODES_2024:
        return CodeNotYetInForce(
            code,
            f"Code {code!r} ({_CODES_2024[code].meaning}) came into force on 19 August 2024 and "
            f"cannot be used for {on.isoformat()}, which falls under the 2006 code set.",
        )
    return UnknownCode(
        code,
        f"{code!r} is not a DfE attendance code (codes are case-sensitive, e.g. 'N', 'Y1', '/').",
    )
