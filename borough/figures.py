"""The borough's headline attendance figures, computed straight from the generator.

Independent of the services: used to calibrate the generator against the strategy and later
to check the services' reports (`GET /v1/la/attendance`) against what was loaded.

DfE method (SPEC §3): per enrolment, possible = present + AEA + authorised + unauthorised
sessions; absence rate = (authorised + unauthorised) / possible; persistent absence (PA) when
the rate is ≥ 10 %, severe (SA) when ≥ 50 %. LA and group rates sum sessions before dividing;
PA and SA percentages are of enrolments with at least one possible session in the period.
The register is taken as it stands at the end of the period: a provisional ``N`` whose
correction falls after `end` still counts as ``N``.

The severe-absence cohort is broken down the way the strategy's table is: FSM, SEN support,
EHCP, early help, CIN, CP, looked after, and primary/secondary *school age* (Reception–Year 6
vs Year 7+, whatever the school's phase), each as a count, % of the full cohort and % of the
SA cohort. A dual-registered pupil counts once per enrolment, as SPEC §3 counts enrolments.

`signals` gives rough counts of what the rules service should detect (SPEC §5), from the final
registers: pupils meeting the penalty threshold (10 G/N/O/U sessions in 10 school weeks, while
of compulsory school age), 10-day unauthorised runs, pupils reaching 15 days of illness,
absence sessions of pupils with a social worker or ETAC, provisional Ns left more than 5
school days and part-time timetables used past their end. They are order-of-magnitude
checks, not a specification of the rules.

Measured (seed 2024, scale 1.0, whole year; ``python -m borough figures``): 102 schools,
38,024 pupils, 14.12 M marks of which 135 k are corrections of a provisional N.
Overall absence 7.78 % (strategy 7.8), authorised 5.24 (5.2), unauthorised 2.54 (2.6),
persistent 22.70 (22.6), severe 1.79 (1.7–1.9). SA cohort of 680: FSM 63.8 % (62.2),
SEN support 36.9 (38.3), EHCP 17.4 (17.5), early help 10.7 (11.0), CIN 6.5 (5.8), CP 2.9
(2.9), looked after 0.9 (1.5: 6 children where 10 were expected), secondary age 88.1 (89.5).
By phase: primary 6.0 % / PA 17.6, secondary 9.7 / 28.3, special 12.4 / 35.0, AP 38.3 / 77.6.
Other seeds land within about ±0.25 points (SA 1.8–2.0 %), as school draws differ.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date

from borough.generate import Borough, SchoolYear
from borough.pupils import Enrolment
from borough.registers import (
    AEA,
    AUTHORISED,
    CATEGORY,
    CODES,
    INDEX,
    NOT_COUNTED,
    PENALTY_CODES,
    PRESENT,
    UNAUTHORISED,
)
from shared.csa import is_compulsory_school_age

TARGETS = {
    "overall": 7.8,
    "authorised": 5.2,
    "unauthorised": 2.6,
    "persistent": 22.6,
    "severe": 1.8,
}
"""Sefton AY 2023/24 (strategy headline table; SA 1.7 % of the full cohort in its own count)."""

COHORT_TARGETS = {
    "fsm": 62.2,
    "sen_support": 38.3,
    "ehcp": 17.5,
    "early_help": 11.0,
    "cin": 5.8,
    "cp": 2.9,
    "cla": 1.5,
    "primary_age": 10.5,
    "secondary_age": 89.5,
}
"""% of the severe-absence cohort in each group (strategy, "How do we support the most vulnerable?")."""

GROUPS = tuple(COHORT_TARGETS)
_CATEGORY_OF = tuple(CATEGORY)
_I = INDEX["I"]
_N = INDEX["N"]
_C2 = INDEX["C2"]


@dataclass
class Tally:
    """Sessions and enrolments of a group."""

    present: int = 0
    aea: int = 0
    authorised: int = 0
    unauthorised: int = 0
    not_counted: int = 0
    enrolments: int = 0
    persistent: int = 0
    severe: int = 0

    @property
    def possible(self) -> int:
        return self.present + self.aea + self.authorised + self.unauthorised

    def rate(self, sessions: int) -> float:
        return 100.0 * sessions / self.possible if self.possible else 0.0

    @property
    def overall_rate(self) -> float:
        return self.rate(self.authorised + self.unauthorised)

    @property
    def authorised_rate(self) -> float:
        return self.rate(self.authorised)

    @property
    def unauthorised_rate(self) -> float:
        return self.rate(self.unauthorised)

    @property
    def persistent_rate(self) -> float:
        return 100.0 * self.persistent / self.enrolments if self.enrolments else 0.0

    @property
    def severe_rate(self) -> float:
        return 100.0 * self.severe / self.enrolments if self.enrolments else 0.0

    def add(self, other: Tally) -> None:
        self.present += other.present
        self.aea += other.aea
        self.authorised += other.authorised
        self.unauthorised += other.unauthorised
        self.not_counted += other.not_counted
        self.enrolments += other.enrolments
        self.persistent += other.persistent
        self.severe += other.severe

    def summary(self) -> dict[str, float | int]:
        return {
            "enrolments": self.enrolments,
            "possible": self.possible,
            "overall": round(self.overall_rate, 2),
            "authorised": round(self.authorised_rate, 2),
            "unauthorised": round(self.unauthorised_rate, 2),
            "persistent": round(self.persistent_rate, 2),
            "severe": round(self.severe_rate, 2),
        }


@dataclass
class Figures:
    """The year's measures for the borough, with breakdowns and rough signal counts."""

    seed: int
    scale: float
    start: date | None
    end: date | None
    schools: int = 0
    pupils: int = 0
    marks: int = 0
    amendments: int = 0
    overall: Tally = field(default_factory=Tally)
    by_phase: dict[str, Tally] = field(default_factory=dict)
    by_locality: dict[str, Tally] = field(default_factory=dict)
    cohort: dict[str, list[int]] = field(default_factory=lambda: {g: [0, 0] for g in GROUPS})
    codes: Counter[str] = field(default_factory=Counter)
    signals: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        sa = self.overall.severe
        full = self.overall.enrolments
        return {
            "seed": self.seed,
            "scale": self.scale,
            "period": {
                "from": self.start.isoformat() if self.start else None,
                "to": self.end.isoformat() if self.end else None,
            },
            "schools": self.schools,
            "pupils": self.pupils,
            "marks": self.marks,
            "amendments": self.amendments,
            "headline": self.overall.summary(),
            "targets": TARGETS,
            "by_phase": {k: v.summary() for k, v in sorted(self.by_phase.items())},
            "by_locality": {k: v.summary() for k, v in sorted(self.by_locality.items())},
            "severe_absence_cohort": {
                g: {
                    "full_cohort": n_all,
                    "severe": n_sa,
                    "pct_of_full_cohort": round(100.0 * n_sa / full, 2) if full else 0.0,
                    "pct_of_severe_cohort": round(100.0 * n_sa / sa, 1) if sa else 0.0,
                    "target_pct_of_severe_cohort": COHORT_TARGETS[g],
                }
                for g, (n_all, n_sa) in self.cohort.items()
            },
            "codes": dict(sorted(self.codes.items())),
            "signals": dict(sorted(self.signals.items())),
        }


