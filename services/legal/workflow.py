"""The legal workflow of a case (SPEC §7, §8): states, moves, penalty notices, records and the
statutory deadlines — plain functions over dataclasses, no I/O, today always a parameter.

Every refusal is a named ``Rule`` raised as ``Refused`` (mapped once to a 409 problem whose body
carries ``rule``). Every accepted move says which rule allowed it and on what authority.

Decisions where SPEC.md and CONTRACT.md are silent:

* **States and moves.** The LA may move a case from any state to any other (skipping steps, or
  back to ``support``) except: nothing leaves ``closed`` (a new case is opened instead);
  ``penalty_notice`` is entered by issuing a notice (a move there is refused unless the case has a
  live notice); ``parenting_order`` needs a recorded conviction. Every move records who, when
  (``effective_on``, not in the future and not before the previous move), why, the permission
  rule relied on, its authority and the steps skipped.
* **Compulsory school age.** Every legal measure (all states but ``support``, ``closed`` and
  ``parenting_order``, which follows a conviction for an earlier offence) needs the pupil to be of
  CSA on the effective date; a penalty notice needs CSA on the date of its offence.
* **Offences.** A penalty notice and a prosecution rest on an *offence*: a
  ``penalty_threshold_met`` episode from the rules service (period = its rolling window up to the
  day the threshold was met; withdrawn when an amendment removes it) or an offence the LA records
  itself (SPEC §7 "or an LA-recorded offence"). A parent gets at most one notice per offence (no
  one is penalised twice for the same absences); a new notice takes the latest unpenalised offence
  met on or before its issue date. A case is a **holiday (``G``) case** when ``G`` sessions are the
  majority of its latest offence's counted sessions; no Notice to Improve for those.
* **Counting notices.** A notice counts toward the limit of ``max_per_parent_per_child`` in a
  rolling ``rolling_years`` when issued on or after ``counting_from`` and not withdrawn — paid,
  prosecuted and still-running notices all count, because a running notice can only end paid or
  prosecuted (both count) or withdrawn (then it stops counting). Counted across cases and issuers.
  The limit is checked as a rolling window over every counting notice including the new one, so
  a back-dated notice cannot slip between two others. The sequence (1st/2nd) is 1 + the counting
  notices in the window before the new one; a 2nd is £160 flat, payable by day 28, with no
  reduced rate (``pay_reduced_by`` is then null and both amounts are £160). Issuing a notice moves
  the case into ``penalty_notice`` (recorded like any move); notices dated before
  ``counting_from`` are refused, since this service applies the August 2024 framework only.
  Refusals are checked in this order: case closed, date, framework, parent, pupil/school known,
  independent school, issuer, CSA, the 2-in-3-years limit, then the offence (so a third notice
  is refused as a third even when no fresh offence exists).
* **Payments** are in full, of exactly the amount due on the payment date, on or before day 28
  (no part payments: national framework). After day 28 an unpaid notice shows
  ``action_required: prosecute_or_withdraw``; moving the case to ``prosecution`` marks its unpaid
  notices ``prosecuted``. A notice can be withdrawn until it is paid or prosecuted.
* **Prosecution** is refused while a notice of the case is within its payment period, when no
  offence is recorded, when every offence was discharged by paid notices, and after the last day
  to lay an information for the offence prosecuted (the latest undischarged one; clock start per
  policy: ``last_absence`` by default, i.e. the last counted absence of the offence period).
* **Records.** A conviction or acquittal is recorded while the case is in ``prosecution``;
  contract non-compliance once the case has had an attendance contract; an ESO direction breach
  or extension while an ESO is in force. An extension (1 to ``extension_max_years`` years) may be
  recorded only inside the extension window and moves the ESO's last day by that many years
  (never past the end of compulsory school age).
* **Deadlines** are derived from the facts after every change (see ``deadlines``): NTI end and
  contract review belong to the current state and are cancelled when the case moves on.
* **Responsibility** (SPEC §8): penalty notices are issued by the School LA (the issuing LA is the
  token's ``la`` claim, else the policy's LA); prosecution normally by the School LA (inform the
  Home LA); ESO usually by the Home LA; early help, social care, AP and transport by the Home LA;
  EHCP matters to the LA maintaining the plan. Only the penalty notice rule is a refusal; the
  rest are reported with each case.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Any

from services.legal.clocks import (
    SchoolDays,
    add_years,
    counting_window_last_day,
    days_after,
    eso_extension_opens,
    eso_last_day,
    in_same_window,
    laying_limit,
)
from shared.csa import csa_end, is_compulsory_school_age
from shared.policy import Policy


class State(StrEnum):
    """The states of a case (SPEC §7), in the order of the usual escalation."""

    SUPPORT = "support"
    NOTICE_TO_IMPROVE = "notice_to_improve"
    PENALTY_NOTICE = "penalty_notice"
    ATTENDANCE_CONTRACT = "attendance_contract"
    EDUCATION_SUPERVISION_ORDER = "education_supervision_order"
    PROSECUTION = "prosecution"
    PARENTING_ORDER = "parenting_order"
    CLOSED = "closed"


LADDER: tuple[State, ...] = tuple(State)
_NEEDS_CSA = frozenset(LADDER) - {State.SUPPORT, State.CLOSED, State.PARENTING_ORDER}


class Rule(StrEnum):
    """Named rules that refuse an action (the ``rule`` of a 409 problem)."""

    CASE_CLOSED = "case_closed"
    CASE_ALREADY_OPEN = "case_already_open"
    ALREADY_IN_STATE = "already_in_state"
    DATE_IN_FUTURE = "date_in_future"
    OFFENCE_NOT_FOUND = "offence_not_found"
    EFFECTIVE_BEFORE_LAST_MOVE = "effective_date_before_last_move"
    PUPIL_NOT_KNOWN = "pupil_not_known"
    SCHOOL_NOT_KNOWN = "school_not_known"
    NOT_COMPULSORY_SCHOOL_AGE = "not_compulsory_school_age"
    PARENT_NOT_ON_CASE = "parent_not_on_case"
    INDEPENDENT_SCHOOL_PENALTY_NOTICE = "independent_school_penalty_notice"
    ISSUER_NOT_SCHOOL_LA = "issuer_not_school_la"
    PENALTY_NOTICE_BEFORE_FRAMEWORK = "penalty_notice_before_framework"
    THIRD_PENALTY_NOTICE_IN_3_YEARS = "third_penalty_notice_in_3_years"
    THRESHOLD_NOT_MET = "threshold_not_met"
    OFFENCE_ALREADY_PENALISED = "offence_already_penalised"
    PENALTY_NOTICE_NOT_ISSUED = "penalty_notice_not_issued"
    PENALTY_NOTICE_WITHDRAWN = "penalty_notice_withdrawn"
    PENALTY_NOTICE_ALREADY_PAID = "penalty_notice_already_paid"
    PENALTY_NOTICE_PROSECUTED = "penalty_notice_prosecuted"
    PAYMENT_BEFORE_ISSUE = "payment_before_issue"
    PAYMENT_AFTER_FINAL_DAY = "payment_after_final_day"
    PAYMENT_AMOUNT_INCORRECT = "payment_amount_incorrect"
    NTI_FOR_HOLIDAY_CASE = "nti_for_holiday_case"
    NTI_PERIOD_OUT_OF_RANGE = "nti_period_out_of_range"
    CONTRACT_AT_INDEPENDENT_OR_NMSS = "contract_at_independent_or_nmss"
    NO_ATTENDANCE_CONTRACT = "no_attendance_contract"
    ESO_FOR_CHILD_IN_CARE = "eso_for_child_in_care"
    NO_EDUCATION_SUPERVISION_ORDER = "no_education_supervision_order"
    ESO_EXTENSION_OUTSIDE_WINDOW = "eso_extension_outside_window"
    ESO_EXTENSION_TOO_LONG = "eso_extension_too_long"
    PENALTY_NOTICE_PAYMENT_PERIOD_RUNNING = "penalty_notice_payment_period_running"
    NO_OFFENCE_RECORDED = "no_offence_recorded"
    OFFENCE_DISCHARGED_BY_PAYMENT = "offence_discharged_by_payment"
    PROSECUTION_TIME_LIMIT_PASSED = "prosecution_time_limit_passed"
    CONVICTION_WITHOUT_PROSECUTION = "conviction_without_prosecution"
    PARENTING_ORDER_WITHOUT_CONVICTION = "parenting_order_without_conviction"


# Refusals that are bad input rather than a conflict with the case (answered 422, not 409).
_BAD_INPUT = frozenset({Rule.DATE_IN_FUTURE, Rule.OFFENCE_NOT_FOUND})


class Refused(Exception):
    """A domain refusal: the ``rule`` that forbids the action and why, in words."""

    def __init__(self, rule: Rule, detail: str, **facts: Any) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail
        self.facts = facts

    @property
    def status(self) -> int:
        return 422 if self.rule in _BAD_INPUT else 409


class NoticeStatus(StrEnum):
    """A penalty notice's stored status (``unpaid`` is derived: issued and past its final day)."""

    ISSUED = "issued"
    PAID = "paid"
    WITHDRAWN = "withdrawn"
    PROSECUTED = "prosecuted"


