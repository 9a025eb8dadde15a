"""The legal workflow (SPEC §7, §8): every refusal rule, penalty notice sequences, amounts and
payment boundaries, prosecution time limits, ESO windows and the deadlines a case carries.

Pure: cases are built from dataclasses and the bundled Sefton policy; today is a parameter.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.legal import workflow as wf
from services.legal.clocks import SchoolDays, in_same_window
from services.legal.workflow import (
    Case,
    DeadlineKind,
    Move,
    Notice,
    NoticeStatus,
    Offence,
    Pupil,
    Record,
    RecordKind,
    Refused,
    Rule,
    School,
    State,
)
from shared.policy import load_policy

POLICY = load_policy()
DAYS = SchoolDays()
TODAY = date(2025, 3, 3)
DOB = date(2016, 5, 1)  # compulsory school age from 31 Aug 2021 to June 2032
OFFENCE = Offence(
    "o1",
    met_on=date(2024, 9, 20),
    period_from=date(2024, 7, 15),
    period_to=date(2024, 9, 20),
    sessions=10,
    holiday_sessions=4,
    first_absence=date(2024, 9, 16),
    last_absence=date(2024, 9, 20),
)


def case(
    state: State = State.SUPPORT,
    *,
    dob: date | None = DOB,
    school_type: str | None = "maintained",
    school_la: str | None = "343",
    home_la: str = "343",
    cla: bool = False,
    offences: tuple[Offence, ...] = (OFFENCE,),
    notices: tuple[Notice, ...] = (),
    moves: tuple[Move, ...] | None = None,
    records: tuple[Record, ...] = (),
) -> Case:
    if moves is None:
        moves = (Move(State.SUPPORT, date(2024, 9, 20)),) + (
            (Move(state, date(2024, 9, 25)),) if state != State.SUPPORT else ()
        )
    return Case(
        state,
        Pupil("A343200018001", dob, home_la, None, cla),
        School("123456", school_la, school_type),
        frozenset({"P1", "P2"}),
        offences,
        notices,
        moves,
        records,
    )


def refused(rule: Rule) -> Any:
    return pytest.raises(Refused, match=f"^{rule.value}:")


def issue(
    c: Case, issued_on: date, parent: str = "P1", today: date = TODAY, issuer: str = "343"
) -> wf.NoticeTerms:
    return wf.issue_notice(c, parent, issued_on, today, issuer, POLICY)


def notice(nid: str, issued_on: date, sequence: int = 1, parent: str = "P1", **kw: object) -> Notice:
    return Notice(nid, parent, issued_on, sequence, **kw)  # type: ignore[arg-type]


# --- penalty notices: amounts and dates --------------------------------------------------------


def test_first_notice_is_80_by_day_21_and_160_by_day_28() -> None:
    terms = issue(case(), date(2024, 10, 1))
    assert terms.sequence == 1
    assert (terms.amount_if_paid_by_day_21, terms.amount_if_paid_by_day_28) == (80, 160)
    assert terms.pay_reduced_by == date(2024, 10, 22)
    assert terms.pay_by == date(2024, 10, 29)
    assert terms.counts_until == date(2027, 9, 30)
    assert terms.offence_id == "o1"
    assert terms.moves_case


@pytest.mark.parametrize(
    ("paid_on", "due"),
    [
        (date(2024, 10, 1), 80),  # the issue date itself
        (date(2024, 10, 22), 80),  # day 21
        (date(2024, 10, 23), 160),  # day 22
        (date(2024, 10, 29), 160),  # day 28
        (date(2024, 10, 30), None),  # day 29: can no longer be paid
    ],
)
def test_amount_due_on_each_side_of_day_21_and_day_28(paid_on: date, due: int | None) -> None:
    assert wf.amount_due(notice("n1", date(2024, 10, 1)), paid_on, POLICY) == due


def test_second_notice_within_3_years_is_160_flat_in_28_days() -> None:
    second = Offence("o2", date(2025, 1, 17), date(2024, 11, 11), date(2025, 1, 17), 10, 0)
    c = case(State.PENALTY_NOTICE, offences=(OFFENCE, second), notices=(notice("n1", date(2024, 10, 1)),))
    terms = issue(c, date(2025, 1, 20))
    assert terms.sequence == 2
    assert (terms.amount_if_paid_by_day_21, terms.amount_if_paid_by_day_28) == (160, 160)
    assert terms.pay_reduced_by is None
    assert terms.pay_by == date(2025, 2, 17)
    assert terms.offence_id == "o2"
    assert not terms.moves_case
    n2 = notice("n2", date(2025, 1, 20), 2)
    assert wf.amount_due(n2, date(2025, 1, 21), POLICY) == 160
    assert wf.amount_due(n2, date(2025, 2, 17), POLICY) == 160
    assert wf.amount_due(n2, date(2025, 2, 18), POLICY) is None


def _offences_every_year(n: int) -> tuple[Offence, ...]:
    return tuple(
        Offence(f"o{i}", date(2024 + i, 9, 20), date(2024 + i, 7, 15), date(2024 + i, 9, 20), 10, 0)
        for i in range(n)
    )


def test_a_third_notice_within_3_years_is_refused() -> None:
    notices = (notice("n1", date(2024, 10, 1)), notice("n2", date(2025, 10, 1), 2))
    c = case(State.PENALTY_NOTICE, offences=_offences_every_year(4), notices=notices)
    with refused(Rule.THIRD_PENALTY_NOTICE_IN_3_YEARS):
        issue(c, date(2027, 9, 30), today=date(2027, 9, 30))  # the last day the first still counts
    # Exactly 3 years after the first: only the second is in the window, so this is a second notice.
    terms = issue(c, date(2027, 10, 1), today=date(2027, 10, 1))
    assert terms.sequence == 2
    assert terms.amount_if_paid_by_day_21 == 160


def test_a_notice_exactly_3_years_after_a_lone_first_is_a_first_again() -> None:
    c = case(
        State.PENALTY_NOTICE, offences=_offences_every_year(4), notices=(notice("n1", date(2024, 10, 1)),)
    )
    assert issue(c, date(2027, 9, 30), today=date(2028, 1, 1)).sequence == 2
    terms = issue(c, date(2027, 10, 1), today=date(2028, 1, 1))
    assert terms.sequence == 1
    assert terms.amount_if_paid_by_day_21 == 80


def test_withdrawn_notices_do_not_count_paid_and_prosecuted_do() -> None:
    offences = _offences_every_year(3)
    withdrawn = (
        notice("n1", date(2024, 10, 1), status=NoticeStatus.WITHDRAWN),
        notice("n2", date(2025, 10, 1), 2),
    )
    assert (
        issue(case(offences=offences, notices=withdrawn), date(2026, 10, 1), today=date(2026, 10, 1)).sequence
        == 2
    )
    for status in (NoticeStatus.PAID, NoticeStatus.PROSECUTED, NoticeStatus.ISSUED):
        counted = (notice("n1", date(2024, 10, 1), status=status), notice("n2", date(2025, 10, 1), 2))
        with refused(Rule.THIRD_PENALTY_NOTICE_IN_3_YEARS):
            issue(case(offences=offences, notices=counted), date(2026, 10, 1), today=date(2026, 10, 1))


def test_notices_count_across_cases_and_issuers_but_not_before_19_august_2024() -> None:
    offences = _offences_every_year(2)
    other_case = (
        notice("x1", date(2024, 9, 1), in_case=False),
        notice("x2", date(2024, 9, 10), 2, in_case=False),
    )
    with refused(Rule.THIRD_PENALTY_NOTICE_IN_3_YEARS):
        issue(case(offences=offences, notices=other_case), date(2024, 10, 1))
    old = (notice("x1", date(2024, 6, 1), in_case=False), notice("x2", date(2024, 9, 10), in_case=False))
    assert issue(case(offences=offences, notices=old), date(2024, 10, 1)).sequence == 2


def test_the_limit_is_per_parent() -> None:
    notices = (notice("n1", date(2024, 10, 1)), notice("n2", date(2025, 1, 20), 2))
    c = case(State.PENALTY_NOTICE, offences=_offences_every_year(1), notices=notices)
    terms = issue(c, date(2025, 2, 1), parent="P2")
    assert terms.sequence == 1  # the other parent, for the same offence


def test_a_back_dated_notice_between_two_others_is_refused() -> None:
    offences = _offences_every_year(4)
    notices = (notice("n1", date(2024, 10, 1)), notice("n2", date(2026, 10, 1), 2))
    with refused(Rule.THIRD_PENALTY_NOTICE_IN_3_YEARS):
        issue(case(offences=offences, notices=notices), date(2025, 10, 1), today=date(2026, 11, 1))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 6 * 365), min_size=1, max_size=12))
def test_no_rolling_window_ever_holds_more_than_two_notices(offsets: list[int]) -> None:
    """Whatever order and dates notices are attempted in, those accepted never put 3 in 3 years."""
    start = date(2024, 9, 1)
    offences = (Offence("o", start, start - timedelta(days=60), start, 10, 0),)
    accepted: list[Notice] = []
    rules: set[Rule] = set()
    for i, off in enumerate(offsets):
        day = start + timedelta(days=off)
        # A fresh offence for every attempt, so only the counting rule can refuse.
        c = case(
            offences=(*offences, replace(offences[0], id=f"o{i}", met_on=day)),
            notices=tuple(accepted),
            moves=(),
        )
        try:
            terms = wf.issue_notice(c, "P1", day, date(2040, 1, 1), "343", POLICY, offence_id=f"o{i}")
        except Refused as exc:
            rules.add(exc.rule)
            continue
        accepted.append(Notice(f"n{i}", "P1", day, terms.sequence, offence_id=f"o{i}"))
    assert rules <= {Rule.THIRD_PENALTY_NOTICE_IN_3_YEARS}
    dates = sorted(n.issued_on for n in accepted)
    for a, b in zip(dates, dates[2:], strict=False):
        assert not in_same_window(a, b, 3)


# --- penalty notices: refusals -----------------------------------------------------------------


def test_penalty_notice_refusals() -> None:
    with refused(Rule.NOT_COMPULSORY_SCHOOL_AGE):
        issue(case(dob=date(2020, 3, 1)), date(2024, 10, 1))  # aged 4: CSA from 31 Mar 2025
    with refused(Rule.NOT_COMPULSORY_SCHOOL_AGE):
        issue(case(dob=date(2008, 5, 1)), date(2024, 10, 1))  # turned 16 in May 2024: CSA ended June 2024
    with refused(Rule.INDEPENDENT_SCHOOL_PENALTY_NOTICE):
        issue(case(school_type="independent"), date(2024, 10, 1))
    with refused(Rule.ISSUER_NOT_SCHOOL_LA):
        issue(case(school_la="312"), date(2024, 10, 1))
    with refused(Rule.THRESHOLD_NOT_MET):
        issue(case(offences=()), date(2024, 10, 1))
    with refused(Rule.THRESHOLD_NOT_MET):
        issue(case(offences=(replace(OFFENCE, withdrawn=True),)), date(2024, 10, 1))
    with refused(Rule.THRESHOLD_NOT_MET):
        issue(case(moves=()), date(2024, 9, 19))  # before the threshold was met
    with refused(Rule.OFFENCE_ALREADY_PENALISED):
        issue(case(notices=(notice("n1", date(2024, 9, 25), offence_id="o1"),)), date(2024, 10, 1))
    with refused(Rule.PARENT_NOT_ON_CASE):
        issue(case(), date(2024, 10, 1), parent="P9")
    with refused(Rule.PUPIL_NOT_KNOWN):
        issue(case(dob=None), date(2024, 10, 1))
    with refused(Rule.SCHOOL_NOT_KNOWN):
        issue(case(school_type=None, school_la=None), date(2024, 10, 1))
    with refused(Rule.CASE_CLOSED):
        issue(case(State.CLOSED), date(2024, 10, 1))
    with refused(Rule.PENALTY_NOTICE_BEFORE_FRAMEWORK):
        issue(case(moves=()), date(2024, 8, 18))
    with refused(Rule.DATE_IN_FUTURE) as info:
        issue(case(), TODAY + timedelta(days=1))
    assert info.value.status == 422


def test_an_officer_may_name_the_offence() -> None:
    second = Offence("o2", date(2024, 9, 27), date(2024, 7, 22), date(2024, 9, 27), 10, 0)
    c = case(offences=(OFFENCE, second))
    assert (
        wf.issue_notice(c, "P1", date(2024, 10, 1), TODAY, "343", POLICY, offence_id="o1").offence_id == "o1"
    )
    assert wf.issue_notice(c, "P1", date(2024, 10, 1), TODAY, "343", POLICY).offence_id == "o2"  # the latest
    with refused(Rule.OFFENCE_NOT_FOUND) as info:
        wf.issue_notice(c, "P1", date(2024, 10, 1), TODAY, "343", POLICY, offence_id="nope")
    assert info.value.status == 422
    used = replace(c, notices=(notice("n1", date(2024, 9, 30), offence_id="o1"),))
    with refused(Rule.OFFENCE_ALREADY_PENALISED):
        wf.issue_notice(used, "P1", date(2024, 10, 1), TODAY, "343", POLICY, offence_id="o1")
    with refused(Rule.THRESHOLD_NOT_MET):  # named offence met after the issue date
        wf.issue_notice(c, "P1", date(2024, 9, 25), TODAY, "343", POLICY, offence_id="o2")


def test_csa_is_checked_on_the_offence_date() -> None:
    """A pupil who turned 16 after the offence can still be given a notice for it."""
    dob = date(2009, 7, 15)  # 16 in July 2025: CSA ended on Fri 27 June 2025
    assert issue(case(dob=dob), date(2025, 7, 1), today=date(2025, 7, 1)).sequence == 1


def test_payment_checks() -> None:
    n1 = notice("n1", date(2024, 10, 1))
    assert wf.pay(n1, date(2024, 10, 22), Decimal("80.00"), TODAY, POLICY) == 80
    assert wf.pay(n1, date(2024, 10, 23), Decimal(160), TODAY, POLICY) == 160
    with refused(Rule.PAYMENT_AMOUNT_INCORRECT):
        wf.pay(n1, date(2024, 10, 23), Decimal(80), TODAY, POLICY)
    with refused(Rule.PAYMENT_AFTER_FINAL_DAY):
        wf.pay(n1, date(2024, 10, 30), Decimal(160), TODAY, POLICY)
    with refused(Rule.PAYMENT_BEFORE_ISSUE):
        wf.pay(n1, date(2024, 9, 30), Decimal(80), TODAY, POLICY)
    with refused(Rule.PENALTY_NOTICE_ALREADY_PAID):
        wf.pay(replace(n1, status=NoticeStatus.PAID), date(2024, 10, 2), Decimal(80), TODAY, POLICY)
    with refused(Rule.PENALTY_NOTICE_WITHDRAWN):
        wf.withdraw(replace(n1, status=NoticeStatus.WITHDRAWN), date(2024, 10, 2), TODAY)
    with refused(Rule.PENALTY_NOTICE_PROSECUTED):
        wf.withdraw(replace(n1, status=NoticeStatus.PROSECUTED), date(2024, 12, 2), TODAY)
    wf.withdraw(n1, date(2024, 11, 5), TODAY)  # unpaid after day 28: withdraw (or prosecute)
    assert wf.notice_view_status(n1, date(2024, 10, 29), POLICY) == "issued"
    assert wf.notice_view_status(n1, date(2024, 10, 30), POLICY) == "unpaid"


# --- moves -------------------------------------------------------------------------------------


def move(c: Case, to: State, on: date = TODAY, weeks: int | None = None) -> wf.Transition:
    return wf.transition(c, to, on, TODAY, POLICY, DAYS, weeks)


def test_skipping_steps_is_allowed_and_recorded() -> None:
    t = move(case(), State.ATTENDANCE_CONTRACT)
    assert t.skipped == (State.NOTICE_TO_IMPROVE, State.PENALTY_NOTICE)
    assert t.rule == "attendance_contract_lasap"
    assert "LA School Attendance Panel" in t.authority
    assert t.data["review_on"] == TODAY + timedelta(weeks=12)
    back = move(case(State.ATTENDANCE_CONTRACT), State.SUPPORT)
    assert back.skipped == ()
    assert move(case(), State.CLOSED).skipped == ()


def test_notice_to_improve_period_and_holiday_rule() -> None:
    t = move(case(), State.NOTICE_TO_IMPROVE, on=date(2024, 10, 16))
    assert t.data["improvement_school_weeks"] == 4
    assert t.data["improvement_ends_on"] == date(2024, 11, 15)
    for weeks in (3, 6):
        assert move(case(), State.NOTICE_TO_IMPROVE, weeks=weeks).data["improvement_school_weeks"] == weeks
    for weeks in (2, 7):
        with refused(Rule.NTI_PERIOD_OUT_OF_RANGE):
            move(case(), State.NOTICE_TO_IMPROVE, weeks=weeks)
    holiday = replace(OFFENCE, holiday_sessions=6)
    with refused(Rule.NTI_FOR_HOLIDAY_CASE):
        move(case(offences=(holiday,)), State.NOTICE_TO_IMPROVE)
    half = replace(OFFENCE, holiday_sessions=5)  # not a majority
    assert move(case(offences=(half,)), State.NOTICE_TO_IMPROVE).to == State.NOTICE_TO_IMPROVE


def test_move_refusals() -> None:
    with refused(Rule.CASE_CLOSED):
        move(case(State.CLOSED), State.SUPPORT)
    with refused(Rule.ALREADY_IN_STATE):
        move(case(), State.SUPPORT)
    with refused(Rule.EFFECTIVE_BEFORE_LAST_MOVE):
        move(case(State.NOTICE_TO_IMPROVE), State.CLOSED, on=date(2024, 9, 24))
    with refused(Rule.DATE_IN_FUTURE):
        move(case(), State.CLOSED, on=TODAY + timedelta(days=1))
    with refused(Rule.NOT_COMPULSORY_SCHOOL_AGE):
        move(case(dob=date(2020, 3, 1)), State.NOTICE_TO_IMPROVE, on=date(2024, 10, 1))
    with refused(Rule.PUPIL_NOT_KNOWN):
        move(case(dob=None), State.EDUCATION_SUPERVISION_ORDER)
    with refused(Rule.PENALTY_NOTICE_NOT_ISSUED):
        move(case(), State.PENALTY_NOTICE)
    for school_type in ("independent", "non_maintained_special"):
        with refused(Rule.CONTRACT_AT_INDEPENDENT_OR_NMSS):
            move(case(school_type=school_type), State.ATTENDANCE_CONTRACT)
    with refused(Rule.SCHOOL_NOT_KNOWN):
        move(case(school_type=None), State.ATTENDANCE_CONTRACT)
    with refused(Rule.ESO_FOR_CHILD_IN_CARE):
        move(case(cla=True), State.EDUCATION_SUPERVISION_ORDER)
    with refused(Rule.PARENTING_ORDER_WITHOUT_CONVICTION):
        move(case(State.PROSECUTION), State.PARENTING_ORDER)
    # Support and closing need no CSA (a child past CSA can still have a case closed).
    assert move(case(dob=date(2000, 1, 1)), State.CLOSED).to == State.CLOSED


def test_parenting_order_after_a_conviction() -> None:
    convicted = case(State.PROSECUTION, records=(Record(RecordKind.CONVICTION, date(2025, 2, 1)),))
    t = move(convicted, State.PARENTING_ORDER)
    assert t.rule == "parenting_order_after_conviction"
    assert "Crime and Disorder Act 1998" in t.authority


def test_an_eso_is_led_by_the_home_la() -> None:
    assert move(case(home_la="312"), State.EDUCATION_SUPERVISION_ORDER).data["lead_la"] == "312"


def test_penalty_notice_state_once_a_notice_exists() -> None:
    c = case(State.ATTENDANCE_CONTRACT, notices=(notice("n1", date(2024, 9, 25)),))
    assert move(c, State.PENALTY_NOTICE).to == State.PENALTY_NOTICE


# --- prosecution -------------------------------------------------------------------------------


def test_prosecution_waits_for_the_payment_period_then_prosecutes_unpaid_notices() -> None:
    c = case(State.PENALTY_NOTICE, notices=(notice("n1", date(2024, 10, 1), offence_id="o1"),))
    with refused(Rule.PENALTY_NOTICE_PAYMENT_PERIOD_RUNNING):
        move(c, State.PROSECUTION, on=date(2024, 10, 29))  # day 28: it can still be paid
    t = move(c, State.PROSECUTION, on=date(2024, 10, 30))
    assert t.prosecuted_notices == ("n1",)
    assert t.data["offence_id"] == "o1"
    assert t.data["clock_start"] == date(2024, 9, 20)  # the last absence of the offence period
    assert t.data["laying_limit"] == date(2025, 3, 20)


def test_prosecution_time_limit_last_day() -> None:
    c = case()  # last absence 20 Sep 2024 → information by 20 Mar 2025 inclusive
    today = date(2025, 6, 1)
    assert wf.transition(c, State.PROSECUTION, date(2025, 3, 20), today, POLICY, DAYS).to == State.PROSECUTION
    with pytest.raises(Refused) as info:
        wf.transition(c, State.PROSECUTION, date(2025, 3, 21), today, POLICY, DAYS)
    assert info.value.rule == Rule.PROSECUTION_TIME_LIMIT_PASSED
    assert info.value.facts["laying_limit"] == "2025-03-20"


def test_prosecution_clock_start_follows_policy() -> None:
    first = POLICY.model_copy(
        update={"prosecution": POLICY.prosecution.model_copy(update={"clock_start": "first_absence"})}
    )
    end = POLICY.model_copy(
        update={"prosecution": POLICY.prosecution.model_copy(update={"clock_start": "offence_period_end"})}
    )
    assert wf.clock_start(OFFENCE, POLICY) == date(2024, 9, 20)
    assert wf.clock_start(OFFENCE, first) == date(2024, 9, 16)
    assert wf.clock_start(replace(OFFENCE, last_absence=date(2024, 9, 18)), end) == date(2024, 9, 20)
    assert wf.offence_laying_limit(OFFENCE, first) == date(2025, 3, 16)


def test_prosecution_needs_an_undischarged_offence() -> None:
    with refused(Rule.NO_OFFENCE_RECORDED):
        move(case(offences=()), State.PROSECUTION)
    paid = case(
        State.PENALTY_NOTICE,
        notices=(
            notice(
                "n1", date(2024, 10, 1), offence_id="o1", status=NoticeStatus.PAID, paid_on=date(2024, 10, 5)
            ),
        ),
    )
    with refused(Rule.OFFENCE_DISCHARGED_BY_PAYMENT):
        move(paid, State.PROSECUTION, on=date(2024, 11, 1))


# --- records and the ESO -----------------------------------------------------------------------


def test_record_rules() -> None:
    def record(c: Case, kind: RecordKind, on: date = TODAY, years: int | None = None) -> dict[str, object]:
        return wf.check_record(c, kind, on, TODAY, POLICY, years)

    with refused(Rule.CONVICTION_WITHOUT_PROSECUTION):
        record(case(), RecordKind.CONVICTION)
    assert record(case(State.PROSECUTION), RecordKind.CONVICTION) == {}
    with refused(Rule.NO_ATTENDANCE_CONTRACT):
        record(case(), RecordKind.CONTRACT_NON_COMPLIANCE)
    after_contract = case(
        State.SUPPORT,
        moves=(Move(State.SUPPORT, date(2024, 9, 1)), Move(State.ATTENDANCE_CONTRACT, date(2024, 9, 5)),
               Move(State.SUPPORT, date(2024, 12, 5))),
    )  # fmt: skip
    assert record(after_contract, RecordKind.CONTRACT_NON_COMPLIANCE) == {}
    with refused(Rule.NO_EDUCATION_SUPERVISION_ORDER):
        record(case(), RecordKind.ESO_DIRECTION_BREACH)
    with refused(Rule.CASE_CLOSED):
        record(case(State.CLOSED), RecordKind.NOTE)


def test_eso_extension_window_opens_exactly_3_months_before_expiry() -> None:
    moves = (
        Move(State.SUPPORT, date(2024, 9, 1)),
        Move(State.EDUCATION_SUPERVISION_ORDER, date(2025, 1, 15)),
    )
    c = case(State.EDUCATION_SUPERVISION_ORDER, moves=moves)
    eso = wf.current_eso(c, POLICY)
    assert eso == wf.Eso(date(2025, 1, 15), date(2026, 1, 14), date(2025, 10, 15))
    later = date(2026, 2, 1)

    def extend(on: date, years: int | None = 1) -> dict[str, object]:
        return wf.check_record(c, RecordKind.ESO_EXTENDED, on, later, POLICY, years)

    with refused(Rule.ESO_EXTENSION_OUTSIDE_WINDOW):
        extend(date(2025, 10, 14))
    assert extend(date(2025, 10, 15)) == {"years": 1, "previous_last_day": "2026-01-14"}
    assert extend(date(2026, 1, 14))["years"] == 1  # the last day of the order
    with refused(Rule.ESO_EXTENSION_OUTSIDE_WINDOW):
        extend(date(2026, 1, 15))
    with refused(Rule.ESO_EXTENSION_TOO_LONG):
        extend(date(2025, 11, 1), years=4)
    extended = replace(c, records=(Record(RecordKind.ESO_EXTENDED, date(2025, 11, 1), {"years": 2}),))
    assert wf.current_eso(extended, POLICY) == wf.Eso(
        date(2025, 1, 15), date(2028, 1, 14), date(2027, 10, 15)
    )


def test_an_eso_ends_with_compulsory_school_age() -> None:
    moves = (
        Move(State.SUPPORT, date(2024, 9, 1)),
        Move(State.EDUCATION_SUPERVISION_ORDER, date(2025, 1, 15)),
    )
    c = case(State.EDUCATION_SUPERVISION_ORDER, dob=date(2009, 5, 1), moves=moves)  # CSA ends 27 Jun 2025
    eso = wf.current_eso(c, POLICY)
    assert eso is not None
    assert eso.last_day == date(2025, 6, 27)


# --- deadlines ---------------------------------------------------------------------------------


def by_kind(c: Case) -> dict[DeadlineKind, list[wf.Deadline]]:
    out: dict[DeadlineKind, list[wf.Deadline]] = {}
    for d in wf.deadlines(c, POLICY):
        out.setdefault(d.kind, []).append(d)
    return out


def test_deadlines_of_notices_and_offences() -> None:
    notices = (
        notice(
            "n1", date(2024, 10, 1), offence_id="o1", status=NoticeStatus.PAID, paid_on=date(2024, 10, 20)
        ),
        notice("n2", date(2025, 1, 20), 2, offence_id="o2"),
        notice("n3", date(2025, 1, 20), parent="P2", status=NoticeStatus.WITHDRAWN),
    )
    second = Offence(
        "o2", date(2025, 1, 17), date(2024, 11, 11), date(2025, 1, 17), 10, 0, last_absence=date(2025, 1, 17)
    )
    found = by_kind(case(State.PENALTY_NOTICE, offences=(OFFENCE, second), notices=notices))
    reduced = found[DeadlineKind.PENALTY_REDUCED_RATE_ENDS]
    assert [(d.subject, d.due_on, d.met) for d in reduced] == [("n1", date(2024, 10, 22), True)]
    due = found[DeadlineKind.PENALTY_PAYMENT_DUE]
    assert [(d.subject, d.due_on, d.met) for d in due] == [
        ("n1", date(2024, 10, 29), True),
        ("n2", date(2025, 2, 17), False),
    ]
    window = found[DeadlineKind.PENALTY_COUNTING_WINDOW_ENDS]
    assert [(d.subject, d.due_on) for d in window] == [("n1", date(2027, 9, 30)), ("n2", date(2028, 1, 19))]
    # o1 was discharged by its paid notice: only o2's 6-month limit remains.
    laying = found[DeadlineKind.INFORMATION_LAYING_LIMIT]
    assert [(d.subject, d.due_on, d.met) for d in laying] == [("o2", date(2025, 7, 17), False)]


def test_deadlines_of_states() -> None:
    ends = {"improvement_ends_on": date(2024, 11, 15)}
    nti_moves = (
        Move(State.SUPPORT, date(2024, 9, 1)),
        Move(State.NOTICE_TO_IMPROVE, date(2024, 10, 16), ends),
    )
    nti = by_kind(case(State.NOTICE_TO_IMPROVE, moves=nti_moves))
    assert nti[DeadlineKind.NTI_IMPROVEMENT_ENDS][0].due_on == date(2024, 11, 15)
    contract = by_kind(case(State.ATTENDANCE_CONTRACT))
    assert contract[DeadlineKind.CONTRACT_REVIEW][0].due_on == date(2024, 9, 25) + timedelta(weeks=12)
    assert DeadlineKind.NTI_IMPROVEMENT_ENDS not in contract
    eso_moves = (
        Move(State.SUPPORT, date(2024, 9, 1)),
        Move(State.EDUCATION_SUPERVISION_ORDER, date(2025, 1, 15)),
    )
    eso = by_kind(case(State.EDUCATION_SUPERVISION_ORDER, moves=eso_moves))
    assert eso[DeadlineKind.ESO_EXTENSION_WINDOW_OPENS][0].due_on == date(2025, 10, 15)
    assert eso[DeadlineKind.ESO_EXPIRES][0].due_on == date(2026, 1, 14)
    p_moves = (Move(State.SUPPORT, date(2024, 9, 1)), Move(State.PROSECUTION, date(2024, 12, 1)))
    prosecuted = by_kind(case(State.PROSECUTION, moves=p_moves))
    assert prosecuted[DeadlineKind.INFORMATION_LAYING_LIMIT][0].met
    assert wf.deadlines(case(State.CLOSED), POLICY) == []


def test_announcement_is_10_school_days_before() -> None:
    assert wf.announce_on(date(2025, 3, 14), POLICY, DAYS) == date(2025, 2, 28)


def test_responsibilities_across_borders() -> None:
    c = case(home_la="312")
    r = wf.responsibilities(c.pupil, c.school)
    assert r["penalty_notice"] == r["prosecution"] == "343"
    assert r["prosecution_inform"] == "312"
    assert r["education_supervision_order"] == r["early_help"] == r["transport"] == "312"