def _groups(e: Enrolment) -> list[str]:
    p = e.pupil
    out = ["secondary_age" if p.year >= 7 else "primary_age"]
    if p.fsm:
        out.append("fsm")
    if p.sen == "support":
        out.append("sen_support")
    elif p.sen == "ehcp":
        out.append("ehcp")
    for flag in ("early_help", "cin", "cp", "cla"):
        if getattr(p.care, flag):
            out.append(flag)
    return out


def _signals(
    e: Enrolment, codes: bytes, year: SchoolYear, weeks: list[int], first: int, last: int, out: Counter[str]
) -> None:
    """Rough signal counts for one register over school days [first, last)."""
    days = year.registers.timetable.days
    pupil = e.pupil
    # Continuous unauthorised days, illness days, penalty sessions per school week.
    run = 0
    illness = 0
    per_week: dict[int, int] = {}
    absent = 0
    for d in range(first, last):
        am, pm = codes[2 * d], codes[2 * d + 1]
        if not am and not pm:
            run = 0
            continue
        if (not am or am in PENALTY_CODES) and (not pm or pm in PENALTY_CODES):
            run += 1
            if run == 10:
                out["attendance_return_due"] += 1
        else:
            run = 0
        illness += (am == _I) + (pm == _I)
        hits = (am in PENALTY_CODES) + (pm in PENALTY_CODES)
        if hits and is_compulsory_school_age(pupil.date_of_birth, days[d]):
            per_week[weeks[d]] = per_week.get(weeks[d], 0) + hits
        absent += (_CATEGORY_OF[am] in (AUTHORISED, UNAUTHORISED)) + (
            _CATEGORY_OF[pm] in (AUTHORISED, UNAUTHORISED)
        )
    if illness >= 30:
        out["sickness_return_due_pupils"] += 1
    if per_week:
        top = max(per_week)
        series = [per_week.get(w, 0) for w in range(top + 1)]
        window = 0
        met = False
        for i, n in enumerate(series):
            window += n - (series[i - 10] if i >= 10 else 0)
            if window >= 10:
                met = True
                break
        if met:
            out["penalty_threshold_met_pupils"] += 1
    if pupil.care.social_worker or pupil.care.etac:
        out["first_day_absence_sessions"] += absent
        if absent:
            out["first_day_absence_pupils"] += 1
    if pupil.care.part_time_timetable is not None:
        end = pupil.care.part_time_timetable[1]
        if any(codes[2 * d + 1] == _C2 and days[d] > end for d in range(first, last)):
            out["part_time_timetable_overdue_pupils"] += 1