class RecordKind(StrEnum):
    """Evidence an officer records on a case (SPEC §7 evidence pack)."""

    SUPPORT_OFFERED = "support_offered"
    SUPPORT_DECLINED = "support_declined"
    CONTRACT_NON_COMPLIANCE = "contract_non_compliance"
    STATUTORY_DEFENCE = "statutory_defence"
    CONVICTION = "conviction"
    ACQUITTAL = "acquittal"
    ESO_DIRECTION_BREACH = "eso_direction_breach"
    ESO_EXTENDED = "eso_extended"
    NOTE = "note"


class DeadlineKind(StrEnum):
    NTI_IMPROVEMENT_ENDS = "nti_improvement_period_ends"
    PENALTY_REDUCED_RATE_ENDS = "penalty_reduced_rate_ends"
    PENALTY_PAYMENT_DUE = "penalty_payment_due"
    PENALTY_COUNTING_WINDOW_ENDS = "penalty_counting_window_ends"
    CONTRACT_REVIEW = "attendance_contract_review"
    ESO_EXTENSION_WINDOW_OPENS = "eso_extension_window_opens"
    ESO_EXPIRES = "eso_expires"
    INFORMATION_LAYING_LIMIT = "information_laying_limit"


# The permission each move relies on, and its authority.
PERMISSIONS: Mapping[State, tuple[str, str]] = {
    State.SUPPORT: (
        "support_first",
        "DfE Working together to improve school attendance (2024): support first",
    ),
    State.NOTICE_TO_IMPROVE: (
        "notice_to_improve",
        "National penalty notice framework (Aug 2024): Notice to Improve before a penalty notice",
    ),
    State.PENALTY_NOTICE: (
        "penalty_notice_threshold_met",
        "Education Act 1996 s444A; Education (Penalty Notices) (England) Regulations 2007 as amended 2024",
    ),
    State.ATTENDANCE_CONTRACT: (
        "attendance_contract_lasap",
        "DfE Working together (2024): attendance contract via the LA School Attendance Panel",
    ),
    State.EDUCATION_SUPERVISION_ORDER: ("education_supervision_order", "Children Act 1989 s36 and sch. 3"),
    State.PROSECUTION: (
        "prosecution_s444",
        "Education Act 1996 s444(1)/(1A); Magistrates' Courts Act 1980 s127",
    ),
    State.PARENTING_ORDER: ("parenting_order_after_conviction", "Crime and Disorder Act 1998 s8(1)(d)"),
    State.CLOSED: ("la_closes_case", "LA decision"),
}


