"""Attendance registers: every session of every pupil on roll, with realistic absence.

For each enrolment the generator starts from a full register (``/`` mornings, ``\\``
afternoons on every school session between admission and leaving), lays down the sessions the
pupil cannot attend (``D`` dual registration, ``X`` staggered Reception starts for children
not yet of compulsory school age, ``Y1``–``Y5`` and ``Y7``, ``Q``), then spends the pupil's
absence budget — round(rate × possible sessions), see `borough.propensity` — in episodes
the way absence really falls:

* **illness** (``I``) in spells of 1–10 days, more in December–January and on Mondays, the
  odd afternoon sent home; a few long spells (15+ days: the sickness return);
* **medical appointments** (``M``), single sessions; **suspensions** (``E``) of 1–3 days,
  secondary mostly; **exceptional** (``C``), **religious observance** (``R``, on Eid al-Fitr
  31 March and Eid al-Adha 6 June 2025), and the rare ``T``, ``C1``, ``J1`` (Year 11
  interviews), ``S`` (Year 11 study leave);
* **term-time holidays** (``G``) of 3–5 days, one in ten a fortnight (the attendance return),
  against a half-term or the Christmas/Easter/summer break: about 11 % of primary and 6 % of
  secondary pupils have one (fewer among FSM families) — a 5-day holiday alone meets the
  penalty threshold;
* **unexplained absence** (``O``) on single days or short runs with a strong Monday/Friday
  bias; for disengaged pupils long runs of 2–20 school days (the 10-day attendance return);
  **late after the register closed** (``U``) for late-prone pupils; the odd ``N`` never resolved;
* **part-time timetables** (``C2``, afternoons) between the agreed dates, overrunning for a third.

Then approved activities (``V`` trips by year group, ``W`` Year 10 work experience, ``P``
fixtures, ``K`` LA-arranged provision, ``B``) and lates (``L``) overwrite some present marks.

**Provisional N**: for about a fifth of illness spells and two fifths of unexplained episodes
the school first records ``N`` on the first day and corrects it later. The corrected code is
the register's final code; the ``N`` is emitted on the day and the correction 1–3 school days
later (5 % of them 6–12 days later, so ``unresolved_n`` fires). Loading the stream therefore
produces amendments as a real MIS feed does.

Each enrolment draws from its own random stream (seed, URN, UPN), so a register does not
depend on the order or the date range in which schools are generated.
Registers are stored compactly (one byte per session: an index into `CODES`).
"""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import accumulate

from borough.pupils import Enrolment
from borough.schools import AP, PRIMARY, SECONDARY, SPECIAL, School
from borough.terms import Calendar
from shared.csa import is_compulsory_school_age

# fmt: off
CODES: tuple[str, ...] = (
    "",  # no mark: not on roll or not a school session
    "/",
    "\\",
    "L",
    "K",
    "V",
    "P",
    "W",
    "B",
    "C1",
    "M",
    "J1",
    "S",
    "C2",
    "C",
    "T",
    "R",
    "I",
    "E",
    "G",
    "N",
    "O",
    "U",
    "D",
    "Q",
    "Y1",
    "Y2",
    "Y3",
    "Y4",
    "Y5",
    "Y6",
    "Y7",
    "X",
)
INDEX: dict[str, int] = {c: i for i, c in enumerate(CODES)}

PRESENT, AEA, AUTHORISED, UNAUTHORISED, NOT_COUNTED = (
    "present",
    "aea",
    "authorised",
    "unauthorised",
    "not_counted",
)
CATEGORY: tuple[str, ...] = tuple(
    ""
    if i == 0
    else PRESENT
    if c in ("/", "\\", "L")
    else AEA
    if c in ("K", "V", "P", "W", "B")
    else AUTHORISED
    if c in ("C1", "M", "J1", "S", "C2", "C", "T", "R", "I", "E")
    else UNAUTHORISED
    if c in ("G", "N", "O", "U")
    else NOT_COUNTED
    for i, c in enumerate(CODES)
)
PENALTY_CODES = frozenset(INDEX[c] for c in ("G", "N", "O", "U"))
ABSENCE_CODES = frozenset(i for i, cat in enumerate(CATEGORY) if cat in (AUTHORISED, UNAUTHORISED))

