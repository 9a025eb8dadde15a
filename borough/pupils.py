"""The pupils of each school: who they are, their needs and care status, and their enrolments.

A school's roll is drawn from its own random stream (seed, URN), one year group at a time, so
any school can be generated alone and in any order. Prevalences follow SPEC §11:

* **FSM 25 %**: the home ward's rate (`borough.geography`) times FSM_SCALE; special schools
  ×1.7, alternative provision 60 %.
* **Care** (mutually exclusive levels, most involved wins): early help 2 %, child in need 1.5 %,
  child protection plan 0.5 %, looked after 0.8 %. Early help, CIN and CP are about 2.3 times
  as common among FSM pupils (so the severe-absence cohort carries the right overlap);
  looked-after children are not FSM-linked (they attract Pupil Premium Plus, not FSM).
* **SEN**: SEN support 13 %, EHCP 4 % in all — every special school pupil has an EHCP (about
  2 % of the borough), mainstream pupils about 1.9 %; both more common with FSM and with
  social care involvement.
* A few pupils cross the border (home LA 340 Knowsley, 341 Liverpool, 344 Wirral, 888
  Lancashire; 1.5 % of primary, 4 % of secondary pupils); their EHCPs are maintained by the
  home LA.
* **Part-time timetables** (code C2) for about 70 pupils, mostly disengaged secondary pupils,
  4–8 school weeks agreed; a third run past the agreed end (the overdue signal). **ETAC** for
  about 25 pupils with high absence.

Dates of birth match the year group (Year N in 2024-25 was born 1 Sept (2019−N) to 31 Aug
(2020−N)). Pupils starting Reception or Year 7 are admitted on 3 September 2024; older pupils
on the first days of September of their entry year (one in ten joined in a later year).
About 3 % arrive mid-year with a UPN issued elsewhere and about 3 % leave mid-year. Year 11
leave on Friday 27 June 2025, the last Friday in June, when compulsory school age ends.

UPNs: LA 343, the school's establishment number, the entry year, and a serial per (school,
entry year) — unique across the borough by construction. Mid-year arrivals carry an
establishment number 9000 + school index, so they never clash either.

**Dual registrations**: the AP schools generate their dual-registered pupils themselves; each
names a mainstream secondary (same part of the borough) as the main school, attends the AP
centre two or three fixed weekdays between an AP start and end date, and is marked ``D`` at
whichever school they are not due at that day. The main school's roll includes them (see
`borough.generate`); both enrolments share one pupil record and UPN.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from borough import names, propensity
from borough.geography import CROSS_BORDER_LAS, LA_CODE, WARD_BY_NAME, WARDS, Ward, wards_in
from borough.propensity import CIN, CLA, CP, EARLY_HELP, NONE, Propensity
from borough.schools import AP, PRIMARY, SECONDARY, SPECIAL, School
from shared.upn import make_upn

FSM_SCALE = 0.965
Y11_LEAVING = date(2025, 6, 27)
FIRST_DAY = date(2024, 9, 3)
_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"

# Care level probabilities for a non-FSM pupil; FSM multiplies early help/CIN/CP by FSM_CARE.
_CARE_BASE = {EARLY_HELP: 0.0143, CIN: 0.0103, CP: 0.0034, CLA: 0.0078}
_FSM_CARE = 2.3


@dataclass(frozen=True, slots=True)
class Parent:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Care:
    """Social-care status: what `PUT /v1/pupils/{upn}/care` carries."""

    level: str
    etac: bool = False
    part_time_timetable: tuple[date, date] | None = None
    timetable_overrun_days: int = 0
    """School days C2 carries on past the agreed end (0: the timetable ends on time)."""

    @property
    def cin(self) -> bool:
        return self.level == CIN

    @property
    def cp(self) -> bool:
        return self.level == CP

    @property
    def cla(self) -> bool:
        return self.level == CLA

    @property
    def early_help(self) -> bool:
        return self.level == EARLY_HELP

    @property
    def social_worker(self) -> bool:
        """Has an allocated social worker (CIN, CP or looked after): first-day response applies."""
        return self.level in (CIN, CP, CLA)

    @property
    def any(self) -> bool:
        """Whether there is anything to send to the care endpoint."""
        return self.level != NONE or self.etac or self.part_time_timetable is not None

    def body(self) -> dict[str, object]:
        out: dict[str, object] = {
            "cin": self.cin,
            "cp": self.cp,
            "cla": self.cla,
            "early_help": self.early_help,
            "etac": self.etac,
        }
        if self.part_time_timetable is not None:
            start, end = self.part_time_timetable
            out["part_time_timetable"] = {"start": start.isoformat(), "end": end.isoformat()}
        return out


@dataclass(frozen=True, slots=True)
class Pupil:
    """A child: identity, needs, care status and latent absence propensity."""

    upn: str
    given_name: str
    family_name: str
    date_of_birth: date
    sex: str
    year: int
    """National curriculum year, 0 = Reception."""
    home_la_code: str
    home_postcode: str
    ward: str | None
    fsm: bool
    sen: str
    ehcp_la_code: str | None
    parents: tuple[Parent, ...]
    care: Care
    propensity: Propensity

    @property
    def year_group(self) -> str:
        return "R" if self.year == 0 else str(self.year)

    @property
    def secondary_age(self) -> bool:
        return self.year >= 7


@dataclass(frozen=True, slots=True)
class Dual:
    """One side of a dual registration: the other school and the AP timetable."""

    other_urn: str
    at_ap: bool
    """True for the AP centre's enrolment, False for the main school's."""
    ap_weekdays: frozenset[int]
    start: date
    end: date | None


@dataclass(frozen=True, slots=True)
class Enrolment:
    """A pupil on one school's roll."""

    pupil: Pupil
    urn: str
    admission_date: date
    leaving_date: date | None
    dual: Dual | None = None
    school_phase: str = PRIMARY

    def body(self) -> dict[str, object]:
        """One item of `PUT /v1/schools/{urn}/pupils`."""
        p = self.pupil
        out: dict[str, object] = {
            "upn": p.upn,
            "given_name": p.given_name,
            "family_name": p.family_name,
            "date_of_birth": p.date_of_birth.isoformat(),
            "sex": p.sex,
            "year_group": p.year_group,
            "home_la_code": p.home_la_code,
            "home_postcode": p.home_postcode,
            "admission_date": self.admission_date.isoformat(),
            "fsm": p.fsm,
            "sen": p.sen,
            "parents": [{"id": par.id, "name": par.name} for par in p.parents],
        }
        if p.ward is not None:
            out["ward"] = p.ward
        if self.leaving_date is not None:
            out["leaving_date"] = self.leaving_date.isoformat()
        if p.ehcp_la_code is not None:
            out["ehcp_la_code"] = p.ehcp_la_code
        return out