@dataclass(frozen=True, slots=True)
class Pupil:
    upn: str
    date_of_birth: date | None = None
    home_la: str | None = None
    ehcp_la: str | None = None
    cla: bool = False


@dataclass(frozen=True, slots=True)
class School:
    urn: str
    la_code: str | None = None
    type: str | None = None  # maintained | academy | free | independent | non_maintained_special


@dataclass(frozen=True, slots=True)
class Offence:
    """A period in which the pupil met the penalty threshold (or the LA recorded an offence)."""

    id: str
    met_on: date
    period_from: date
    period_to: date
    sessions: int = 0
    holiday_sessions: int = 0
    first_absence: date | None = None
    last_absence: date | None = None
    withdrawn: bool = False


@dataclass(frozen=True, slots=True)
class Notice:
    id: str
    parent_id: str
    issued_on: date
    sequence: int
    status: NoticeStatus = NoticeStatus.ISSUED
    offence_id: str | None = None
    paid_on: date | None = None
    in_case: bool = True  # False: a notice of another case of the same pupil (it still counts)


@dataclass(frozen=True, slots=True)
class Move:
    """A state the case entered, and when (the opening is a move to ``support``)."""

    to: State
    effective_on: date
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Record:
    kind: RecordKind
    on: date
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Case:
    """What the workflow needs to know about a case to decide on it."""

    state: State
    pupil: Pupil
    school: School
    parent_ids: frozenset[str] = frozenset()
    offences: tuple[Offence, ...] = ()
    notices: tuple[Notice, ...] = ()  # the pupil's notices across cases (``in_case`` marks this one's)
    moves: tuple[Move, ...] = ()
    records: tuple[Record, ...] = ()

    @property
    def case_notices(self) -> tuple[Notice, ...]:
        return tuple(n for n in self.notices if n.in_case)

    def last_move(self, to: State) -> Move | None:
        return next((m for m in reversed(self.moves) if m.to == to), None)


@dataclass(frozen=True, slots=True)
class Transition:
    """An accepted move: what to record in the history."""

    from_state: State
    to: State
    effective_on: date
    rule: str
    authority: str
    skipped: tuple[State, ...]
    data: Mapping[str, Any]
    prosecuted_notices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NoticeTerms:
    """An accepted penalty notice: its sequence, amounts and dates (amounts in whole pounds)."""

    sequence: int
    offence_id: str
    issued_on: date
    amount_if_paid_by_day_21: int
    amount_if_paid_by_day_28: int
    pay_reduced_by: date | None
    pay_by: date
    counts_until: date
    moves_case: bool  # the case enters ``penalty_notice`` with this notice


