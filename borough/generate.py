"""The synthetic borough, school by school: roster, calendars, rolls and registers.

`Borough(seed, scale)` is the entry point. Everything is a pure function of the seed (each
school, pupil and register draws from its own `random.Random` keyed by seed and identifiers,
never the global generator or the clock), so a school can be generated alone, in any order,
and the same seed always gives the same borough. `scale` keeps every school but takes that
fraction of its pupils (0.05 gives a ~1,900-pupil borough for tests).

Memory stays small: `school_years()` yields one school at a time (roll plus registers, one
byte per session), and marks are produced lazily from the registers. A full year is about
14 million marks; nothing ever holds them all.

Dual registrations are the one link between schools: the two AP centres' dual-registered
pupils also appear on their main school's roll (see `borough.pupils.enrol_dual`); those few
dozen pupils are generated once per `Borough` and shared.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from functools import cached_property

from borough.pupils import Enrolment, enrol, enrol_dual
from borough.registers import Mark, SchoolEvents, SchoolRegisters, Timetable, build
from borough.schools import AP, SECONDARY, School, roster
from borough.terms import Calendar, calendar_for

DEFAULT_SEED = 2024


@dataclass(frozen=True, slots=True)
class SchoolYear:
    """One school's year: its calendar, roll and registers."""

    school: School
    calendar: Calendar
    enrolments: list[Enrolment]
    registers: SchoolRegisters

    def marks(self, start: date | None = None, end: date | None = None) -> Iterator[Mark]:
        return self.registers.marks(start, end)


class Borough:
    """A deterministic Sefton-sized local authority (SPEC §11)."""

    def __init__(self, seed: int = DEFAULT_SEED, scale: float = 1.0) -> None:
        if not 0 < scale <= 1.0:
            raise ValueError("scale must be in (0, 1]")
        self.seed = seed
        self.scale = scale

    @cached_property
    def schools(self) -> tuple[School, ...]:
        return roster(self.seed)

    def school(self, urn: str) -> School:
        return next(s for s in self.schools if s.urn == urn)

    def calendar(self, school: School) -> Calendar:
        return calendar_for(self.seed, school.urn)

    @cached_property
    def _dual(self) -> dict[str, list[Enrolment]]:
        """Dual-registered enrolments by school URN (both the AP and the main side)."""
        out: dict[str, list[Enrolment]] = {}
        mainstream = [s for s in self.schools if s.phase == SECONDARY and s.type != "independent"]
        for ap in (s for s in self.schools if s.phase == AP):
            region = ("north",) if ap.locality == "north" else ("central", "south")
            mains = [s for s in mainstream if s.locality in region]
            for ap_side, main_side in enrol_dual(self.seed, ap, mains, self.scale):
                out.setdefault(ap.urn, []).append(ap_side)
                out.setdefault(main_side.urn, []).append(main_side)
        return out

    def enrolments(self, school: School) -> list[Enrolment]:
        """The school's roll: its own pupils, then any dual-registered ones."""
        return enrol(self.seed, school, self.scale) + self._dual.get(school.urn, [])

    def school_year(self, school: School) -> SchoolYear:
        calendar = self.calendar(school)
        timetable = Timetable.of(calendar)
        events = SchoolEvents.of(self.seed, school, timetable)
        enrolments = self.enrolments(school)
        registers = [build(e, timetable, events, self.seed) for e in enrolments]
        return SchoolYear(school, calendar, enrolments, SchoolRegisters(school.urn, timetable, registers))

    def school_years(self) -> Iterator[SchoolYear]:
        """Every school's year, one at a time."""
        for school in self.schools:
            yield self.school_year(school)

    def marks(self, start: date | None = None, end: date | None = None) -> Iterator[tuple[str, Mark]]:
        """(URN, mark) for every mark of the borough, school by school, each in date order."""
        for year in self.school_years():
            urn = year.school.urn
            for mark in year.marks(start, end):
                yield urn, mark