_AM_PRESENT, _PM_PRESENT = INDEX["/"], INDEX["\\"]
_FREE = frozenset((_AM_PRESENT, _PM_PRESENT))
_BOTH, _AM, _PM = (0, 1), (0,), (1,)
_I, _O, _N, _G, _U, _M, _C, _E = (INDEX[c] for c in ("I", "O", "N", "G", "U", "M", "C", "E"))
_EID = (date(2025, 3, 31), date(2025, 6, 6))
_ILLNESS_MONTH = {
    9: 0.75,
    10: 1.0,
    11: 1.1,
    12: 1.35,
    1: 1.25,
    2: 1.1,
    3: 1.0,
    4: 0.85,
    5: 0.8,
    6: 0.75,
    7: 0.8,
}
_ILLNESS_WEEKDAY = (1.15, 1.0, 0.97, 0.97, 1.05)
_TRUANCY_WEEKDAY = (1.3, 0.85, 0.8, 0.85, 1.45)
_BREAK_WEIGHTS = (0.25, 0.12, 0.18, 0.15, 0.15, 0.15)
_HOLIDAY = {PRIMARY: 0.16, SECONDARY: 0.08, SPECIAL: 0.03, AP: 0.0}


@dataclass(frozen=True, slots=True)
class Mark:
    """One register mark as an MIS sends it (orjson serialises it as a JSON object)."""

    upn: str
    date: date
    session: str
    code: str


@dataclass(frozen=True, slots=True)
class Timetable:
    """A school's school days and the day weightings episodes are placed with."""

    days: tuple[date, ...]
    weekdays: tuple[int, ...]
    base: bytes
    """Two bytes per day (AM, PM): the present code, or 0 for a closed session."""
    illness_weights: tuple[float, ...]
    truancy_weights: tuple[float, ...]
    breaks: tuple[tuple[int, int], ...]
    """(last school day before, first school day after) for each holiday, summer last."""

    @classmethod
    def of(cls, calendar: Calendar) -> Timetable:
        school_days = calendar.school_days()
        days = tuple(d for d, _, _ in school_days)
        base = bytearray()
        for _, am, pm in school_days:
            base += bytes((_AM_PRESENT if am else 0, _PM_PRESENT if pm else 0))
        weekdays = tuple(d.weekday() for d in days)
        illness = [_ILLNESS_MONTH[d.month] * _ILLNESS_WEEKDAY[d.weekday()] for d in days]
        truancy = [_TRUANCY_WEEKDAY[d.weekday()] for d in days]
        breaks: list[tuple[int, int]] = []
        for i in range(1, len(days)):
            if (days[i] - days[i - 1]).days > 4:
                breaks.append((i - 1, i))
                truancy[i - 1] *= 1.5
        breaks.append((len(days) - 1, len(days) - 1))
        return cls(
            days, weekdays, bytes(base), tuple(accumulate(illness)), tuple(accumulate(truancy)), tuple(breaks)
        )

    def day_index(self, d: date) -> int:
        return bisect_left(self.days, d)


@dataclass(frozen=True, slots=True)
class SchoolEvents:
    """Whole-school or year-group happenings that shape every register of one school."""

    trips: tuple[tuple[int, int], ...]
    """(year group, day index) of educational visits (V)."""
    closure_day: int | None
    """A day the whole site closed unexpectedly (Y4)."""
    part_closure: tuple[int, int] | None
    """(year group, day index) kept home while part of the premises was closed (Y3)."""
    disruption_day: int | None
    """A day of widespread travel disruption (Y2 for some pupils)."""
    work_experience: int | None
    """First day index of Year 10's work experience week (W)."""
    stagger_days: int
    """School days of mornings-only for Reception pupils not yet of compulsory school age (X)."""

    @classmethod
    def of(cls, seed: int, school: School, timetable: Timetable) -> SchoolEvents:
        rng = random.Random(f"rollcall-borough:{seed}:events:{school.urn}")
        n = len(timetable.days)
        trips = tuple(
            (year, rng.randrange(10, n - 5))
            for year in range(school.first_year, school.last_year + 1)
            for _ in range(rng.randint(0, 2))
        )
        closure = rng.randrange(60, 120) if rng.random() < 0.08 else None
        part = (
            (rng.randint(school.first_year, school.last_year), rng.randrange(10, n - 10))
            if rng.random() < 0.05
            else None
        )
        disruption = timetable.day_index(date(2025, 1, 7)) if school.locality == "north" else None
        work = None
        if school.phase == SECONDARY and rng.random() < 0.5:
            work = timetable.day_index(rng.choice((date(2025, 6, 30), date(2025, 7, 7), date(2025, 6, 23))))
        stagger = rng.choice((5, 8, 10)) if school.phase == PRIMARY and rng.random() < 0.3 else 0
        return cls(trips, closure, part, disruption, work, stagger)