@dataclass(frozen=True, slots=True)
class Deadline:
    """A statutory date derived from the case; ``met`` once the thing it waits for happened."""

    key: str  # stable across recomputes: kind + subject
    kind: DeadlineKind
    due_on: date
    subject: str | None = None  # the notice, offence or move it belongs to
    met: bool = False
    detail: Mapping[str, Any] = field(default_factory=dict)


# --- helpers on facts -------------------------------------------------------------------------


def _refuse_future(on: date, today: date, what: str) -> None:
    if on > today:
        raise Refused(Rule.DATE_IN_FUTURE, f"{what} {on} is after today ({today})")


def _refuse_closed(case: Case) -> None:
    if case.state == State.CLOSED:
        raise Refused(Rule.CASE_CLOSED, "the case is closed; open a new case")


def _dob(case: Case) -> date:
    if case.pupil.date_of_birth is None:
        raise Refused(
            Rule.PUPIL_NOT_KNOWN, "the pupil's date of birth is not known yet (no pupil.updated received)"
        )
    return case.pupil.date_of_birth


def _require_csa(case: Case, on: date, what: str) -> None:
    dob = _dob(case)
    if not is_compulsory_school_age(dob, on):
        raise Refused(
            Rule.NOT_COMPULSORY_SCHOOL_AGE,
            f"{what}: the pupil is not of compulsory school age on {on}",
            on=on.isoformat(),
        )


def _school_type(case: Case) -> str:
    if case.school.type is None or case.school.la_code is None:
        raise Refused(Rule.SCHOOL_NOT_KNOWN, "the school's LA and type are not known yet (no school.updated)")
    return case.school.type


def latest_offence(case: Case) -> Offence | None:
    live = [o for o in case.offences if not o.withdrawn]
    return max(live, key=lambda o: (o.met_on, o.id)) if live else None


def is_holiday_case(case: Case) -> bool:
    """``G`` makes up the majority of the counted sessions of the case's latest offence."""
    offence = latest_offence(case)
    return offence is not None and offence.sessions > 0 and 2 * offence.holiday_sessions > offence.sessions


def clock_start(offence: Offence, policy: Policy) -> date:
    """The date the 6-month limit runs from (policy: last absence, first absence or period end)."""
    match policy.prosecution.clock_start:
        case "last_absence":
            return offence.last_absence or offence.period_to
        case "first_absence":
            return offence.first_absence or offence.period_from
        case _:
            return offence.period_to


def offence_laying_limit(offence: Offence, policy: Policy) -> date:
    return laying_limit(clock_start(offence, policy), policy.prosecution.laying_limit_months)


def _discharged(offence: Offence, notices: Iterable[Notice]) -> bool:
    """Every notice for the offence is paid (and there is one): it cannot be prosecuted."""
    mine = [n for n in notices if n.offence_id == offence.id and n.status != NoticeStatus.WITHDRAWN]
    return bool(mine) and all(n.status == NoticeStatus.PAID for n in mine)


def counting(notices: Iterable[Notice], policy: Policy) -> list[Notice]:
    """Notices that count toward the limit: on or after ``counting_from`` and not withdrawn."""
    since = policy.penalty_notice.counting_from
    return [n for n in notices if n.issued_on >= since and n.status != NoticeStatus.WITHDRAWN]


def pay_dates(issued_on: date, sequence: int, policy: Policy) -> tuple[date | None, date]:
    """(last day at the reduced rate or None for a 2nd notice, last day to pay at all)."""
    pn = policy.penalty_notice
    if sequence == 1:
        first = pn.first_notice
        return days_after(issued_on, first.reduced_within_days), days_after(issued_on, first.within_days)
    return None, days_after(issued_on, pn.second_notice.within_days)


def amounts(sequence: int, policy: Policy) -> tuple[int, int]:
    """(amount if paid by the reduced-rate day, amount if paid by the final day), in pounds."""
    pn = policy.penalty_notice
    if sequence == 1:
        return pn.first_notice.reduced_amount_gbp, pn.first_notice.amount_gbp
    return pn.second_notice.amount_gbp, pn.second_notice.amount_gbp


def amount_due(notice: Notice, paid_on: date, policy: Policy) -> int | None:
    """The amount due for a payment on ``paid_on``, or None when it can no longer be paid."""
    reduced_by, pay_by = pay_dates(notice.issued_on, notice.sequence, policy)
    reduced, full = amounts(notice.sequence, policy)
    if paid_on > pay_by:
        return None
    return reduced if reduced_by is not None and paid_on <= reduced_by else full


def notice_view_status(notice: Notice, today: date, policy: Policy) -> str:
    """The status to show: ``unpaid`` once an issued notice is past its final day."""
    if (
        notice.status == NoticeStatus.ISSUED
        and today > pay_dates(notice.issued_on, notice.sequence, policy)[1]
    ):
        return "unpaid"
    return notice.status.value