@dataclass
class _Serials:
    """UPN serial counters of one school, per issue year."""

    next: dict[int, int] = field(default_factory=dict)

    def take(self, year: int, first: int = 0) -> int:
        n = self.next.get(year, first)
        self.next[year] = n + 1
        return n


def birth_window(year: int) -> tuple[date, date]:
    """Earliest and latest date of birth for national curriculum year `year` in 2024-25."""
    return date(2019 - year, 9, 1), date(2020 - year, 8, 31)


def _september_start(year: int) -> date:
    d = date(year, 9, 3)
    while d.weekday() >= 5:
        d += timedelta(days=1)
    return d


def _weekday_between(rng: random.Random, lo: date, hi: date) -> date:
    d = lo + timedelta(days=rng.randint(0, (hi - lo).days))
    while d.weekday() >= 5:
        d -= timedelta(days=1)
    return max(d, lo)


def _postcode(rng: random.Random, district: str) -> str:
    return f"{district} {rng.randint(1, 9)}{rng.choice(_LETTERS)}{rng.choice(_LETTERS)}"


def _year_counts(school: School, scale: float, rng: random.Random) -> list[tuple[int, int]]:
    years = list(range(school.first_year, school.last_year + 1))
    if school.phase == AP:
        weights = [0.3, 0.5, 0.7, 1.0, 1.7, 2.4, 3.0][-len(years) :]
    else:
        weights = [rng.uniform(0.92, 1.08) for _ in years]
    total = school.size * scale
    scale_w = total / sum(weights)
    out: list[tuple[int, int]] = []
    carry = 0.0
    for y, w in zip(years, weights, strict=True):
        want = w * scale_w + carry
        n = int(want + 0.5)
        carry = want - n
        out.append((y, n))
    if sum(n for _, n in out) == 0:
        out[-1] = (out[-1][0], 1)
    return out