@dataclass(slots=True)
class Register:
    """One enrolment's register for the year: final codes plus provisional Ns later corrected."""

    upn: str
    codes: bytes
    provisional: tuple[tuple[int, int], ...]
    """(slot, resolution day index): the slot was first marked N, corrected on that day."""


@dataclass(slots=True)
class _Pen:
    """Writes episodes into one register, within the enrolment's window."""

    codes: bytearray
    lo: int
    hi: int
    rng: random.Random
    timetable: Timetable
    provisional: list[tuple[int, int]] = field(default_factory=list)

    def pick(self, weights: tuple[float, ...] | None) -> int:
        rng = self.rng
        if weights is not None:
            total = weights[-1]
            for _ in range(6):
                d = bisect_right(weights, rng.random() * total)
                if self.lo <= d < self.hi:
                    return d
        return rng.randrange(self.lo, self.hi)

    def spell(
        self,
        start: int,
        days: int,
        code: int,
        budget: int,
        sessions: tuple[int, ...] = _BOTH,
        n_first: float = 0.0,
    ) -> int:
        """Write `code` on free sessions of `days` school days from `start`; at most `budget`."""
        codes = self.codes
        used = 0
        d = start
        first: list[int] = []
        while d < self.hi and days > 0 and used < budget:
            wrote = False
            for s in sessions:
                k = 2 * d + s
                if codes[k] in _FREE:
                    codes[k] = code
                    used += 1
                    wrote = True
                    if not first or first[0] // 2 == d:
                        first.append(k)
                    if used >= budget:
                        break
            if wrote:
                days -= 1
            d += 1
        if first and n_first and self.rng.random() < n_first:
            self.mark_provisional(first)
        return used

    def mark_provisional(self, slots: list[int]) -> None:
        rng = self.rng
        r = rng.random()
        delay = (
            1
            if r < 0.5
            else 2
            if r < 0.75
            else 3
            if r < 0.87
            else rng.randint(4, 5)
            if r < 0.95
            else rng.randint(6, 12)
        )
        day = min(slots[0] // 2 + delay, len(self.timetable.days) - 1)
        self.provisional.extend((k, day) for k in slots)

    def runs(
        self,
        budget: int,
        code: int,
        length: Callable[[], int],
        weights: tuple[float, ...] | None,
        n_first: float = 0.0,
        half_day: float = 0.0,
    ) -> int:
        """Spend `budget` sessions of `code` in runs of `length()` days at weighted start days."""
        used = 0
        misses = 0
        rng = self.rng
        while used < budget and misses < 40:
            start = self.pick(weights)
            if half_day and rng.random() < half_day:
                got = self.spell(start, 1, code, budget - used, _PM, n_first)
            else:
                got = self.spell(start, length(), code, budget - used, _BOTH, n_first)
            if got:
                used += got
            else:
                misses += 1
        if used < budget:
            used += self.sweep(budget - used, code)
        return used

    def singles(
        self, budget: int, code: int, sessions: tuple[int, ...], weights: tuple[float, ...] | None
    ) -> int:
        """Single sessions of `code` (one of `sessions`) on weighted days."""
        used = 0
        misses = 0
        rng = self.rng
        codes = self.codes
        while used < budget and misses < 30:
            k = 2 * self.pick(weights) + (sessions[0] if len(sessions) == 1 else rng.choice(sessions))
            if codes[k] in _FREE:
                codes[k] = code
                used += 1
            else:
                misses += 1
        return used

    def sweep(self, budget: int, code: int) -> int:
        """Fill free sessions in order from a random day (wrapping round) until `budget` is spent."""
        codes = self.codes
        span = 2 * (self.hi - self.lo)
        first = 2 * self.lo
        offset = self.rng.randrange(span) if span else 0
        used = 0
        for j in range(span):
            k = first + (offset + j) % span
            if codes[k] in _FREE:
                codes[k] = code
                used += 1
                if used >= budget:
                    break
        return used

    def overlay(self, day: int, code: int, sessions: tuple[int, ...] = _BOTH) -> None:
        """An approved activity or unavoidable cause on a present session."""
        if self.lo <= day < self.hi:
            for s in sessions:
                k = 2 * day + s
                if self.codes[k] in _FREE:
                    self.codes[k] = code


def _illness_length(rng: random.Random) -> int:
    r = rng.random()
    return (
        1
        if r < 0.45
        else 2
        if r < 0.67
        else 3
        if r < 0.81
        else rng.randint(4, 5)
        if r < 0.93
        else rng.randint(6, 10)
    )


def _truancy_length(rng: random.Random) -> int:
    r = rng.random()
    return 1 if r < 0.7 else 2 if r < 0.9 else rng.randint(3, 5)


def build(enrolment: Enrolment, timetable: Timetable, events: SchoolEvents, seed: int) -> Register:
    """The enrolment's register for the year (see the module docstring)."""
    pupil = enrolment.pupil
    days = timetable.days
    n = len(days)
    codes = bytearray(timetable.base)
    lo = bisect_left(days, enrolment.admission_date)
    hi = bisect_right(days, enrolment.leaving_date) if enrolment.leaving_date is not None else n
    if lo >= hi:
        return Register(pupil.upn, bytes(2 * n), ())
    codes[: 2 * lo] = bytes(2 * lo)
    codes[2 * hi :] = bytes(2 * (n - hi))
    rng = random.Random(f"rollcall-borough:{seed}:marks:{enrolment.urn}:{pupil.upn}")
    pen = _Pen(codes, lo, hi, rng, timetable)
    phase = enrolment.school_phase
    weekdays = timetable.weekdays

    # Sessions the pupil cannot attend (not counted in possible sessions).
    dual = enrolment.dual
    if dual is not None:
        d_code = INDEX["D"]
        first = max(lo, bisect_left(days, dual.start))
        last = bisect_right(days, dual.end) if dual.end is not None else n
        for d in range(first, min(hi, last)):
            # The main school marks D on the AP days, the AP centre on the others.
            if (weekdays[d] in dual.ap_weekdays) != dual.at_ap:
                for k in (2 * d, 2 * d + 1):
                    if codes[k]:
                        codes[k] = d_code
    if pupil.year == 0 and events.stagger_days:
        x_code = INDEX["X"]
        for d in range(lo, min(hi, lo + events.stagger_days)):
            if not is_compulsory_school_age(pupil.date_of_birth, days[d]):
                pen.overlay(d, x_code, _PM)
    if events.closure_day is not None:
        pen.overlay(events.closure_day, INDEX["Y4"])
    if events.part_closure is not None and events.part_closure[0] == pupil.year:
        pen.overlay(events.part_closure[1], INDEX["Y3"])
    if events.disruption_day is not None and rng.random() < 0.05:
        pen.overlay(events.disruption_day, INDEX["Y2"], _AM)
    if phase == SPECIAL and rng.random() < 0.15:
        for _ in range(rng.randint(1, 3)):
            pen.overlay(pen.pick(None), INDEX["Y1"], (rng.randint(0, 1),))
    if phase == SPECIAL and lo == 0 and rng.random() < 0.03:
        for d in range(1, 1 + rng.randint(2, 5)):
            pen.overlay(d, INDEX["Q"])
    prop = pupil.propensity
    if prop.severe and pupil.year >= 9 and rng.random() < 0.02:
        pen.spell(pen.pick(None), rng.randint(10, 30), INDEX["Y5"], 10**6)
    if rng.random() < 0.002:
        pen.overlay(pen.pick(None), INDEX["Y7"])

    possible = codes.count(_AM_PRESENT) + codes.count(_PM_PRESENT)
    budget = round(prop.rate * possible)

    # Part-time timetable: afternoons on C2 between the agreed dates (and past them, if overdue).
    care = pupil.care
    if care.part_time_timetable is not None and budget:
        agreed_from, agreed_to = care.part_time_timetable
        first_day = bisect_left(days, agreed_from)
        last_day = bisect_right(days, agreed_to) + care.timetable_overrun_days
        c2 = INDEX["C2"]
        for d in range(max(lo, first_day), min(hi, last_day)):
            if codes[2 * d + 1] in _FREE:
                codes[2 * d + 1] = c2
                budget -= 1
        budget = max(budget, 0)

    # Term-time holiday against a break.
    if not prop.severe and budget >= 6 and rng.random() < _HOLIDAY[phase] * (0.7 if pupil.fsm else 1.0):
        r = rng.random()
        length = 3 if r < 0.2 else 4 if r < 0.4 else 5 if r < 0.9 else 10
        length = min(length, budget // 2)
        last_before, first_after = rng.choices(timetable.breaks, _BREAK_WEIGHTS[: len(timetable.breaks)])[0]
        if rng.random() < 0.6 or first_after >= n - 1:
            start = max(lo, last_before - length + 1)
        else:
            start = first_after
        budget -= pen.spell(start, length, _G, 2 * length, _BOTH, 0.15)

    unauthorised = round(budget * prop.unauthorised_share)
    authorised = budget - unauthorised

    # Unauthorised.
    if prop.severe:
        if rng.random() < 0.3:
            unauthorised -= pen.singles(min(unauthorised, rng.randint(2, 6)), _N, _BOTH, None)
        pen.runs(unauthorised, _O, lambda: rng.randint(2, 20), None, n_first=0.5)
    else:
        if unauthorised and rng.random() < (0.2 if phase == SECONDARY else 0.1):
            unauthorised -= pen.singles(
                round(unauthorised * rng.uniform(0.15, 0.5)), _U, _AM, timetable.truancy_weights
            )
        if unauthorised and rng.random() < 0.08:
            unauthorised -= pen.singles(
                min(unauthorised, rng.randint(1, 2)), _N, _BOTH, timetable.truancy_weights
            )
        pen.runs(
            unauthorised,
            _O,
            lambda: _truancy_length(rng),
            timetable.truancy_weights,
            n_first=0.4,
            half_day=0.08,
        )

    # Authorised.
    if authorised:
        secondary_age = pupil.year >= 7
        if rng.random() < (0.6 if prop.severe else 0.55):
            authorised -= pen.singles(min(authorised, rng.choice((1, 2, 2, 3, 4, 5, 6))), _M, _BOTH, None)
        suspend = 0.0
        if secondary_age and phase != SPECIAL:
            suspend = 0.3 if prop.severe else 0.035 + 0.04 * pupil.fsm + 0.03 * (pupil.sen != "none")
        if authorised >= 2 and rng.random() < suspend:
            authorised -= pen.spell(pen.pick(None), rng.randint(1, 3), _E, authorised)
        if authorised and rng.random() < 0.04:
            for eid in _EID:
                d = bisect_left(days, eid)
                if d < n and days[d] == eid and lo <= d < hi and authorised:
                    authorised -= pen.spell(d, 1, INDEX["R"], authorised)
        if authorised and rng.random() < 0.06:
            authorised -= pen.spell(pen.pick(None), rng.randint(1, 2), _C, authorised, n_first=0.3)
        if authorised and rng.random() < 0.002:
            authorised -= pen.spell(pen.pick(None), 5, INDEX["T"], authorised)
        if authorised and rng.random() < 0.002:
            authorised -= pen.singles(min(authorised, rng.randint(2, 4)), INDEX["C1"], _BOTH, None)
        if pupil.year == 11 and authorised:
            if rng.random() < 0.15:
                d = bisect_left(days, date(2025, 1, 13)) + rng.randrange(50)
                authorised -= pen.spell(min(d, hi - 1), 1, INDEX["J1"], 1, (rng.randint(0, 1),))
            if rng.random() < 0.05:
                d = bisect_left(days, date(2025, 5, 12)) + rng.randrange(20)
                authorised -= pen.spell(min(d, hi - 1), 2, INDEX["S"], authorised)
        long_spell = authorised >= 34 and rng.random() < 0.35
        if long_spell:
            authorised -= pen.spell(
                pen.pick(timetable.illness_weights),
                rng.randint(15, max(15, authorised // 2)),
                _I,
                authorised,
                n_first=0.5,
            )
        pen.runs(
            authorised,
            _I,
            lambda: _illness_length(rng),
            timetable.illness_weights,
            n_first=0.22,
            half_day=0.1,
        )

    # Approved educational activities and lates on present sessions.
    for year, day in events.trips:
        if year == pupil.year:
            pen.overlay(day, INDEX["V"])
    if events.work_experience is not None and pupil.year == 10:
        for d in range(events.work_experience, min(n, events.work_experience + 5)):
            pen.overlay(d, INDEX["W"])
    if pupil.year >= 7 and rng.random() < 0.12:
        for _ in range(rng.randint(2, 6)):
            pen.overlay(pen.pick(None), INDEX["P"], _PM)
    if pupil.year >= 7 and dual is None and prop.rate >= 0.15 and rng.random() < 0.03:
        weekday = rng.randint(0, 4)
        k_from = pen.pick(None)
        for d in range(k_from, min(hi, k_from + rng.randint(30, 60))):
            if weekdays[d] == weekday:
                pen.overlay(d, INDEX["K"])
    if rng.random() < 0.01:
        pen.overlay(pen.pick(None), INDEX["B"], (rng.randint(0, 1),))
    late_rate = rng.uniform(0.01, 0.08) if rng.random() < 0.15 else 0.004
    lates = min(hi - lo, round(late_rate * (hi - lo)))
    if lates:
        late = INDEX["L"]
        for d in rng.sample(range(lo, hi), lates):
            if codes[2 * d] == _AM_PRESENT:
                codes[2 * d] = late
    return Register(pupil.upn, bytes(codes), tuple(pen.provisional))


@dataclass(slots=True)
class SchoolRegisters:
    """All registers of one school, with the provisional-N bookkeeping to replay them in order."""

    urn: str
    timetable: Timetable
    registers: list[Register]
    _provisional: dict[int, int] = field(default_factory=dict)
    _corrections: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        slots = 2 * len(self.timetable.days)
        for r_index, register in enumerate(self.registers):
            for slot, day in register.provisional:
                self._provisional[r_index * slots + slot] = _N
                self._corrections.setdefault(day, []).append((r_index, slot))

    def day_marks(self, day: int) -> list[Mark]:
        """The marks first taken on school day `day` (provisional Ns as N)."""
        d = self.timetable.days[day]
        slots = 2 * len(self.timetable.days)
        am, pm = 2 * day, 2 * day + 1
        provisional = self._provisional
        out: list[Mark] = []
        append = out.append
        for r_index, register in enumerate(self.registers):
            codes = register.codes
            c = codes[am]
            if c:
                if register.provisional and r_index * slots + am in provisional:
                    c = _N
                append(Mark(register.upn, d, "AM", CODES[c]))
            c = codes[pm]
            if c:
                if register.provisional and r_index * slots + pm in provisional:
                    c = _N
                append(Mark(register.upn, d, "PM", CODES[c]))
        return out

    def corrections(self, day: int) -> list[Mark]:
        """The corrections of earlier provisional Ns that the school makes on school day `day`."""
        days = self.timetable.days
        out: list[Mark] = []
        for r_index, slot in self._corrections.get(day, ()):
            register = self.registers[r_index]
            out.append(
                Mark(register.upn, days[slot // 2], "PM" if slot % 2 else "AM", CODES[register.codes[slot]])
            )
        return out

    def day_range(self, start: date | None, end: date | None) -> range:
        """Indices of the school days from `start` to `end` inclusive (None: open-ended)."""
        days = self.timetable.days
        first = bisect_left(days, start) if start is not None else 0
        last = bisect_right(days, end) if end is not None else len(days)
        return range(first, last)

    def marks(self, start: date | None = None, end: date | None = None) -> Iterator[Mark]:
        """Every mark the school sends from `start` to `end`, in the order it sends them."""
        for day in self.day_range(start, end):
            yield from self.day_marks(day)
            yield from self.corrections(day)

    def codes_as_of(self, r_index: int, end: date | None) -> bytes:
        """One register as it stands at the end of `end` (provisional Ns not yet corrected)."""
        register = self.registers[r_index]
        if not register.provisional or end is None:
            return register.codes
        last = bisect_right(self.timetable.days, end) - 1
        codes = bytearray(register.codes)
        for slot, day in register.provisional:
            if day > last:
                codes[slot] = _N
        return bytes(codes)


def week_of(d: date) -> date:
    """The Monday of `d`'s week."""
    return d - timedelta(days=d.weekday())