def responsibilities(pupil: Pupil, school: School) -> dict[str, str | None]:
    """Which LA is responsible for what (SPEC §8)."""
    home, school_la = pupil.home_la, school.la_code
    return {
        "penalty_notice": school_la,
        "prosecution": school_la,
        "prosecution_inform": home if home != school_la else None,
        "education_supervision_order": home,
        "early_help": home,
        "social_care": home,
        "alternative_provision": home,
        "transport": home,
        "ehcp": pupil.ehcp_la,
    }


# --- moves ------------------------------------------------------------------------------------


def transition(
    case: Case,
    to: State,
    effective_on: date,
    today: date,
    policy: Policy,
    school_days: SchoolDays,
    nti_school_weeks: int | None = None,
) -> Transition:
    """Check a move of the case to ``to`` on ``effective_on`` and describe it, or raise ``Refused``."""
    _refuse_closed(case)
    _refuse_future(effective_on, today, "effective_on")
    if case.moves and effective_on < case.moves[-1].effective_on:
        last = case.moves[-1]
        raise Refused(
            Rule.EFFECTIVE_BEFORE_LAST_MOVE,
            f"effective_on {effective_on} is before the last move ({last.to} on {last.effective_on})",
        )
    if to == case.state:
        raise Refused(Rule.ALREADY_IN_STATE, f"the case is already in {to}")
    if to in _NEEDS_CSA:
        _require_csa(case, effective_on, str(to))
    data: dict[str, Any] = {}
    prosecuted: tuple[str, ...] = ()
    if to == State.NOTICE_TO_IMPROVE:
        if is_holiday_case(case):
            raise Refused(
                Rule.NTI_FOR_HOLIDAY_CASE,
                "a Notice to Improve is not used for term-time holiday (G) cases; consider a penalty notice",
            )
        nti = policy.notice_to_improve
        weeks = nti.default_school_weeks if nti_school_weeks is None else nti_school_weeks
        if not nti.min_school_weeks <= weeks <= nti.max_school_weeks:
            raise Refused(
                Rule.NTI_PERIOD_OUT_OF_RANGE,
                f"the improvement period must be {nti.min_school_weeks}–{nti.max_school_weeks} school weeks",
            )
        data = {
            "improvement_school_weeks": weeks,
            "improvement_ends_on": school_days.weeks_after(effective_on, weeks),
        }
    elif to == State.PENALTY_NOTICE:
        if not any(n.status != NoticeStatus.WITHDRAWN for n in case.case_notices):
            raise Refused(
                Rule.PENALTY_NOTICE_NOT_ISSUED,
                "a case enters penalty_notice by issuing one: POST …/penalty-notices",
            )
    elif to == State.ATTENDANCE_CONTRACT:
        if _school_type(case) in ("independent", "non_maintained_special"):
            raise Refused(
                Rule.CONTRACT_AT_INDEPENDENT_OR_NMSS,
                "attendance contracts are not used at independent or non-maintained special schools",
            )
        data = {"review_on": days_after(effective_on, 7 * policy.attendance_contract_weeks)}
    elif to == State.EDUCATION_SUPERVISION_ORDER:
        if case.pupil.cla:
            raise Refused(
                Rule.ESO_FOR_CHILD_IN_CARE, "an ESO cannot be made for a child in the care of an LA"
            )
        data = {"lead_la": case.pupil.home_la}
    elif to == State.PROSECUTION:
        data, prosecuted = _check_prosecution(case, effective_on, policy)
    elif to == State.PARENTING_ORDER and not any(r.kind == RecordKind.CONVICTION for r in case.records):
        raise Refused(
            Rule.PARENTING_ORDER_WITHOUT_CONVICTION,
            "a parenting order follows a conviction: record the conviction first",
        )
    rule, authority = PERMISSIONS[to]
    here, there = LADDER.index(case.state), LADDER.index(to)
    skipped = LADDER[here + 1 : there] if there > here + 1 and to != State.CLOSED else ()
    return Transition(case.state, to, effective_on, rule, authority, skipped, data, prosecuted)