def compute(
    seed: int = 2024,
    scale: float = 1.0,
    start: date | None = None,
    end: date | None = None,
    signals: bool = True,
) -> Figures:
    """Generate the borough school by school and measure it."""
    borough = Borough(seed, scale)
    fig = Figures(seed, scale, start, end)
    upns: set[str] = set()
    n_codes = len(CODES)
    for year in borough.school_years():
        fig.schools += 1
        school = year.school
        registers = year.registers
        days_range = registers.day_range(start, end)
        first, last = days_range.start, days_range.stop
        timetable = registers.timetable
        # School weeks: consecutive numbering of the Monday–Sunday weeks with school days.
        week_ids: list[int] = []
        previous = None
        for d in timetable.days:
            monday = d.toordinal() - d.weekday()
            if monday != previous:
                week_ids.append(len(week_ids) and week_ids[-1] + 1)
                previous = monday
            else:
                week_ids.append(week_ids[-1])
        phase_tally = fig.by_phase.setdefault(school.phase, Tally())
        locality_tally = fig.by_locality.setdefault(school.locality, Tally())
        for r_index, e in enumerate(year.enrolments):
            register = registers.registers[r_index]
            codes = registers.codes_as_of(r_index, end)[2 * first : 2 * last]
            counts = [codes.count(i) for i in range(1, n_codes)]
            t = Tally()
            for i, n in enumerate(counts, 1):
                if n:
                    fig.codes[CODES[i]] += n
                    category = _CATEGORY_OF[i]
                    if category == PRESENT:
                        t.present += n
                    elif category == AEA:
                        t.aea += n
                    elif category == AUTHORISED:
                        t.authorised += n
                    elif category == UNAUTHORISED:
                        t.unauthorised += n
                    elif category == NOT_COUNTED:
                        t.not_counted += n
            marked = sum(counts)
            in_period = [(slot, day) for slot, day in register.provisional if first <= day < last]
            fig.marks += marked + len(in_period)
            fig.amendments += len(in_period)
            if not marked:
                continue
            upns.add(e.pupil.upn)
            if t.possible:
                t.enrolments = 1
                rate = (t.authorised + t.unauthorised) / t.possible
                t.persistent = int(rate >= 0.1)
                t.severe = int(rate >= 0.5)
                for g in _groups(e):
                    fig.cohort[g][0] += 1
                    fig.cohort[g][1] += t.severe
            fig.overall.add(t)
            phase_tally.add(t)
            locality_tally.add(t)
            if signals:
                full = registers.codes_as_of(r_index, end)
                _signals(e, full, year, week_ids, first, last, fig.signals)
                late = {
                    slot // 2
                    for slot, day in register.provisional
                    if first <= slot // 2 < last and day - slot // 2 > 5
                }
                final = register.codes
                never = sum(1 for d in range(first, last - 5) if final[2 * d] == _N or final[2 * d + 1] == _N)
                fig.signals["unresolved_n_days"] += len(late) + never
    fig.pupils = len(upns)
    return fig