def _home(rng: random.Random, school: School) -> tuple[str, str, Ward | None]:
    cross = {PRIMARY: 0.015, SECONDARY: 0.04, SPECIAL: 0.05, AP: 0.03}[school.phase]
    if rng.random() < cross:
        la, district = rng.choice(CROSS_BORDER_LAS[school.locality])
        return la, _postcode(rng, district), None
    home_ward = WARD_BY_NAME[school.ward]
    r = rng.random()
    if school.phase in (SPECIAL, AP) and r < 0.6:
        ward = rng.choice(WARDS)
    elif r < 0.6:
        ward = home_ward
    elif r < 0.95:
        ward = rng.choice(wards_in(school.locality))
    else:
        ward = rng.choice(WARDS)
    return LA_CODE, _postcode(rng, ward.district), ward


def _care_level(rng: random.Random, fsm: bool, phase: str) -> str:
    boost = {SPECIAL: 1.8, AP: 3.5}.get(phase, 1.0)
    r = rng.random()
    acc = 0.0
    for level, base in _CARE_BASE.items():
        acc += base * boost * (_FSM_CARE if fsm and level != CLA else 1.0)
        if r < acc:
            return level
    return NONE


def _sen(rng: random.Random, fsm: bool, care: str, phase: str) -> str:
    if phase == SPECIAL:
        return "ehcp"
    lift = (1.45 if fsm else 1.0) * (1.9 if care in (CIN, CP, CLA) else 1.3 if care == EARLY_HELP else 1.0)
    if phase == AP:
        ehcp, support = 0.15, 0.5
    else:
        ehcp, support = 0.0148 * lift, 0.116 * lift
    r = rng.random()
    if r < ehcp:
        return "ehcp"
    if r < ehcp + support:
        return "support"
    return "none"


def _parents(rng: random.Random, upn: str, family: str) -> tuple[Parent, ...]:
    first = Parent(f"{upn}-P1", f"{rng.choice(names.WOMEN)} {family}")
    if rng.random() < 0.35:
        return (first,)
    second_family = family if rng.random() < 0.7 else rng.choice(names.FAMILY)
    return first, Parent(f"{upn}-P2", f"{rng.choice(names.MEN)} {second_family}")


def _care(rng: random.Random, level: str, prop: Propensity, year: int, phase: str) -> Care:
    """Add ETAC and part-time timetables, which go with high absence."""
    etac = prop.rate >= 0.1 and rng.random() < (0.012 if prop.severe else 0.0035)
    timetable: tuple[date, date] | None = None
    overrun = 0
    chance = 0.0
    if prop.severe:
        chance = 0.1 if year >= 7 or phase in (SPECIAL, AP) else 0.03
    elif prop.rate >= 0.15:
        chance = 0.004 if year >= 5 else 0.001
    if rng.random() < chance:
        start = _weekday_between(rng, date(2024, 9, 16), date(2025, 4, 30))
        start -= timedelta(days=start.weekday())  # a Monday
        start = max(start, date(2024, 9, 16))
        end = start + timedelta(days=7 * rng.randint(4, 8) - 3)
        timetable = (start, end)
        if rng.random() < 0.35:
            overrun = rng.randint(5, 20)
    return Care(level, etac, timetable, overrun)


def new_pupil(
    rng: random.Random,
    school: School,
    year: int,
    upn: str,
    seed: int,
) -> Pupil:
    """Draw one pupil of `year` at `school` with the given UPN.

    Identity, needs and care come from the school's stream `rng`; the absence propensity (and
    the ETAC / part-time timetable that go with it) from the pupil's own stream, so retuning
    the absence model never changes who the pupils are.
    """
    lo, hi = birth_window(year)
    dob = lo + timedelta(days=rng.randint(0, (hi - lo).days))
    male = rng.random() < {SPECIAL: 0.68, AP: 0.7}.get(school.phase, 0.51)
    given = rng.choice(names.BOYS if male else names.GIRLS)
    family = rng.choice(names.FAMILY)
    home_la, postcode, ward = _home(rng, school)
    fsm_rate = (ward.fsm_rate if ward is not None else 0.25) * FSM_SCALE
    if school.phase == SPECIAL:
        fsm_rate = min(0.8, fsm_rate * 1.7)
    elif school.phase == AP:
        fsm_rate = 0.6
    fsm = rng.random() < fsm_rate
    level = _care_level(rng, fsm, school.phase)
    sen = _sen(rng, fsm, level, school.phase)
    parents = _parents(rng, upn, family)
    own = random.Random(f"rollcall-borough:{seed}:absence:{upn}")
    prop = propensity.draw(
        own, year=year, school_phase=school.phase, fsm=fsm, sen=sen, care=level, school_effect=school.effect
    )
    care = _care(own, level, prop, year, school.phase)
    return Pupil(
        upn=upn,
        given_name=given,
        family_name=family,
        date_of_birth=dob,
        sex="M" if male else "F",
        year=year,
        home_la_code=home_la,
        home_postcode=postcode,
        ward=ward.name if ward is not None else None,
        fsm=fsm,
        sen=sen,
        ehcp_la_code=home_la if sen == "ehcp" else None,
        parents=parents,
        care=care,
        propensity=prop,
    )