def _check_prosecution(case: Case, on: date, policy: Policy) -> tuple[dict[str, Any], tuple[str, ...]]:
    running = [
        n
        for n in case.case_notices
        if n.status == NoticeStatus.ISSUED and on <= pay_dates(n.issued_on, n.sequence, policy)[1]
    ]
    if running:
        last = max(pay_dates(n.issued_on, n.sequence, policy)[1] for n in running)
        raise Refused(
            Rule.PENALTY_NOTICE_PAYMENT_PERIOD_RUNNING,
            f"a penalty notice can still be paid until {last}; no proceedings for its offence before then",
        )
    live = [o for o in case.offences if not o.withdrawn]
    if not live:
        raise Refused(Rule.NO_OFFENCE_RECORDED, "no offence (threshold met or LA-recorded) to prosecute")
    open_ = [o for o in live if not _discharged(o, case.notices)]
    if not open_:
        raise Refused(
            Rule.OFFENCE_DISCHARGED_BY_PAYMENT,
            "every offence of the case was discharged by a paid penalty notice",
        )
    offence = max(open_, key=lambda o: (o.met_on, o.id))
    limit = offence_laying_limit(offence, policy)
    if on > limit:
        raise Refused(
            Rule.PROSECUTION_TIME_LIMIT_PASSED,
            f"the information had to be laid by {limit} (6 months from {clock_start(offence, policy)})",
            laying_limit=limit.isoformat(),
        )
    # Every notice still issued here is past its final day (running ones were refused above):
    # unpaid, so it is prosecuted for its original offence (it keeps counting).
    prosecuted = tuple(n.id for n in case.case_notices if n.status == NoticeStatus.ISSUED)
    return {
        "offence_id": offence.id,
        "laying_limit": limit,
        "clock_start": clock_start(offence, policy),
    }, prosecuted


# --- penalty notices --------------------------------------------------------------------------


def issue_notice(
    case: Case,
    parent_id: str,
    issued_on: date,
    today: date,
    issuer_la: str,
    policy: Policy,
    offence_id: str | None = None,
) -> NoticeTerms:
    """Check a penalty notice to ``parent_id`` issued on ``issued_on``; its terms, or ``Refused``.

    National penalty notice framework (August 2024); Education (Penalty Notices) (England)
    Regulations 2007 as amended 2024.
    """
    pn = policy.penalty_notice
    _refuse_closed(case)
    _refuse_future(issued_on, today, "issued_on")
    if issued_on < pn.counting_from:
        raise Refused(
            Rule.PENALTY_NOTICE_BEFORE_FRAMEWORK,
            f"notices are issued under the framework in force from {pn.counting_from}",
        )
    if case.moves and issued_on < case.moves[-1].effective_on and case.state != State.PENALTY_NOTICE:
        last = case.moves[-1]
        raise Refused(
            Rule.EFFECTIVE_BEFORE_LAST_MOVE,
            f"issued_on {issued_on} is before the last move ({last.to} on {last.effective_on})",
        )
    if parent_id not in case.parent_ids:
        raise Refused(Rule.PARENT_NOT_ON_CASE, "the parent is not a parent on this case; add them first")
    if offence_id is not None and offence_id not in {o.id for o in case.offences}:
        raise Refused(Rule.OFFENCE_NOT_FOUND, "no offence with this id for the pupil")
    dob = _dob(case)
    if _school_type(case) == "independent":
        raise Refused(
            Rule.INDEPENDENT_SCHOOL_PENALTY_NOTICE,
            "penalty notices are not issued for pupils at independent schools",
        )
    if issuer_la != case.school.la_code:
        raise Refused(
            Rule.ISSUER_NOT_SCHOOL_LA,
            f"penalty notices are issued by the School LA ({case.school.la_code}), not {issuer_la}",
        )
    offence = _offence_for(case, parent_id, issued_on, offence_id)
    csa_on = offence.met_on if offence is not None else issued_on
    if not is_compulsory_school_age(dob, csa_on):
        raise Refused(
            Rule.NOT_COMPULSORY_SCHOOL_AGE,
            f"penalty notice: the pupil is not of compulsory school age on {csa_on}",
            on=csa_on.isoformat(),
        )
    mine = counting((n for n in case.notices if n.parent_id == parent_id), policy)
    dates = sorted([n.issued_on for n in mine] + [issued_on])
    limit = pn.max_per_parent_per_child
    for i in range(len(dates) - limit):
        if in_same_window(dates[i], dates[i + limit], pn.rolling_years):
            raise Refused(
                Rule.THIRD_PENALTY_NOTICE_IN_3_YEARS,
                f"at most {limit} penalty notices per parent per child in a rolling {pn.rolling_years} "
                "years; "
                "move the case to another measure, normally prosecution",
                notices=[n.id for n in mine],
            )
    if offence is None:
        used = any(
            _used_by(o, parent_id, case.notices)
            for o in case.offences
            if not o.withdrawn and o.met_on <= issued_on and offence_id in (None, o.id)
        )
        if used:
            raise Refused(
                Rule.OFFENCE_ALREADY_PENALISED,
                "every offence of this case up to the issue date already has a notice for this parent",
            )
        raise Refused(
            Rule.THRESHOLD_NOT_MET,
            f"no penalty threshold met (or LA-recorded offence) on or before {issued_on}",
        )
    sequence = 1 + sum(1 for n in mine if in_same_window(n.issued_on, issued_on, pn.rolling_years))
    reduced_by, pay_by = pay_dates(issued_on, sequence, policy)
    at_21, at_28 = amounts(sequence, policy)
    return NoticeTerms(
        sequence=sequence,
        offence_id=offence.id,
        issued_on=issued_on,
        amount_if_paid_by_day_21=at_21,
        amount_if_paid_by_day_28=at_28,
        pay_reduced_by=reduced_by,
        pay_by=pay_by,
        counts_until=counting_window_last_day(issued_on, pn.rolling_years),
        moves_case=case.state != State.PENALTY_NOTICE,
    )


