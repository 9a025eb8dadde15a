"""The rules engine: measures, bands and signals computed from one pupil's registers.

A pure core (ARCHITECTURE.md principle 1): no I/O, no clock reads — ``today`` and ``now`` are
parameters — and no framework imports. Everything is recomputed from the register *as it
stands* (principle 4): the output is a function of the final register only, whatever order the
marks arrived in and whatever amendments happened on the way, so a recompute after every batch
is always right and a backfill of last term yields last term's episodes, dated when they
happened (SPEC §5).

Sources: SPEC.md §1–§6; DfE attendance statistics methodology (measures); Sefton attendance
strategy 2024–25 graduated-response flowchart (bands); national penalty notice framework,
August 2024 (penalty threshold, school weeks); DfE "Working together to improve school
attendance", August 2024 (attendance and sickness returns, first-day response, part-time
timetables, N to be resolved within 5 school days); School Attendance (Pupil Registration)
(England) Regulations 2024 (codes); Education Act 1996 s8 (compulsory school age).

Decisions where SPEC is silent (each is repeated on the rule it concerns):

* **Which marks count.** Only marks on a school session of that school's calendar, inside the
  enrolment (admission date to leaving date, both inclusive) and on or before ``today`` are read;
  any other mark is ignored. A code the date-effective code table refuses for its date (which
  ingest never stores) is treated as no mark at all.
* **Unmarked sessions** are not possible sessions: a session of the period with no mark is left
  out of every count (the register is incomplete, not the pupil absent).
* **Reference date.** Signals are evaluated as of the *reference date*: the earlier of today and
  the leaving date, brought back to the last school day on which this enrolment has any mark.
  A school that has not yet sent today's (or this week's) registers therefore neither ends a
  run nor makes an ``N`` look unresolved; an episode is open (``ended_on is None``) if it still
  holds on the reference date. On the reference date itself a day whose other session is not
  yet marked is *pending*: it neither breaks nor extends a run.
* **``ended_on``** is the first school day on which the condition no longer held (the date of
  the ``…_ended`` signal). Per-session signals (``first_day_absence``) are instantaneous:
  ``ended_on == started_on``. When the pupil has left (leaving date before today), episodes
  still open are ended on the day after the leaving date.
* **Keys.** ``Episode.key`` is ``type:school_urn:started_on`` plus a qualifier where one
  start date can hold several episodes: the session for per-session signals and the band entered
  for ``band_changed`` (an amendment that changes the band entered on a day is a different
  episode, so the change is signalled again).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from itertools import accumulate, compress, pairwise
from itertools import count as naturals
from operator import ne
from weakref import WeakKeyDictionary

from shared.calendar import AcademicYear, Calendars, Session, week_start
from shared.codes import CODES_2024_FROM, Category, code_set
from shared.csa import csa_end, csa_start, is_compulsory_school_age
from shared.policy import Policy

__all__ = [
    "SIGNAL_TYPES",
    "Action",
    "Assessment",
    "Band",
    "Care",
    "EnrolmentRegister",
    "Episode",
    "IsoMarks",
    "Measures",
    "PenaltyWindow",
    "PupilInput",
    "Reason",
    "SessionMark",
    "Sessions",
    "assess",
    "assess_enrolment",
    "default_period",
    "measure",
    "reference_date",
]

PERSISTENT_ABSENCE_PERCENT = 10
"""Persistent absence: absence rate ≥ 10 % of possible sessions (DfE methodology, SPEC §3)."""

SEVERE_ABSENCE_PERCENT = 50
"""Severe absence: absence rate ≥ 50 % of possible sessions (DfE methodology, SPEC §3)."""

SIGNAL_TYPES: tuple[str, ...] = (
    "band_changed",
    "persistent_absence",
    "severe_absence",
    "penalty_threshold_met",
    "attendance_return_due",
    "sickness_return_due",
    "first_day_absence",
    "register_missing",
    "unresolved_n",
    "part_time_timetable_overdue",
)
"""Episode types, one per signal of SPEC §5 (the service emits ``persistent_absence_started`` /
``…_ended`` etc. for the two that SPEC names with a suffix)."""

SessionMark = tuple[date, str, str]
"""One register entry as evidence: (date, "AM"/"PM", code)."""

# --- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Care:
    """What children's social care and the LA know about a pupil (CONTRACT ``PUT /pupils/{upn}/care``).

    ``part_time_start``/``part_time_end`` are the agreed part-time timetable (SPEC §5.9).
    """

    cin: bool = False
    cp: bool = False
    cla: bool = False
    early_help: bool = False
    etac: bool = False
    part_time_start: date | None = None
    part_time_end: date | None = None

    @property
    def has_social_worker(self) -> bool:
        """Child in need, on a child protection plan or looked after (SPEC §5.6)."""
        return self.cin or self.cp or self.cla

    @property
    def first_day_response(self) -> bool:
        """Whether absences call for the first-day response: a social worker or an ETAC plan (SPEC §5.6)."""
        return self.cin or self.cp or self.cla or self.etac


@dataclass(frozen=True, slots=True)
class EnrolmentRegister:
    """One enrolment's register as it stands now: ``marks[(date, "AM"|"PM")] = code``.

    ``leaving_date`` is the last day on roll (inclusive), as ingest validates marks.
    """

    school_urn: str
    admission_date: date
    leaving_date: date | None
    calendars: Calendars
    marks: Mapping[tuple[date, str], str]


class IsoMarks(Mapping[tuple[date, str], str]):
    """A register keyed as the database hands it over: ``"2024-09-03AM" -> code``.

    The same mapping as ``EnrolmentRegister.marks`` (``(date, session) -> code``), without making
    a ``date`` and a tuple for each of a pupil's ~380 marks: the timeline looks codes up with the
    ISO keys of its shared skeleton instead (the hot path of a whole-borough recompute).
    """

    __slots__ = ("by_iso",)

    def __init__(self, by_iso: dict[str, str]) -> None:
        self.by_iso = by_iso

    def __getitem__(self, key: tuple[date, str]) -> str:
        day, session = key
        return self.by_iso[f"{day.isoformat()}{session}"]

    def __iter__(self) -> Iterator[tuple[date, str]]:
        for k in self.by_iso:
            yield date.fromisoformat(k[:10]), k[10:]

    def __len__(self) -> int:
        return len(self.by_iso)


@dataclass(frozen=True, slots=True)
class PupilInput:
    """A pupil and every enrolment they hold (two at once under dual registration)."""

    upn: str
    date_of_birth: date
    care: Care
    enrolments: tuple[EnrolmentRegister, ...]


# --- outputs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sessions:
    """Session counts of a period (DfE methodology, SPEC §3).

    ``possible`` = present + aea + authorised + unauthorised; ``not_counted`` are marked sessions
    in the not-possible and administrative categories (``X``, ``D``, ``Q``, ``Y1``–``Y7``, ``Z``,
    ``#``), which are left out of ``possible``. Unmarked sessions are in no count.
    """

    possible: int
    present: int
    aea: int
    authorised: int
    unauthorised: int
    not_counted: int


@dataclass(frozen=True, slots=True)
class Measures:
    """A period's measures (DfE method, SPEC §3): rates in percent, full precision, unrounded.

    Rates are ``None`` when there are no possible sessions (0/0); PA/SA are then False.
    ``persistent_absence`` is absence_rate ≥ 10, ``severe_absence`` absence_rate ≥ 50, both
    decided in exact integer arithmetic. ``code_counts`` counts every counted or not-counted
    mark of the period by code (e.g. ``G`` for holiday, ``C2`` for part-time timetables).
    """

    sessions: Sessions
    attendance_rate: float | None
    absence_rate: float | None
    authorised_rate: float | None
    unauthorised_rate: float | None
    persistent_absence: bool
    severe_absence: bool
    code_counts: Mapping[str, int]


class Band(StrEnum):
    """Graduated-response band by attendance rate (Sefton flowchart, SPEC §4; boundaries in policy)."""

    EXCELLENT = "excellent"
    AT_RISK = "at_risk"
    PERSISTENT = "persistent"
    PERSISTENT_HIGH = "persistent_high"
    SEVERE = "severe"


@dataclass(frozen=True, slots=True)
class Action:
    """One action the band calls for and who owns it ("school" or "la") (SPEC §4, from policy)."""

    text: str
    owner: str


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a pupil is flagged: a sentence, the counts behind it and the sessions that put them there.

    ``rule`` names what is explained: ``band``, ``persistent_absence``, ``severe_absence`` or
    ``penalty_threshold``.
    """

    rule: str
    text: str
    counts: Mapping[str, int]
    sessions: tuple[SessionMark, ...]


@dataclass(frozen=True, slots=True)
class PenaltyWindow:
    """The rolling penalty-threshold window as of the reference date (SPEC §5.3).

    ``start`` is the Monday of the earliest of the last ``school_weeks`` school weeks ending with
    the week of ``end`` (the reference date); ``unauthorised_sessions`` counts sessions coded
    with the policy's codes (G, N, O, U) on dates when the pupil was of compulsory school age;
    ``threshold_met`` also needs the pupil to be of compulsory school age on ``end``.
    """

    start: date
    end: date
    unauthorised_sessions: int
    threshold_met: bool


@dataclass(frozen=True, slots=True)
class Episode:
    """A spell during which a signal's condition held (SPEC §5).

    ``ended_on`` is None while it still holds on the reference date, else the first school day it
    no longer held (for instantaneous per-session signals, the session's own date). ``detail``
    holds only JSON-native values (dates as ISO strings). ``qualifier`` tells apart episodes of
    one type starting the same day: the session ("AM"/"PM") for per-session signals, the band
    entered for ``band_changed``.
    """

    type: str
    school_urn: str
    started_on: date
    ended_on: date | None
    evidence: tuple[SessionMark, ...]
    detail: Mapping[str, object]
    qualifier: str | None = None

    @property
    def key(self) -> str:
        """Stable identity across recomputes: ``type:school_urn:started_on[:qualifier]``."""
        base = f"{self.type}:{self.school_urn}:{self.started_on.isoformat()}"
        return base if self.qualifier is None else f"{base}:{self.qualifier}"

    @property
    def is_open(self) -> bool:
        return self.ended_on is None


@dataclass(frozen=True, slots=True)
class Assessment:
    """One enrolment assessed (CONTRACT ``GET /v1/pupils/{upn}/attendance`` plus the episodes).

    ``period`` may be empty (``period[1] < period[0]``) when the enrolment does not overlap it.
    ``band`` is None when the period has no possible sessions. ``reference_date`` is the date the
    episodes, ``penalty_window`` and ``continuous_unauthorised_days`` are evaluated as of (see the
    module docstring). ``illness_days`` = ``I`` sessions in the academic year of the earlier of
    today and the leaving date, divided by 2.
    """

    upn: str
    school_urn: str
    period: tuple[date, date]
    measures: Measures
    band: Band | None
    actions: tuple[Action, ...]
    reasons: tuple[Reason, ...]
    compulsory_school_age: bool
    penalty_window: PenaltyWindow
    continuous_unauthorised_days: int
    illness_days: float
    episodes: tuple[Episode, ...]
    reference_date: date


# --- the register as a timeline ---------------------------------------------------------------

_PRESENT, _AEA, _AUTHORISED, _UNAUTHORISED, _NOT_COUNTED = range(5)
_UNMARKED = -1
_CATEGORY_INDEX = {
    Category.PRESENT: _PRESENT,
    Category.AEA: _AEA,
    Category.AUTHORISED: _AUTHORISED,
    Category.UNAUTHORISED: _UNAUTHORISED,
    Category.NOT_POSSIBLE: _NOT_COUNTED,
    Category.ADMINISTRATIVE: _NOT_COUNTED,
}
# The two date-effective code sets of shared.codes as plain dicts (code -> category index): the
# per-session path reads these rather than calling lookup() 380 times per pupil. A code in both
# sets has the same category in both, so once each mark is checked against its date's set, one
# merged table gives every category.
_CATS_2024 = {c: _CATEGORY_INDEX[a.category] for c, a in code_set(CODES_2024_FROM).items()}
_CATS_2006 = {
    c: _CATEGORY_INDEX[a.category] for c, a in code_set(CODES_2024_FROM - timedelta(days=1)).items()
}
_CATEGORY_OF = {**_CATS_2006, **_CATS_2024}
_VALID_2024: frozenset[str | None] = frozenset({*_CATS_2024, None})  # None: no mark
_ABSENCE_CODES = frozenset(c for c, k in _CATEGORY_OF.items() if k in (_AUTHORISED, _UNAUTHORISED))
ABSENCE_CODES = _ABSENCE_CODES
"""Every authorised or unauthorised absence code (either code set): the codes of ``first_day_absence``."""
_CATEGORY_NAME = ("present", "aea", "authorised", "unauthorised", "not_counted")
_AM = Session.AM
_ONE_DAY = timedelta(days=1)

# Day kinds for runs (attendance return, illness periods): the day extends the run, leaves it
# alone (no possible session, or pending on the reference date), or breaks it.
_EXTENDS, _NEUTRAL, _BREAKS = 1, 0, -1

_DayInfo = tuple[int, int, int, int, int, int, int, int]
# (attending, absent, penalty-code sessions, I sessions, run kind, illness kind, and the two
# kinds again for a day that is the last marked day, whose unmarked session is still pending)

# Memo of day infos by (penalty codes, the day's codes): a day's codes take few distinct values
# (at most ~40² pairs), so each is worked out once per process.
_DAY_INFOS: dict[frozenset[str], dict[tuple[str | None, ...], _DayInfo]] = {}


def _day_info(codes: tuple[str | None, ...], pen_codes: frozenset[str]) -> _DayInfo:
    """Counts of one school day and how it acts on runs.

    Attendance return (SPEC §5.4): a day *extends* the run when every possible session is coded
    with a penalty code (G, N, O, U); a day with no possible session (every session ``X``, ``D``,
    ``Q``, ``Y1``–``Y7``, ``Z`` or ``#``) is treated like a non-school day and is *neutral* —
    decision: SPEC's "every session" read as every session the pupil could attend; any other day,
    including one with an unmarked session, *breaks* the run (the register must show the absence).
    Illness period (SPEC §5.5): a day with an ``I`` session extends it, a day with no possible
    session is neutral, any other day breaks it. On the last marked day an unmarked session is
    pending, not a break: the day is neutral unless its marks already decide it.
    """
    counts = [0, 0, 0, 0, 0, 0]  # the 5 category indices, then unmarked at [-1]
    pen = ill = 0
    for code in codes:
        counts[_UNMARKED if code is None else _CATEGORY_OF[code]] += 1
        if code in pen_codes:
            pen += 1
        if code == "I":
            ill += 1
    present, aea, authorised, unauthorised, _, unmarked = counts
    attending, absent = present + aea, authorised + unauthorised
    possible = attending + absent
    if possible == 0:
        run = illness = _NEUTRAL if unmarked == 0 else _BREAKS
        run_pending = ill_pending = _NEUTRAL
    else:
        run = _EXTENDS if pen == possible and unmarked == 0 else _BREAKS
        run_pending = (_EXTENDS if unmarked == 0 else _NEUTRAL) if pen == possible else _BREAKS
        illness = ill_pending = _EXTENDS if ill > 0 else _BREAKS
    return (attending, absent, pen, ill, run, illness, run_pending, ill_pending)


class _Skeleton:
    """The school sessions, days and school weeks of a calendar span: the pupil-independent part
    of a timeline, shared by every pupil of a school over the same span (read-only)."""

    __slots__ = ("days", "first", "iso_keys", "keys", "s_date", "slices", "spans", "week")

    def __init__(self, sessions: list[tuple[date, Session]]) -> None:
        am = _AM
        self.keys: list[tuple[date, str]] = [(d, "AM" if s is am else "PM") for d, s in sessions]
        self.iso_keys: list[str] = [f"{d.isoformat()}{s}" for d, s in self.keys]  # IsoMarks keys
        self.s_date: list[date] = [d for d, _ in sessions]
        per_day = Counter(self.s_date)  # sessions per day, days in date order
        self.days: list[date] = list(per_day)
        self.first: list[int] = list(accumulate(per_day.values(), initial=0))
        self.spans: list[tuple[int, int]] = list(pairwise(self.first))
        self.slices: list[slice] = [slice(a, b) for a, b in self.spans]  # each day's sessions
        # School weeks numbered 0, 1, 2, … without gaps: a new number whenever the Monday-based
        # week (ordinal 1, 0001-01-01, is a Monday) changes between consecutive school days.
        weeks = [(d.toordinal() - 1) // 7 for d in self.days]
        self.week: list[int] = list(accumulate(map(ne, weeks[1:], weeks), initial=0)) if weeks else []


# Skeletons by calendars (weakly, so a replaced calendar frees its entries) and span. Memoising a
# pure function of immutable inputs: a whole-borough recompute builds each school's once.
_SKELETONS: WeakKeyDictionary[Calendars, dict[tuple[date, date], _Skeleton]] = WeakKeyDictionary()
_SKELETONS_PER_CALENDAR = 256


def _skeleton(calendars: Calendars, lo: date, hi: date) -> _Skeleton:
    sessions = calendars.sessions_between(lo, hi)
    if not sessions:
        return _Skeleton(sessions)
    span = (sessions[0][0], sessions[-1][0])
    cache = _SKELETONS.get(calendars)
    if cache is None:
        cache = _SKELETONS.setdefault(calendars, {})
    found = cache.get(span)
    if found is None:
        if len(cache) >= _SKELETONS_PER_CALENDAR:
            cache.clear()
        found = cache[span] = _Skeleton(sessions)
    return found


class _Timeline:
    """The school days of an enrolment from ``lo`` to ``hi``, with their sessions, in order.

    ``s_date``/``s_code`` hold every school session and its code (None: no mark);
    ``first[i]:first[i + 1]`` are day ``i``'s sessions; ``week[i]`` numbers day ``i``'s school
    week from 0; ``info[i]`` is its ``_DayInfo``. With ``to_last_mark`` the timeline stops at the
    last day with a mark (the reference date). Built from a shared skeleton with comprehensions
    and a memo rather than a per-session loop: this is the hot path of a whole-borough recompute.
    """

    __slots__ = (
        "absent_ix",
        "absent_marks",
        "calendars",
        "days",
        "first",
        "info",
        "pen_ix",
        "pen_marks",
        "s_code",
        "s_date",
        "s_key",
        "week",
    )

    def __init__(
        self, reg: EnrolmentRegister, lo: date, hi: date, pen_codes: frozenset[str], to_last_mark: bool
    ) -> None:
        self.calendars = reg.calendars
        sk = _skeleton(reg.calendars, lo, hi)
        marks = reg.marks
        # map() over bound methods: the per-session loops run in C.
        if isinstance(marks, IsoMarks):
            s_code = list(map(marks.by_iso.get, sk.iso_keys))
        else:
            s_code = list(map(marks.get, sk.keys))
        # A code its date's set refuses (ingest never stores one) counts as no mark.
        if not s_code or sk.s_date[0] >= CODES_2024_FROM:
            if not _VALID_2024.issuperset(s_code):
                s_code = [c if c in _CATS_2024 else None for c in s_code]
        else:
            s_code = [
                c if c in (_CATS_2024 if d >= CODES_2024_FROM else _CATS_2006) else None
                for c, d in zip(s_code, sk.s_date, strict=True)
            ]
        n = len(s_code)
        nd = len(sk.days)
        if to_last_mark and n:
            last = n - 1
            while last >= 0 and s_code[last] is None:
                last -= 1
            # keep the whole of the last marked day (its other session may still be pending)
            nd = 0 if last < 0 else bisect_right(sk.first, last)
            n = sk.first[nd]
            if n < len(s_code):
                del s_code[n:]
        if nd == len(sk.days):
            self.days, self.first, self.week, self.s_date = sk.days, sk.first, sk.week, sk.s_date
            self.s_key = sk.keys
        else:
            self.days, self.first, self.week = sk.days[:nd], sk.first[: nd + 1], sk.week[:nd]
            self.s_date, self.s_key = sk.s_date[:n], sk.keys[:n]
        memo = _DAY_INFOS.setdefault(pen_codes, {})
        codes = tuple(s_code)
        info = list(map(memo.get, map(codes.__getitem__, sk.slices[:nd])))
        if None in info:
            for i, (a, b) in enumerate(sk.spans[:nd]):
                if info[i] is None:
                    key = codes[a:b]
                    info[i] = memo[key] = _day_info(key, pen_codes)
        self.info: list[_DayInfo] = info  # type: ignore[assignment]  # no None left
        if to_last_mark and info:
            att, absent, pen, ill, _, _, run_pending, ill_pending = self.info[-1]
            info[-1] = (att, absent, pen, ill, run_pending, ill_pending, run_pending, ill_pending)
        self.s_code = s_code
        # Absence sessions (index and evidence tuple), once: evidence is then sliced, not rebuilt.
        self.absent_ix = absent_ix = list(compress(naturals(), map(_ABSENCE_CODES.__contains__, s_code)))
        keys = self.s_key
        self.absent_marks: list[SessionMark] = [(*keys[j], s_code[j]) for j in absent_ix]  # type: ignore[misc]
        # The penalty codes are unauthorised absence codes (validated by shared.policy).
        pen_pos = [k for k, j in enumerate(absent_ix) if s_code[j] in pen_codes]
        self.pen_ix = [absent_ix[k] for k in pen_pos]
        self.pen_marks = [self.absent_marks[k] for k in pen_pos]

    def day_of(self, j: int) -> int:
        """The day index of session ``j``."""
        return bisect_right(self.first, j) - 1

    def day_span(self, i0: int, i1: int) -> tuple[int, int]:
        """The session index range of days ``i0`` (inclusive) to ``i1`` (exclusive)."""
        return self.first[i0], self.first[i1]


# --- measures ---------------------------------------------------------------------------------


def _measures(tl: _Timeline, i0: int, i1: int) -> Measures:
    j0, j1 = tl.day_span(i0, i1)
    code_counts = Counter(tl.s_code[j0:j1])
    code_counts.pop(None, None)
    totals = [0, 0, 0, 0, 0]
    for code, n in code_counts.items():
        totals[_CATEGORY_OF[code]] += n  # type: ignore[index]
    present, aea, authorised, unauthorised, not_counted = totals
    possible = present + aea + authorised + unauthorised
    sessions = Sessions(possible, present, aea, authorised, unauthorised, not_counted)
    counts: dict[str, int] = dict(code_counts)  # type: ignore[arg-type]
    if possible == 0:
        return Measures(sessions, None, None, None, None, False, False, counts)
    absent = authorised + unauthorised
    # Multiply before dividing: a rate that is exactly 96, 90, 85 or 50 comes out exactly, so
    # the band boundaries (compared on unrounded values, SPEC §4) are exact.
    return Measures(
        sessions,
        100 * (present + aea) / possible,
        100 * absent / possible,
        100 * authorised / possible,
        100 * unauthorised / possible,
        100 * absent >= PERSISTENT_ABSENCE_PERCENT * possible,
        100 * absent >= SEVERE_ABSENCE_PERCENT * possible,
        counts,
    )


def _enrolment_bounds(reg: EnrolmentRegister, start: date, end: date) -> tuple[date, date]:
    lo = max(start, reg.admission_date)
    hi = end if reg.leaving_date is None else min(end, reg.leaving_date)
    return lo, hi


def measure(reg: EnrolmentRegister, start: date, end: date) -> Measures:
    """The DfE measures of one enrolment from ``start`` to ``end`` inclusive (SPEC §3).

    possible = present + AEA + authorised + unauthorised sessions; attendance_rate =
    (present + AEA) / possible × 100; absence, authorised and unauthorised rates likewise; PA is
    absence ≥ 10 %, SA absence ≥ 50 %. Only marks on school sessions of the school's calendar
    inside both the period and the enrolment count; sessions with no mark are in no count
    (decision: an unsent register is not an absence). Marks after today are counted if the
    period asks for them — ``assess`` caps its periods at today.
    """
    lo, hi = _enrolment_bounds(reg, start, end)
    if hi < lo:
        return _NO_MEASURES
    tl = _Timeline(reg, lo, hi, frozenset(), to_last_mark=False)
    return _measures(tl, 0, len(tl.days))


def default_period(reg: EnrolmentRegister, today: date) -> tuple[date, date]:
    """Academic year to date (SPEC §3): from the later of 1 September of today's academic year
    and the admission date, to the earlier of today and the leaving date.

    The result is empty (end before start) when the enrolment does not overlap that span, e.g.
    a pupil who left last year or is admitted next week.
    """
    start = max(AcademicYear.of(today).first_day, reg.admission_date)
    end = today if reg.leaving_date is None else min(today, reg.leaving_date)
    return start, end


def reference_date(reg: EnrolmentRegister, today: date) -> date:
    """The date signals are evaluated as of: the last school day up to the earlier of today and
    the leaving date on which this enrolment has a mark; that earlier date itself if none.

    Decision (SPEC silent): measuring "later" from the last marked day means a register loaded
    in date order, or a school a few days behind, does not end runs or flag an ``N`` whose
    correction simply has not been sent yet.
    """
    cap = today if reg.leaving_date is None else min(today, reg.leaving_date)
    tl = _Timeline(reg, reg.admission_date, cap, frozenset(), to_last_mark=True)
    return tl.days[-1] if tl.days else cap


# --- signals ----------------------------------------------------------------------------------


class _Walk:
    """The day-by-day walk over a timeline for the cumulative signals (SPEC §5.1–§5.5)."""

    __slots__ = ("continuous_unauthorised_days", "episodes", "penalty_count", "penalty_met")

    def __init__(
        self, tl: _Timeline, urn: str, policy: Policy, csa_from: date, csa_to: date, open_end: date | None
    ) -> None:
        self.episodes: list[Episode] = []
        self.penalty_count = 0
        self.penalty_met = False
        self.continuous_unauthorised_days = 0
        if tl.days:
            self._run(tl, urn, policy, csa_from, csa_to, open_end)

    def _run(
        self, tl: _Timeline, urn: str, policy: Policy, csa_from: date, csa_to: date, open_end: date | None
    ) -> None:
        """Walk the school days in date order with year-to-date and rolling counts.

        * ``band_changed`` (SPEC §4, §5.1): the band of the year-to-date attendance rate as of
          each school day, once that year has ≥ ``band_changed_min_possible_sessions`` possible
          sessions. Decision: until a new academic year reaches that many, the band (and PA/SA
          below) carried over from the previous year stands — so September is quiet and a band
          episode is raised only when the band actually differs (``detail.from`` is None only for
          the first band of the enrolment).
        * ``persistent_absence`` / ``severe_absence`` (SPEC §3, §5.2): YTD absence ≥ 10 % / ≥ 50 %,
          same minimum and carry-over.
        * ``penalty_threshold_met`` (national penalty notice framework, Aug 2024; SPEC §5.3): as
          of each day, the G/N/O/U sessions on compulsory-school-age dates in the school weeks
          of the rolling window ending with that day's week, up to that day. A school week is a
          Monday–Sunday week with ≥ 1 school session of this school; the window spans holidays
          and academic years. Met while the count ≥ threshold and the pupil is of CSA that day.
        * ``attendance_return_due`` (SPEC §5.4): a run of days that extend it (see
          ``_day_info``) on CSA dates; raised when it reaches the policy length, started on its
          first day, ended on the day that breaks it. A non-CSA day breaks it.
        * ``sickness_return_due`` (SPEC §5.5): ``I`` sessions on CSA dates cumulative in the
          academic year; one episode for the illness period (run of days with an ``I``) in which
          the count reaches 2 × ``sickness_return_school_days``, started on that period's first
          day, then one for each later illness period of the year; each ends when its period
          ends. The count restarts on 1 September. SPEC's "earlier when the school records an
          expected long-term illness" has no input yet and is not implemented.

        Evidence: band/PA/SA — the year's absence sessions up to the day the episode began;
        penalty — the counted sessions in the window that day; attendance return — the sessions
        of the run up to the day it was raised; sickness — the counted ``I`` sessions. Also kept:
        the window count as of the last day and ``continuous_unauthorised_days``, the run on the
        last day counted without the CSA gate (a fact about the register, reported for every
        pupil; only the return itself needs CSA).
        """
        days = tl.days
        episodes = self.episodes
        bands = policy.bands
        excellent_min, at_risk_above = bands.excellent_min, bands.at_risk_above
        persistent_above, persistent_high_above = bands.persistent_above, bands.persistent_high_above
        min_possible = policy.band_changed_min_possible_sessions
        window = policy.penalty_threshold.school_weeks
        threshold = policy.penalty_threshold.sessions
        return_days = policy.attendance_return_continuous_school_days
        sick_sessions = 2 * policy.sickness_return_school_days
        n = len(days)
        # Integer day-index bounds, so the per-day tests compare ints, not dates.
        csa_lo, csa_hi = bisect_left(days, csa_from), bisect_right(days, csa_to)
        csa_bounds = (csa_from, csa_to)
        new_years = _academic_year_starts(days)
        next_year = new_years.pop() if new_years else n

        # year to date
        att = absent = possible = 0
        abs_total = 0  # absence sessions so far in the timeline: an index into tl.absent_ix
        ytd_abs_lo = 0
        band: str | None = None
        band_open: tuple[int, str | None, str, float, int, int, int] | None = None
        pa_open: tuple[int, float, int, int, int] | None = None
        sa_open: tuple[int, float, int, int, int] | None = None
        # penalty
        pen_cum = 0
        week_end_cum: list[int] = []  # [w] = penalty sessions up to the end of school week w
        cur_week = 0
        pen_open: tuple[int, int, tuple[SessionMark, ...], int] | None = None
        count = 0
        met = False
        # attendance return
        run = run_first = raised = 0
        raw_run = 0
        # sickness
        ill_cum = 0
        ill_first = ill_raised = -1
        ill_raised_cum = 0
        ill_year_lo = 0  # index into tl.absent_ix where this academic year's sessions begin

        for i, (info, wk) in enumerate(zip(tl.info, tl.week, strict=True)):
            day_att, day_abs, day_pen, day_ill, kind, ik, _, _ = info
            if i == next_year:
                next_year = new_years.pop() if new_years else n
                att = absent = possible = 0
                ytd_abs_lo = abs_total
                if ill_first >= 0:
                    _close_illness(
                        tl, urn, episodes, ill_first, ill_raised, ill_raised_cum, ill_year_lo, i, csa_bounds
                    )
                ill_first = ill_raised = -1
                ill_cum = 0
                ill_year_lo = abs_total
            csa = csa_lo <= i < csa_hi

            # -- band, PA, SA (year to date)
            att += day_att
            absent += day_abs
            possible += day_att + day_abs
            abs_total += day_abs
            if possible >= min_possible:
                # Same boundaries and comparisons as Bands.band_for, inlined on the hot path.
                rate = 100 * att / possible
                if rate >= excellent_min:
                    b = "excellent"
                elif rate > at_risk_above:
                    b = "at_risk"
                elif rate > persistent_above:
                    b = "persistent"
                elif rate > persistent_high_above:
                    b = "persistent_high"
                else:
                    b = "severe"
                if b != band:
                    if band_open is not None:
                        episodes.append(_band_episode(tl, urn, band_open, days[i]))
                    band_open = (i, band, b, rate, possible, ytd_abs_lo, abs_total)
                    band = b
                if (100 * absent >= PERSISTENT_ABSENCE_PERCENT * possible) != (pa_open is not None):
                    if pa_open is None:
                        pa_open = (i, 100 * absent / possible, possible, ytd_abs_lo, abs_total)
                    else:
                        episodes.append(_absence_episode(tl, urn, "persistent_absence", pa_open, days[i]))
                        pa_open = None
                if (100 * absent >= SEVERE_ABSENCE_PERCENT * possible) != (sa_open is not None):
                    if sa_open is None:
                        sa_open = (i, 100 * absent / possible, possible, ytd_abs_lo, abs_total)
                    else:
                        episodes.append(_absence_episode(tl, urn, "severe_absence", sa_open, days[i]))
                        sa_open = None

            # -- penalty threshold (rolling school weeks; weeks are numbered without gaps)
            if wk != cur_week:
                week_end_cum.append(pen_cum)
                cur_week = wk
            if csa:
                pen_cum += day_pen
            count = pen_cum - week_end_cum[wk - window] if wk >= window else pen_cum
            met = csa and count >= threshold
            if met:
                if pen_open is None:
                    evidence = _window_evidence(tl, wk - window + 1, i, csa_from, csa_to)
                    pen_open = (i, count, evidence, wk)
            elif pen_open is not None:
                episodes.append(_penalty_episode(tl, urn, pen_open, days[i], window, threshold))
                pen_open = None

            # -- attendance return (continuous school days)
            if kind == _EXTENDS:
                raw_run += 1
                if not csa:
                    kind = _BREAKS
            elif kind == _BREAKS:
                raw_run = 0
            if kind == _EXTENDS:
                if run == 0:
                    run_first = i
                run += 1
                if run == return_days:
                    raised = i
            elif kind == _BREAKS and run:
                if run >= return_days:
                    episodes.append(_return_episode(tl, urn, run_first, raised, run, days[i]))
                run = 0

            # -- sickness return (I sessions in the academic year)
            if ik == _EXTENDS and csa:
                if ill_first < 0:
                    ill_first = i
                    ill_raised = -1
                ill_cum += day_ill
                if ill_raised < 0 and ill_cum >= sick_sessions:
                    ill_raised = i
                    ill_raised_cum = ill_cum
            elif ik != _NEUTRAL and ill_first >= 0:
                _close_illness(
                    tl, urn, episodes, ill_first, ill_raised, ill_raised_cum, ill_year_lo, i, csa_bounds
                )
                ill_first = ill_raised = -1

        # still open on the reference date
        if band_open is not None:
            episodes.append(_band_episode(tl, urn, band_open, open_end))
        if pa_open is not None:
            episodes.append(_absence_episode(tl, urn, "persistent_absence", pa_open, open_end))
        if sa_open is not None:
            episodes.append(_absence_episode(tl, urn, "severe_absence", sa_open, open_end))
        if pen_open is not None:
            episodes.append(_penalty_episode(tl, urn, pen_open, open_end, window, threshold))
        if run >= return_days:
            episodes.append(_return_episode(tl, urn, run_first, raised, run, open_end))
        if ill_first >= 0:
            _close_illness(
                tl, urn, episodes, ill_first, ill_raised, ill_raised_cum, ill_year_lo, n, csa_bounds, open_end
            )
        self.penalty_count = count
        self.penalty_met = met
        self.continuous_unauthorised_days = raw_run


def _academic_year_starts(days: list[date]) -> list[int]:
    """Indices of the first school day of each academic year after the first, last one first."""
    starts: list[int] = []
    if not days:
        return starts
    year = AcademicYear.of(days[0]).start_year
    i = 0
    while True:
        year += 1
        i = bisect_left(days, date(year, 9, 1), i)
        if i >= len(days):
            break
        year = AcademicYear.of(days[i]).start_year
        starts.append(i)
    starts.reverse()
    return starts


def _close_illness(
    tl: _Timeline,
    urn: str,
    episodes: list[Episode],
    first: int,
    raised: int,
    raised_count: int,
    year_lo: int,
    end: int,
    csa: tuple[date, date],
    ended: date | None = None,
) -> None:
    """Record the sickness-return episode of the illness period from day ``first`` to before day
    ``end`` if the return was raised in it; evidence: the ``I`` sessions counted towards it (the
    academic year's, on compulsory-school-age dates, up to the period's end)."""
    if raised < 0:
        return
    if end < len(tl.days):
        ended = tl.days[end]
    hi = bisect_left(tl.absent_ix, tl.first[end])
    lo_date, hi_date = csa
    evidence = tuple(m for m in tl.absent_marks[year_lo:hi] if m[2] == "I" and lo_date <= m[0] <= hi_date)
    started = tl.days[first]
    episodes.append(
        Episode(
            "sickness_return_due",
            urn,
            started,
            ended,
            evidence,
            {
                "raised_on": tl.days[raised].isoformat(),
                "illness_sessions": raised_count,
                "academic_year": AcademicYear.of(started).label,
            },
        )
    )


def _band_episode(
    tl: _Timeline, urn: str, state: tuple[int, str | None, str, float, int, int, int], ended: date | None
) -> Episode:
    i, previous, band, rate, possible, abs_lo, abs_hi = state
    return Episode(
        "band_changed",
        urn,
        tl.days[i],
        ended,
        tuple(tl.absent_marks[abs_lo:abs_hi]),
        {"from": previous, "to": band, "attendance_rate": rate, "possible": possible},
        band,
    )


def _absence_episode(
    tl: _Timeline, urn: str, kind: str, state: tuple[int, float, int, int, int], ended: date | None
) -> Episode:
    i, rate, possible, abs_lo, abs_hi = state
    return Episode(
        kind,
        urn,
        tl.days[i],
        ended,
        tuple(tl.absent_marks[abs_lo:abs_hi]),
        {"absence_rate": rate, "possible": possible, "absent": abs_hi - abs_lo},
    )


def _window_evidence(
    tl: _Timeline, first_week: int, i: int, csa_from: date, csa_to: date
) -> tuple[SessionMark, ...]:
    """The penalty-code sessions on CSA dates from school week ``first_week`` to day ``i``."""
    j_lo = tl.first[bisect_left(tl.week, max(first_week, 0))]
    j_hi = tl.first[i + 1]
    pen_ix = tl.pen_ix
    in_window = tl.pen_marks[bisect_left(pen_ix, j_lo) : bisect_left(pen_ix, j_hi)]
    return tuple(m for m in in_window if csa_from <= m[0] <= csa_to)


def _window_start(calendars: Calendars, ref: date, school_weeks: int) -> date:
    """The Monday of the earliest of the last ``school_weeks`` school weeks ending with ``ref``'s week.

    Counted on the school's own calendars, across holidays and academic years (SPEC §5.3); when
    the calendars hold fewer school weeks, the earliest one there is (``ref``'s Monday if none).
    """
    # Look back a little further than the window plus a summer holiday first; all the way if short.
    for since in (ref - timedelta(weeks=school_weeks + 10), date.min):
        weeks = sorted({(d.toordinal() - 1) // 7 for d in calendars.school_days_between(since, ref)})
        if len(weeks) >= school_weeks:
            return date.fromordinal(weeks[-school_weeks] * 7 + 1)
    return date.fromordinal(weeks[0] * 7 + 1) if weeks else week_start(ref)


def _penalty_episode(
    tl: _Timeline,
    urn: str,
    state: tuple[int, int, tuple[SessionMark, ...], int],
    ended: date | None,
    window: int,
    threshold: int,
) -> Episode:
    i, count, evidence, wk = state
    first_week = wk - window + 1
    if first_week >= 0:
        window_from = week_start(tl.days[bisect_left(tl.week, first_week)])
    else:
        window_from = _window_start(tl.calendars, tl.days[i], window)
    return Episode(
        "penalty_threshold_met",
        urn,
        tl.days[i],
        ended,
        evidence,
        {
            "sessions": count,
            "threshold": threshold,
            "school_weeks": window,
            "window_from": window_from.isoformat(),
        },
    )


def _return_episode(
    tl: _Timeline, urn: str, first: int, raised: int, run: int, ended: date | None
) -> Episode:
    j_lo, j_hi = tl.day_span(first, raised + 1)
    pen_ix = tl.pen_ix
    evidence = tuple(tl.pen_marks[bisect_left(pen_ix, j_lo) : bisect_left(pen_ix, j_hi)])
    return Episode(
        "attendance_return_due",
        urn,
        tl.days[first],
        ended,
        evidence,
        {"raised_on": tl.days[raised].isoformat(), "school_days": run},
    )


def _first_day_absences(tl: _Timeline, urn: str) -> list[Episode]:
    """``first_day_absence`` (SPEC §5.6; DfE "Working together", first-day response).

    One instantaneous episode per session coded with any absence code (authorised or
    unauthorised, ``N`` included) for a pupil with a social worker or on an ETAC plan — the
    caller checks ``Care.first_day_response``. Decision: care status is today's (there is no care
    history), and every absence on the register yields an episode, whatever its date; only the
    *delivery* of alerts is limited to the current school day, by the service (SPEC §5, policy
    ``first_day_alerts_current_day_only``). Amending the mark to a present code removes it.
    """
    out: list[Episode] = []
    for d, session, code in tl.absent_marks:
        out.append(
            Episode(
                "first_day_absence",
                urn,
                d,
                d,
                ((d, session, code),),
                {"session": session, "code": code, "category": _CATEGORY_NAME[_CATEGORY_OF[code]]},
                session,
            )
        )
    return out


def _unresolved_n(tl: _Timeline, urn: str, school_days: int, open_end: date | None) -> list[Episode]:
    """``unresolved_n`` (SPEC §2, §5.8; DfE "Working together": N to be replaced within 5 school days).

    An ``N`` session is unresolved when it is still ``N`` and at least ``school_days`` school days
    of the school's calendar lie after its date up to the reference date (the last marked day —
    so a backfill loaded in date order does not flag an ``N`` whose correction is yet to come).
    One open episode per session, started on the ``N``'s date; amending the mark removes it.
    """
    out: list[Episode] = []
    last = len(tl.days) - 1
    for j, (d, session, code) in zip(tl.absent_ix, tl.absent_marks, strict=True):
        if code != "N":
            continue
        di = tl.day_of(j)
        if last - di < school_days:
            continue
        out.append(
            Episode(
                "unresolved_n",
                urn,
                d,
                open_end,
                ((d, session, code),),
                {"session": session, "unresolved_on": tl.days[di + school_days].isoformat()},
                session,
            )
        )
    return out


def _week_index(tl: _Timeline, start: date) -> int:
    """The timeline's school-week number of the first school week with a session on or after ``start``.

    Negative when ``start`` lies before the timeline's first day (school weeks counted on the
    school's calendars); one past the last week when after the timeline.
    """
    days = tl.days
    if start > days[0]:
        i = bisect_left(days, start)
        return tl.week[i] if i < len(days) else tl.week[-1] + 1
    first_monday = week_start(days[0])
    earlier = tl.calendars.school_weeks_between(start, days[0] - _ONE_DAY)
    return -sum(1 for monday in earlier if monday != first_monday)


def _part_time_overdue(
    tl: _Timeline, urn: str, care: Care, max_weeks: int, open_end: date | None
) -> list[Episode]:
    """``part_time_timetable_overdue`` (SPEC §5.9; DfE "Working together": part-time timetables
    are temporary and time-limited).

    A ``C2`` mark is overdue when dated after ``care.part_time_end``; with no end recorded, when it
    falls in a school week after the first ``max_weeks`` school weeks counted from the week of
    ``care.part_time_start`` (or of the first ``C2`` if no start is recorded) — decision: whole
    school weeks of the school's calendar, the start's week being the first. Overdue ``C2`` marks
    form one episode, started on the first; decision: it ends on the first day of a whole school
    week with no ``C2`` once the reference date is past that week, and a later overdue ``C2``
    starts a new episode. ``C2`` before an agreed start is not flagged.
    """
    c2 = [j for j in tl.absent_ix if tl.s_code[j] == "C2"]
    if not c2:
        return []
    week, s_date, day_of = tl.week, tl.s_date, tl.day_of
    detail: dict[str, object]
    if care.part_time_end is not None:
        end = care.part_time_end
        overdue = [j for j in c2 if s_date[j] > end]
        detail = {"agreed_end": end.isoformat(), "counted_from": None, "limit_school_weeks": None}
    else:
        start = care.part_time_start or s_date[c2[0]]
        limit = _week_index(tl, start) + max_weeks
        overdue = [j for j in c2 if s_date[j] >= start and week[day_of(j)] >= limit]
        detail = {"agreed_end": None, "counted_from": start.isoformat(), "limit_school_weeks": max_weeks}
    out: list[Episode] = []
    last_week = week[-1]
    group: list[int] = []
    for j in [*overdue, -1]:
        if group and (j < 0 or week[day_of(j)] > week[day_of(group[-1])] + 1):
            group_week = week[day_of(group[-1])]
            ended = tl.days[bisect_left(week, group_week + 1)] if last_week >= group_week + 2 else open_end
            out.append(
                Episode(
                    "part_time_timetable_overdue",
                    urn,
                    s_date[group[0]],
                    ended,
                    tuple((*tl.s_key[k], "C2") for k in group),
                    dict(detail),
                )
            )
            group = []
        if j >= 0:
            group.append(j)
    return out


def _register_missing(
    reg: EnrolmentRegister, care: Care, policy: Policy, today: date, now: datetime | None
) -> list[Episode]:
    """``register_missing`` (SPEC §5.7): a school session of *today* with no mark at all once its
    register deadline (policy, local time in ``policy.timezone``) has passed, for a pupil with a
    social worker or on an ETAC plan, on roll today.

    Decision: only today is checked — a past session without a mark is never "missing", so a
    backfill or a late school does not page social workers about old registers. The episode is
    open while the mark is missing and vanishes when a mark arrives or the day is over. Without
    ``now`` nothing is checked; a naive ``now`` is refused.
    """
    if now is None or not care.first_day_response:
        return []
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    if today < reg.admission_date or (reg.leaving_date is not None and today > reg.leaving_date):
        return []
    out: list[Episode] = []
    for session in ("AM", "PM"):
        if not reg.calendars.is_school_session(today, session) or (today, session) in reg.marks:
            continue
        deadline = datetime.combine(today, policy.register_deadlines.for_session(session), tzinfo=policy.zone)
        if now > deadline:
            out.append(
                Episode(
                    "register_missing",
                    reg.school_urn,
                    today,
                    None,
                    (),
                    {"session": session, "deadline": deadline.isoformat()},
                    session,
                )
            )
    return out


# --- assessment -------------------------------------------------------------------------------

_NO_MEASURES = Measures(Sessions(0, 0, 0, 0, 0, 0), None, None, None, None, False, False, {})


def _band_rule(policy: Policy, band: str) -> str:
    b = policy.bands
    return {
        "excellent": f"≥ {b.excellent_min:g}",
        "at_risk": f"> {b.at_risk_above:g} and < {b.excellent_min:g}",
        "persistent": f"> {b.persistent_above:g} and ≤ {b.at_risk_above:g}",
        "persistent_high": f"> {b.persistent_high_above:g} and ≤ {b.persistent_above:g}",
        "severe": f"≤ {b.persistent_high_above:g}",
    }[band]


def _reasons(
    tl: _Timeline,
    i0: int,
    i1: int,
    period: tuple[date, date],
    m: Measures,
    band: Band | None,
    policy: Policy,
    window: PenaltyWindow,
    csa_from: date,
    csa_to: date,
) -> tuple[Reason, ...]:
    """Why flagged (SPEC §4): the counts and the sessions behind the band, PA/SA and the window."""
    if band is None or m.attendance_rate is None or m.absence_rate is None:
        return ()
    s = m.sessions
    j_lo, j_hi = tl.day_span(i0, i1)
    absent_ix = tl.absent_ix
    absences = tuple(tl.absent_marks[bisect_left(absent_ix, j_lo) : bisect_left(absent_ix, j_hi)])
    counts = {
        "possible": s.possible,
        "present": s.present,
        "aea": s.aea,
        "authorised": s.authorised,
        "unauthorised": s.unauthorised,
    }
    span = f"{period[0].isoformat()} to {period[1].isoformat()}"
    reasons = [
        Reason(
            "band",
            f"Attendance {m.attendance_rate:.1f}% ({s.present + s.aea} of {s.possible} possible sessions, "
            f"{span}): band {band.value} (attendance {_band_rule(policy, band)}).",
            counts,
            absences,
        )
    ]
    for flag, rule, label, percent in (
        (m.persistent_absence, "persistent_absence", "persistent absence", PERSISTENT_ABSENCE_PERCENT),
        (m.severe_absence, "severe_absence", "severe absence", SEVERE_ABSENCE_PERCENT),
    ):
        if flag:
            reasons.append(
                Reason(
                    rule,
                    f"Absent {s.authorised + s.unauthorised} of {s.possible} possible sessions "
                    f"({m.absence_rate:.1f}%, {span}): {label} (absence ≥ {percent}%).",
                    counts,
                    absences,
                )
            )
    if window.threshold_met and tl.days:
        pt = policy.penalty_threshold
        last = len(tl.days) - 1
        evidence = _window_evidence(tl, tl.week[last] - pt.school_weeks + 1, last, csa_from, csa_to)
        reasons.append(
            Reason(
                "penalty_threshold",
                f"{window.unauthorised_sessions} sessions coded {'/'.join(pt.codes)} in the "
                f"{pt.school_weeks} school weeks from {window.start.isoformat()} to "
                f"{window.end.isoformat()} (threshold {pt.sessions}).",
                {
                    "sessions": window.unauthorised_sessions,
                    "threshold": pt.sessions,
                    "school_weeks": pt.school_weeks,
                },
                evidence,
            )
        )
    return tuple(reasons)


def _episode_order(e: Episode) -> tuple[date, str, str]:
    return (e.started_on, e.type, e.qualifier or "")


def assess_enrolment(
    pupil: PupilInput,
    reg: EnrolmentRegister,
    policy: Policy,
    today: date,
    now: datetime | None = None,
    *,
    start: date | None = None,
    end: date | None = None,
) -> Assessment:
    """Assess one of the pupil's enrolments as of ``today`` (see ``assess``)."""
    cap = today if reg.leaving_date is None else min(today, reg.leaving_date)
    pen_codes = frozenset(policy.penalty_threshold.codes)
    tl = _Timeline(reg, reg.admission_date, cap, pen_codes, to_last_mark=True)
    days = tl.days
    ref = days[-1] if days else cap
    left = reg.leaving_date is not None and reg.leaving_date < today
    open_end = reg.leaving_date + _ONE_DAY if left and reg.leaving_date is not None else None
    csa_from, csa_to = csa_start(pupil.date_of_birth), csa_end(pupil.date_of_birth)

    walk = _Walk(tl, reg.school_urn, policy, csa_from, csa_to, open_end)
    episodes = walk.episodes
    urn = reg.school_urn
    if pupil.care.first_day_response:
        episodes.extend(_first_day_absences(tl, urn))
    episodes.extend(_register_missing(reg, pupil.care, policy, today, now))
    if days:
        episodes.extend(_unresolved_n(tl, urn, policy.unresolved_n_school_days, open_end))
        max_weeks = policy.part_time_timetable_default_max_school_weeks
        episodes.extend(_part_time_overdue(tl, urn, pupil.care, max_weeks, open_end))
    episodes.sort(key=_episode_order)

    default_from, default_to = default_period(reg, today)  # default_to is cap
    p_from = default_from if start is None else max(start, reg.admission_date)
    p_to = default_to if end is None else min(end, default_to)
    i0, i1 = bisect_left(days, p_from), bisect_right(days, p_to)
    m = _measures(tl, i0, i1) if i0 < i1 else _NO_MEASURES
    band = None if m.attendance_rate is None else Band(policy.bands.band_for(m.attendance_rate))
    actions = (
        ()
        if band is None
        else tuple(Action(a.text, a.owner) for a in policy.bands.actions_for(band.value).actions)
    )
    school_weeks = policy.penalty_threshold.school_weeks
    if days and tl.week[-1] >= school_weeks - 1:
        window_from = week_start(days[bisect_left(tl.week, tl.week[-1] - school_weeks + 1)])
    else:
        window_from = _window_start(reg.calendars, ref, school_weeks)
    window = PenaltyWindow(
        window_from,
        ref,
        walk.penalty_count,
        walk.penalty_met,
    )
    year = AcademicYear.of(cap)
    y0, y1 = bisect_left(days, year.first_day), bisect_right(days, year.last_day)
    return Assessment(
        upn=pupil.upn,
        school_urn=urn,
        period=(p_from, p_to),
        measures=m,
        band=band,
        actions=actions,
        reasons=_reasons(tl, i0, i1, (p_from, p_to), m, band, policy, window, csa_from, csa_to),
        compulsory_school_age=is_compulsory_school_age(pupil.date_of_birth, today),
        penalty_window=window,
        continuous_unauthorised_days=walk.continuous_unauthorised_days,
        illness_days=tl.s_code[tl.first[y0] : tl.first[y1]].count("I") / 2,
        episodes=tuple(episodes),
        reference_date=ref,
    )


def assess(
    pupil: PupilInput,
    policy: Policy,
    today: date,
    now: datetime | None = None,
    *,
    start: date | None = None,
    end: date | None = None,
) -> list[Assessment]:
    """Assess every enrolment of the pupil as of ``today``: one Assessment each (dual
    registration gives two), SPEC §3–§6.

    Measures, band, actions and reasons cover the period: by default academic year to date
    (``default_period``); ``start``/``end`` (the HTTP ``?from=&to=``) replace either end, clipped
    to the enrolment and never later than today (decision: a pre-entered future mark is not yet
    attendance). Episodes always come from the whole register up to the reference date, whatever
    the period. ``now`` (timezone-aware) is needed only for ``register_missing``.
    ``compulsory_school_age`` is as of today (SPEC §6).
    """
    return [
        assess_enrolment(pupil, reg, policy, today, now, start=start, end=end) for reg in pupil.enrolments
    ]
