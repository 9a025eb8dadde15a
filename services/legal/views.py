"""The JSON shapes the legal API answers with: a case, its notices, deadlines and history."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.legal import cases
from services.legal import tables as t
from services.legal import workflow as wf
from services.legal.clocks import SchoolDays, counting_window_last_day
from shared.csa import csa_end, csa_start
from shared.policy import Policy


def _iso(value: dt.date | dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def notice_body(n: Row[Any], today: dt.date, policy: Policy, paid: int | None = None) -> dict[str, Any]:
    notice = wf.Notice(
        n.id, n.parent_id, n.issued_on, n.sequence, wf.NoticeStatus(n.status), n.offence_id, n.paid_on
    )
    status = wf.notice_view_status(notice, today, policy)
    return {
        "id": n.id,
        "case_id": n.case_id,
        "parent_id": n.parent_id,
        "sequence": n.sequence,
        "issued_on": n.issued_on.isoformat(),
        "issuer_la": n.issuer_la,
        "offence_id": n.offence_id,
        "amount_if_paid_by_day_21": n.amount_day_21,
        "amount_if_paid_by_day_28": n.amount_day_28,
        "pay_reduced_by": _iso(n.pay_reduced_by),
        "pay_by": n.pay_by.isoformat(),
        "amount_due_today": wf.amount_due(notice, today, policy) if status == "issued" else None,
        "counts_until": _iso(counting_window_last_day(n.issued_on, policy.penalty_notice.rolling_years)),
        "status": status,
        "paid_on": _iso(n.paid_on),
        "amount_paid": paid,
        "withdrawn_on": _iso(n.withdrawn_on),
        "withdrawn_reason": n.withdrawn_reason,
        "prosecuted_on": _iso(n.prosecuted_on),
        "action_required": "prosecute_or_withdraw" if status == "unpaid" else None,
    }


async def notices_of(
    conn: AsyncConnection, case_id: str, today: dt.date, policy: Policy
) -> list[dict[str, Any]]:
    n, p = t.penalty_notices.c, t.payments.c
    rows = (
        await conn.execute(
            select(t.penalty_notices).where(n.case_id == case_id).order_by(n.issued_on, n.issued_at)
        )
    ).all()
    paid: dict[str, int] = {}
    if rows:
        for r in await conn.execute(
            select(p.notice_id, p.amount_pence).where(p.notice_id.in_([x.id for x in rows]))
        ):
            paid[r.notice_id] = paid.get(r.notice_id, 0) + r.amount_pence // 100
    return [notice_body(r, today, policy, paid.get(r.id)) for r in rows]


def deadline_body(d: Row[Any], today: dt.date, policy: Policy, days: SchoolDays) -> dict[str, Any]:
    return {
        "id": d.id,
        "case_id": d.case_id,
        "kind": d.kind,
        "due_on": d.due_on.isoformat(),
        "announce_on": wf.announce_on(d.due_on, policy, days).isoformat(),
        "status": d.status,
        "overdue": d.status == "open" and d.due_on < today,
        "subject": d.subject,
        "announced_at": _iso(d.announced_at),
        "detail": d.detail,
    }


def history_body(h: Row[Any]) -> dict[str, Any]:
    return {
        "seq": h.seq,
        "kind": h.kind,
        "at": h.at.isoformat(),
        "effective_on": h.effective_on.isoformat(),
        "by": h.by,
        "from": h.from_state,
        "to": h.to_state,
        "reason": h.reason,
        "rule": h.rule,
        "authority": h.authority,
        "data": h.data,
    }


def offence_body(o: Row[Any]) -> dict[str, Any]:
    return {
        "id": o.id,
        "source": o.source,
        "episode": o.episode,
        "school_urn": o.school_urn,
        "met_on": o.met_on.isoformat(),
        "period": {"from": o.period_from.isoformat(), "to": o.period_to.isoformat()},
        "sessions": o.sessions,
        "holiday_sessions": o.holiday_sessions,
        "first_absence": _iso(o.first_absence),
        "last_absence": _iso(o.last_absence),
        "withdrawn": o.withdrawn,
        "ended_on": _iso(o.ended_on),
        "reason": o.reason,
        "evidence": o.evidence,
    }


def record_body(r: Row[Any]) -> dict[str, Any]:
    return {
        "id": r.id,
        "kind": r.kind,
        "on": r.on.isoformat(),
        "text": r.text,
        "data": r.data,
        "recorded_by": r.recorded_by,
        "recorded_at": r.recorded_at.isoformat(),
    }


def summary(case: Row[Any]) -> dict[str, Any]:
    return {
        "id": case.id,
        "upn": case.upn,
        "school_urn": case.school_urn,
        "state": case.state,
        "open": case.open,
        "opened_on": case.opened_on.isoformat(),
        "opened_at": case.opened_at.isoformat(),
        "opened_by": case.opened_by,
        "trigger": case.trigger,
        "lead_officer": case.lead_officer,
        "closed_on": _iso(case.closed_on),
        "updated_at": case.updated_at.isoformat(),
    }


async def case_body(conn: AsyncConnection, case: Row[Any], today: dt.date, policy: Policy) -> dict[str, Any]:
    """The whole case: state, parents, history, deadlines, notices, offences, records, and which
    moves the workflow would allow today (with the rule refusing the others)."""
    facts = await cases.facts(conn, case)
    days = await cases.school_days(conn, case.school_urn)
    parents = await conn.execute(
        select(t.parents).where(t.parents.c.case_id == case.id).order_by(t.parents.c.parent_id)
    )
    history = await conn.execute(
        select(t.history).where(t.history.c.case_id == case.id).order_by(t.history.c.seq)
    )
    dl = t.deadlines.c
    deadlines = await conn.execute(
        select(t.deadlines).where(dl.case_id == case.id, dl.status != "cancelled").order_by(dl.due_on, dl.key)
    )
    offences = await conn.execute(
        select(t.offences).where(t.offences.c.upn == case.upn).order_by(t.offences.c.met_on)
    )
    records = await conn.execute(
        select(t.records)
        .where(t.records.c.case_id == case.id)
        .order_by(t.records.c.on, t.records.c.recorded_at)
    )
    moves = []
    for state in wf.LADDER:
        try:
            wf.transition(facts, state, today, today, policy, days)
            moves.append({"to": state.value, "allowed": True, "rule": None, "detail": None})
        except wf.Refused as refused:
            moves.append(
                {"to": state.value, "allowed": False, "rule": refused.rule.value, "detail": refused.detail}
            )
    dob = facts.pupil.date_of_birth
    return summary(case) | {
        # What this service knows from the registry (null until its events have arrived).
        "pupil": {
            "date_of_birth": _iso(dob),
            "compulsory_school_age": {"from": csa_start(dob).isoformat(), "to": csa_end(dob).isoformat()}
            if dob
            else None,
            "home_la_code": facts.pupil.home_la,
            "looked_after": facts.pupil.cla,
        },
        "school": {"la_code": facts.school.la_code, "type": facts.school.type},
        "parents": [{"id": p.parent_id, "name": p.name} for p in parents],
        "history": [history_body(h) for h in history],
        "deadlines": [deadline_body(d, today, policy, days) for d in deadlines],
        "penalty_notices": await notices_of(conn, case.id, today, policy),
        "offences": [offence_body(o) for o in offences],
        "records": [record_body(r) for r in records],
        "holiday_case": wf.is_holiday_case(facts),
        "responsibilities": wf.responsibilities(facts.pupil, facts.school),
        "moves_today": moves,
    }


INTERVENTIONS = ("notice_to_improve", "attendance_contract", "education_supervision_order", "prosecution",
                 "parenting_order")  # fmt: skip


def figures_body(
    start: dt.date, end: dt.date, notices: Sequence[Row[Any]], moves: Sequence[Row[Any]]
) -> dict[str, Any]:
    """Counts of penalty notices and interventions, in all, by school and by month (GET /v1/figures)."""

    def empty() -> dict[str, int]:
        return {"penalty_notices": 0, **dict.fromkeys(INTERVENTIONS, 0)}

    by_school: dict[str, dict[str, int]] = defaultdict(empty)
    by_month: dict[str, dict[str, int]] = defaultdict(empty)
    pn = {"issued": 0, "first": 0, "second": 0, "paid": 0, "withdrawn": 0}
    for r in notices:
        pn["issued"] += 1
        pn["first" if r.sequence == 1 else "second"] += 1
        if r.status in ("paid", "withdrawn"):
            pn[r.status] += 1
        by_school[r.school_urn]["penalty_notices"] += 1
        by_month[r.issued_on.strftime("%Y-%m")]["penalty_notices"] += 1
    moved = dict.fromkeys(INTERVENTIONS, 0)
    for r in moves:
        if r.to_state in moved:
            moved[r.to_state] += 1
            by_school[r.school_urn][r.to_state] += 1
            by_month[r.effective_on.strftime("%Y-%m")][r.to_state] += 1
    return {
        "period": {"from": start.isoformat(), "to": end.isoformat()},
        "penalty_notices": pn,
        "interventions": moved,
        "by_school": [{"school_urn": k, **v} for k, v in sorted(by_school.items())],
        "by_month": [{"month": k, **v} for k, v in sorted(by_month.items())],
    }