def _used_by(offence: Offence, parent_id: str, notices: Iterable[Notice]) -> bool:
    return any(
        n.offence_id == offence.id and n.parent_id == parent_id and n.status != NoticeStatus.WITHDRAWN
        for n in notices
    )


def _offence_for(case: Case, parent_id: str, issued_on: date, offence_id: str | None) -> Offence | None:
    candidates = [
        o
        for o in case.offences
        if not o.withdrawn and o.met_on <= issued_on and not _used_by(o, parent_id, case.notices)
    ]
    if offence_id is not None:
        candidates = [o for o in candidates if o.id == offence_id]
    return max(candidates, key=lambda o: (o.met_on, o.id)) if candidates else None


def pay(notice: Notice, paid_on: date, amount: Decimal, today: date, policy: Policy) -> int:
    """Check a payment in full of ``amount`` on ``paid_on``; the amount due, or ``Refused``."""
    _refuse_future(paid_on, today, "paid_on")
    _refuse_unless_open(notice)
    if paid_on < notice.issued_on:
        raise Refused(
            Rule.PAYMENT_BEFORE_ISSUE, f"paid_on {paid_on} is before the issue date {notice.issued_on}"
        )
    due = amount_due(notice, paid_on, policy)
    if due is None:
        pay_by = pay_dates(notice.issued_on, notice.sequence, policy)[1]
        raise Refused(
            Rule.PAYMENT_AFTER_FINAL_DAY,
            f"the notice could be paid until {pay_by}; the LA must now prosecute or withdraw it",
        )
    if amount != Decimal(due):
        raise Refused(
            Rule.PAYMENT_AMOUNT_INCORRECT,
            f"the amount due on {paid_on} is £{due}, paid in full (no part payments)",
            amount_due=due,
        )
    return due


def withdraw(notice: Notice, on: date, today: date) -> None:
    """Check a withdrawal of ``notice`` on ``on``, or raise ``Refused``."""
    _refuse_future(on, today, "withdrawn_on")
    _refuse_unless_open(notice)
    if on < notice.issued_on:
        raise Refused(
            Rule.EFFECTIVE_BEFORE_LAST_MOVE, f"withdrawn_on {on} is before the issue date {notice.issued_on}"
        )


def _refuse_unless_open(notice: Notice) -> None:
    if notice.status == NoticeStatus.WITHDRAWN:
        raise Refused(Rule.PENALTY_NOTICE_WITHDRAWN, "the notice was withdrawn")
    if notice.status == NoticeStatus.PAID:
        raise Refused(Rule.PENALTY_NOTICE_ALREADY_PAID, "the notice is already paid")
    if notice.status == NoticeStatus.PROSECUTED:
        raise Refused(Rule.PENALTY_NOTICE_PROSECUTED, "the offence of this notice is being prosecuted")


# --- records ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Eso:
    made_on: date
    last_day: date
    extension_opens: date


def current_eso(case: Case, policy: Policy) -> Eso | None:
    """The ESO in force while the case is in ``education_supervision_order``, with its extensions."""
    if case.state != State.EDUCATION_SUPERVISION_ORDER:
        return None
    made = case.last_move(State.EDUCATION_SUPERVISION_ORDER)
    if made is None:
        return None
    eso = policy.education_supervision_order
    end_of_csa = csa_end(case.pupil.date_of_birth) if case.pupil.date_of_birth else None
    last = eso_last_day(made.effective_on, eso.duration_years, end_of_csa)
    for r in case.records:
        if r.kind == RecordKind.ESO_EXTENDED and r.on >= made.effective_on:
            extended = add_years(last, int(r.data.get("years", 0)))
            last = min(extended, end_of_csa) if end_of_csa else extended
    return Eso(made.effective_on, last, eso_extension_opens(last, eso.extension_window_months))