def enrol(seed: int, school: School, scale: float) -> list[Enrolment]:
    """The school's own (single-registered) roll for 2024-25, in year-group order."""
    rng = random.Random(f"rollcall-borough:{seed}:pupils:{school.urn}")
    serials = _Serials()
    arrivals = 0
    out: list[Enrolment] = []
    for year, count in _year_counts(school, scale, rng):
        entry_year = 2024 - (year - school.first_year)
        for _ in range(count):
            arrival = year != school.first_year and rng.random() < 0.03
            if arrival:
                la = rng.choice((343, 343, 340, 341, 344, 888, 330, 213))
                upn = make_upn(la, 9000 + school.index, 24, arrivals)
                arrivals += 1
                admission = _weekday_between(rng, date(2024, 9, 10), date(2025, 6, 30))
            else:
                issue = entry_year
                if year != school.first_year and rng.random() < 0.1:
                    issue = rng.randint(entry_year + 1, 2024)
                    admission = _weekday_between(rng, date(issue, 9, 10), date(issue + 1, 7, 10))
                    if issue == 2024:
                        issue, admission = entry_year, _september_start(entry_year)
                else:
                    admission = FIRST_DAY if entry_year == 2024 else _september_start(entry_year)
                upn = make_upn(343, school.establishment, issue, serials.take(issue))
            pupil = new_pupil(rng, school, year, upn, seed)
            leaving: date | None = None
            if year == 11:
                leaving = Y11_LEAVING
            elif not arrival and rng.random() < 0.03:
                leaving = _weekday_between(rng, date(2024, 9, 20), date(2025, 7, 10))
            if leaving is not None and leaving <= admission:
                # A Year 11 arrival in late June would leave before arriving: arrive earlier instead.
                admission = _weekday_between(rng, date(2024, 9, 10), leaving - timedelta(days=21))
            out.append(Enrolment(pupil, school.urn, admission, leaving, None, school.phase))
    return out


def enrol_dual(seed: int, ap: School, mains: list[School], scale: float) -> list[tuple[Enrolment, Enrolment]]:
    """The AP centre's dual-registered pupils: (AP enrolment, main school enrolment) pairs."""
    rng = random.Random(f"rollcall-borough:{seed}:dual:{ap.urn}")
    count = max(1, round(rng.randint(24, 34) * scale)) if mains else 0
    out: list[tuple[Enrolment, Enrolment]] = []
    for n in range(count):
        main = rng.choice(mains)
        year = rng.choices((7, 8, 9, 10, 11), (1, 2, 3, 4, 4))[0]
        entry_year = 2024 - (year - 7)
        upn = make_upn(343, main.establishment, entry_year, 900 + 50 * (ap.index % 2) + n % 50)
        pupil = new_pupil(rng, ap, year, upn, seed)
        start = _weekday_between(rng, date(2024, 9, 9), date(2025, 3, 28))
        end: date | None = _weekday_between(rng, start + timedelta(days=60), start + timedelta(days=200))
        if end is not None and end >= date(2025, 7, 18):
            end = None
        if year == 11:
            end = Y11_LEAVING if end is None or end > Y11_LEAVING else end
        weekdays = frozenset(rng.choice(((1, 2, 3), (0, 1, 2), (2, 3, 4), (1, 3), (0, 2, 4))))
        main_leaving = Y11_LEAVING if year == 11 else None
        ap_side = Enrolment(pupil, ap.urn, start, end, Dual(main.urn, True, weekdays, start, end), AP)
        main_side = Enrolment(
            pupil,
            main.urn,
            _september_start(entry_year),
            main_leaving,
            Dual(ap.urn, False, weekdays, start, end),
            SECONDARY,
        )
        out.append((ap_side, main_side))
    return out