def report(fig: Figures) -> str:
    """The figures as a plain-text table, with the strategy's values alongside."""
    o = fig.overall
    lines = [
        f"Synthetic borough: seed {fig.seed}, scale {fig.scale}, "
        f"{fig.start or 'start of year'} to {fig.end or 'end of year'}",
        f"{fig.schools} schools, {fig.pupils:,} pupils, {o.enrolments:,} enrolments with possible sessions, "
        f"{fig.marks:,} marks ({fig.amendments:,} amendments of provisional N)",
        "",
        f"{'measure':<28}{'generated':>10}{'strategy':>10}",
        f"{'overall absence %':<28}{o.overall_rate:>10.2f}{TARGETS['overall']:>10.1f}",
        f"{'authorised absence %':<28}{o.authorised_rate:>10.2f}{TARGETS['authorised']:>10.1f}",
        f"{'unauthorised absence %':<28}{o.unauthorised_rate:>10.2f}{TARGETS['unauthorised']:>10.1f}",
        f"{'persistent absentees %':<28}{o.persistent_rate:>10.2f}{TARGETS['persistent']:>10.1f}",
        f"{'severely absent %':<28}{o.severe_rate:>10.2f}{'1.7-1.9':>10}",
        "",
        f"severe absence cohort: {o.severe} pupils",
        f"{'group':<16}{'full':>8}{'SA':>6}{'% full':>9}{'% SA':>8}{'target':>8}",
    ]
    for g, (n_all, n_sa) in fig.cohort.items():
        pct_full = 100.0 * n_sa / o.enrolments if o.enrolments else 0.0
        pct_sa = 100.0 * n_sa / o.severe if o.severe else 0.0
        lines.append(f"{g:<16}{n_all:>8}{n_sa:>6}{pct_full:>9.2f}{pct_sa:>8.1f}{COHORT_TARGETS[g]:>8.1f}")
    lines += [
        "",
        f"{'by phase / locality':<24}{'enrol':>7}{'overall':>9}{'auth':>7}{'unauth':>8}{'PA':>7}{'SA':>6}",
    ]
    for name, t in [*sorted(fig.by_phase.items()), *sorted(fig.by_locality.items())]:
        lines.append(
            f"{name:<24}{t.enrolments:>7}{t.overall_rate:>9.2f}{t.authorised_rate:>7.2f}"
            f"{t.unauthorised_rate:>8.2f}{t.persistent_rate:>7.2f}{t.severe_rate:>6.2f}"
        )
    lines += [
        "",
        "codes: " + ", ".join(f"{c} {n:,}" for c, n in sorted(fig.codes.items(), key=lambda kv: -kv[1])),
    ]
    if fig.signals:
        lines += ["", "signals (rough): " + ", ".join(f"{k} {v:,}" for k, v in sorted(fig.signals.items()))]
    return "\n".join(lines)