def check_record(
    case: Case, kind: RecordKind, on: date, today: date, policy: Policy, years: int | None
) -> dict[str, Any]:
    """Check a record of ``kind`` on ``on``; extra data to store with it, or ``Refused``."""
    _refuse_closed(case)
    _refuse_future(on, today, "on")
    if kind in (RecordKind.CONVICTION, RecordKind.ACQUITTAL) and case.state != State.PROSECUTION:
        raise Refused(
            Rule.CONVICTION_WITHOUT_PROSECUTION, f"a {kind} is recorded while the case is in prosecution"
        )
    if kind == RecordKind.CONTRACT_NON_COMPLIANCE and case.last_move(State.ATTENDANCE_CONTRACT) is None:
        raise Refused(Rule.NO_ATTENDANCE_CONTRACT, "the case has had no attendance contract")
    if kind in (RecordKind.ESO_DIRECTION_BREACH, RecordKind.ESO_EXTENDED):
        eso = current_eso(case, policy)
        if eso is None:
            raise Refused(
                Rule.NO_EDUCATION_SUPERVISION_ORDER, "the case has no education supervision order in force"
            )
        if kind == RecordKind.ESO_EXTENDED:
            limit = policy.education_supervision_order.extension_max_years
            if years is None or not 1 <= years <= limit:
                raise Refused(
                    Rule.ESO_EXTENSION_TOO_LONG, f"an extension is for 1 to {limit} years at a time"
                )
            if not eso.extension_opens <= on <= eso.last_day:
                raise Refused(
                    Rule.ESO_EXTENSION_OUTSIDE_WINDOW,
                    f"an extension may be applied for from {eso.extension_opens} until the order ends "
                    f"on {eso.last_day}",
                )
            return {"years": years, "previous_last_day": eso.last_day.isoformat()}
    return {}


# --- deadlines --------------------------------------------------------------------------------


def deadlines(case: Case, policy: Policy) -> list[Deadline]:
    """Every statutory deadline of the case as it stands (SPEC §7), derived from its facts.

    NTI end and contract review belong to the current state; the ESO's expiry and extension
    window to the order in force; payment dates (day 21 for a first notice, final day) and the
    3-year counting window to each notice not withdrawn; the 6-month limit to each offence not
    withdrawn or discharged. A closed case has none.
    """
    if case.state == State.CLOSED:
        return []
    out: list[Deadline] = []
    if case.state == State.NOTICE_TO_IMPROVE and (m := case.last_move(State.NOTICE_TO_IMPROVE)):
        ends = m.data.get("improvement_ends_on")
        if isinstance(ends, date):
            out.append(Deadline(f"nti:{m.effective_on}", DeadlineKind.NTI_IMPROVEMENT_ENDS, ends))
    if case.state == State.ATTENDANCE_CONTRACT and (m := case.last_move(State.ATTENDANCE_CONTRACT)):
        review = days_after(m.effective_on, 7 * policy.attendance_contract_weeks)
        out.append(Deadline(f"contract:{m.effective_on}", DeadlineKind.CONTRACT_REVIEW, review))
    if (eso := current_eso(case, policy)) is not None:
        made = eso.made_on.isoformat()
        out.append(
            Deadline(f"eso_window:{made}", DeadlineKind.ESO_EXTENSION_WINDOW_OPENS, eso.extension_opens)
        )
        out.append(Deadline(f"eso_expires:{made}", DeadlineKind.ESO_EXPIRES, eso.last_day))
    since = policy.penalty_notice.counting_from
    for n in case.case_notices:
        if n.status == NoticeStatus.WITHDRAWN:
            continue
        reduced_by, pay_by = pay_dates(n.issued_on, n.sequence, policy)
        paid = n.status == NoticeStatus.PAID
        if reduced_by is not None:
            met = paid and n.paid_on is not None and n.paid_on <= reduced_by
            out.append(
                Deadline(f"pn21:{n.id}", DeadlineKind.PENALTY_REDUCED_RATE_ENDS, reduced_by, n.id, met)
            )
        out.append(Deadline(f"pn28:{n.id}", DeadlineKind.PENALTY_PAYMENT_DUE, pay_by, n.id, paid))
        if n.issued_on >= since:
            last = counting_window_last_day(n.issued_on, policy.penalty_notice.rolling_years)
            out.append(Deadline(f"pn3y:{n.id}", DeadlineKind.PENALTY_COUNTING_WINDOW_ENDS, last, n.id))
    prosecuted_on = m.effective_on if (m := case.last_move(State.PROSECUTION)) else None
    for o in case.offences:
        if o.withdrawn or _discharged(o, case.notices):
            continue
        met = prosecuted_on is not None and prosecuted_on >= o.met_on
        detail = {"clock_start": clock_start(o, policy).isoformat(), "clock": policy.prosecution.clock_start}
        out.append(
            Deadline(
                f"laying:{o.id}",
                DeadlineKind.INFORMATION_LAYING_LIMIT,
                offence_laying_limit(o, policy),
                o.id,
                met,
                detail,
            )
        )
    return out


def announce_on(due_on: date, policy: Policy, school_days: SchoolDays) -> date:
    """The day a deadline is announced: ``deadline_lead_school_days`` school days before it."""
    return school_days.before(due_on, policy.deadline_lead_school_days)
