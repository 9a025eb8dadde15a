"""Case use cases: load a case's facts, let the workflow decide, write the result and its events.

Each function runs inside the caller's transaction and takes the pupil's lock first, so two
officers (or an officer and the signal consumer) cannot both pass a check that only one of them
should (two "second" notices, two open cases). Events go to the outbox in the same transaction
(``rollcall.legal.v1``, key = case id).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.legal import tables as t
from services.legal import workflow as wf
from services.legal.clocks import SchoolDays
from shared.calendar import Calendars, Closure, SchoolCalendar, Term
from shared.events import Topic, new_event
from shared.outbox import enqueue, outbox_records
from shared.policy import Policy

SOURCE = "urn:rollcall:legal"


class NotFound(LookupError):
    """No such case (or notice) that the caller may see."""


async def lock_pupil(conn: AsyncConnection, upn: str) -> None:
    """Serialise writers of one pupil's cases until the transaction ends (PostgreSQL advisory
    lock; SQLite transactions already begin IMMEDIATE)."""
    if conn.dialect.name == "postgresql":
        key = int.from_bytes(
            hashlib.blake2b(f"legal:{upn}".encode(), digest_size=8).digest(), "big", signed=True
        )
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


async def emit(conn: AsyncConnection, type_: str, case_id: str, data: dict[str, Any]) -> None:
    event = new_event(type_, SOURCE, _jsonable(data), subject=case_id)
    await enqueue(conn, t.outbox, outbox_records(Topic.LEGAL, [(case_id, event)]))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# --- reading facts ----------------------------------------------------------------------------


async def case_row(conn: AsyncConnection, case_id: str) -> Row[Any]:
    row = (await conn.execute(select(t.cases).where(t.cases.c.id == case_id))).first()
    if row is None:
        raise NotFound(case_id)
    return row


async def open_case_of(conn: AsyncConnection, upn: str) -> Row[Any] | None:
    q = select(t.cases).where(t.cases.c.upn == upn, t.cases.c.open.is_(True))
    return (await conn.execute(q)).first()


async def school_days(conn: AsyncConnection, urn: str) -> SchoolDays:
    """The school's days from its stored calendars (weekdays for years without one)."""
    rows = (await conn.execute(select(t.calendars).where(t.calendars.c.school_urn == urn))).all()
    if not rows:
        return SchoolDays()
    cals = [
        SchoolCalendar.build(
            r.year,
            [Term(dt.date.fromisoformat(x["start"]), dt.date.fromisoformat(x["end"])) for x in r.terms],
            [Closure(dt.date.fromisoformat(c["date"]), c["session"], c.get("reason", "")) for c in r.closed],
        )
        for r in rows
    ]
    return SchoolDays(Calendars(cals))


def _date(value: Any) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


async def facts(conn: AsyncConnection, case: Row[Any]) -> wf.Case:
    """Everything the workflow needs about ``case``, as plain dataclasses."""
    upn = case.upn
    p = (await conn.execute(select(t.pupils).where(t.pupils.c.upn == upn))).first()
    cla = (await conn.execute(select(t.care.c.cla).where(t.care.c.upn == upn))).scalar_one_or_none()
    pupil = wf.Pupil(
        upn,
        p.date_of_birth if p else None,
        p.home_la_code if p else None,
        (p.ehcp_la_code or p.home_la_code) if p else None,
        bool(cla),
    )
    s = (await conn.execute(select(t.schools).where(t.schools.c.urn == case.school_urn))).first()
    school = wf.School(case.school_urn, s.la_code if s else None, s.type if s else None)
    parent_ids = frozenset(
        (await conn.execute(select(t.parents.c.parent_id).where(t.parents.c.case_id == case.id))).scalars()
    )
    offences = tuple(
        wf.Offence(
            o.id,
            o.met_on,
            o.period_from,
            o.period_to,
            o.sessions,
            o.holiday_sessions,
            o.first_absence,
            o.last_absence,
            o.withdrawn,
        )
        for o in await conn.execute(select(t.offences).where(t.offences.c.upn == upn))
    )
    notices = tuple(
        wf.Notice(
            n.id,
            n.parent_id,
            n.issued_on,
            n.sequence,
            wf.NoticeStatus(n.status),
            n.offence_id,
            n.paid_on,
            n.case_id == case.id,
        )
        for n in await conn.execute(
            select(t.penalty_notices)
            .where(t.penalty_notices.c.upn == upn)
            .order_by(t.penalty_notices.c.issued_on)
        )
    )
    h = t.history.c
    moves = tuple(
        wf.Move(wf.State(r.to_state), r.effective_on, _move_data(r.data))
        for r in await conn.execute(
            select(t.history).where(h.case_id == case.id, h.to_state.is_not(None)).order_by(h.seq)
        )
    )
    records = tuple(
        wf.Record(wf.RecordKind(r.kind), r.on, r.data)
        for r in await conn.execute(
            select(t.records).where(t.records.c.case_id == case.id).order_by(t.records.c.on)
        )
    )
    return wf.Case(wf.State(case.state), pupil, school, parent_ids, offences, notices, moves, records)


def _move_data(data: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(data)
    if "improvement_ends_on" in out:
        out["improvement_ends_on"] = _date(out["improvement_ends_on"])
    return out


# --- writing ----------------------------------------------------------------------------------


async def write_history(
    conn: AsyncConnection,
    case_id: str,
    kind: str,
    now: dt.datetime,
    effective_on: dt.date,
    by: str,
    reason: str,
    *,
    from_state: str | None = None,
    to_state: str | None = None,
    rule: str | None = None,
    authority: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> None:
    await conn.execute(
        t.history.insert().values(
            case_id=case_id,
            kind=kind,
            at=now,
            effective_on=effective_on,
            by=by,
            reason=reason,
            from_state=from_state,
            to_state=to_state,
            rule=rule,
            authority=authority,
            data=_jsonable(dict(data or {})),
        )
    )


async def open_case(
    conn: AsyncConnection,
    *,
    upn: str,
    school_urn: str,
    parents: Iterable[tuple[str, str]],
    lead_officer: str | None,
    by: str,
    opened_on: dt.date,
    trigger: str,
    reason: str,
    policy: Policy,
    now: dt.datetime,
) -> str:
    """Open a case in ``support`` (the caller holds the pupil's lock and checked none is open);
    its deadlines start with the pupil's offences already recorded."""
    case_id = str(uuid.uuid4())
    await conn.execute(
        t.cases.insert().values(
            id=case_id,
            upn=upn,
            school_urn=school_urn,
            state=wf.State.SUPPORT.value,
            open=True,
            opened_on=opened_on,
            opened_at=now,
            opened_by=by,
            trigger=trigger,
            lead_officer=lead_officer,
            updated_at=now,
        )
    )
    parent_rows = [
        {"case_id": case_id, "parent_id": pid, "name": name} for pid, name in dict(parents).items()
    ]
    if parent_rows:
        await conn.execute(t.parents.insert(), parent_rows)
    rule, authority = wf.PERMISSIONS[wf.State.SUPPORT]
    await write_history(
        conn,
        case_id,
        "opened",
        now,
        opened_on,
        by,
        reason,
        to_state=wf.State.SUPPORT.value,
        rule=rule,
        authority=authority,
        data={"trigger": trigger},
    )
    await emit(
        conn,
        "case.opened",
        case_id,
        {
            "case_id": case_id,
            "upn": upn,
            "school_urn": school_urn,
            "state": wf.State.SUPPORT.value,
            "opened_on": opened_on,
            "opened_by": by,
            "trigger": trigger,
            "lead_officer": lead_officer,
        },
    )
    await refresh_deadlines(conn, case_id, await facts(conn, await case_row(conn, case_id)), policy)
    return case_id


async def refresh_deadlines(conn: AsyncConnection, case_id: str, case: wf.Case, policy: Policy) -> None:
    """Store the case's deadlines as derived now: new ones open, vanished ones cancelled.

    A deadline keeps its announcement unless its due date moved (then it is announced again).
    """
    derived = {d.key: d for d in wf.deadlines(case, policy)}
    dl = t.deadlines.c
    existing = {r.key: r for r in await conn.execute(select(t.deadlines).where(dl.case_id == case_id))}
    for key, d in derived.items():
        values = {
            "kind": d.kind.value,
            "due_on": d.due_on,
            "subject": d.subject,
            "status": "met" if d.met else "open",
            "detail": _jsonable(dict(d.detail)),
        }
        old = existing.get(key)
        if old is None:
            await conn.execute(
                t.deadlines.insert().values(id=str(uuid.uuid4()), case_id=case_id, key=key, **values)
            )
        elif any(getattr(old, k) != v for k, v in values.items()):
            if old.due_on != d.due_on:
                values["announced_at"] = None
            await conn.execute(update(t.deadlines).where(dl.id == old.id).values(**values))
    gone = [r.id for key, r in existing.items() if key not in derived and r.status != "cancelled"]
    if gone:
        await conn.execute(update(t.deadlines).where(dl.id.in_(gone)).values(status="cancelled"))


async def snapshot_register(
    conn: AsyncConnection, case: Row[Any], taken_for: str, period: tuple[dt.date, dt.date], now: dt.datetime
) -> None:
    """Freeze the register of ``period`` as it stands, for the evidence pack."""
    items = await register_between(conn, case.upn, case.school_urn, *period)
    await conn.execute(
        t.evidence_snapshots.insert().values(
            id=str(uuid.uuid4()),
            case_id=case.id,
            taken_for=taken_for,
            taken_at=now,
            period_from=period[0],
            period_to=period[1],
            items=items,
        )
    )


async def register_between(
    conn: AsyncConnection, upn: str, school_urn: str, start: dt.date, end: dt.date
) -> list[dict[str, str]]:
    r = t.register.c
    rows = await conn.execute(
        select(r.date, r.session, r.code, r.category)
        .where(r.upn == upn, r.school_urn == school_urn, r.date >= start, r.date <= end)
        .order_by(r.date, r.session)
    )
    return [
        {"date": x.date.isoformat(), "session": x.session, "code": x.code, "category": x.category}
        for x in rows
    ]


async def _touch(conn: AsyncConnection, case_id: str, now: dt.datetime, **values: Any) -> None:
    await conn.execute(update(t.cases).where(t.cases.c.id == case_id).values(updated_at=now, **values))


async def move(
    conn: AsyncConnection,
    case: Row[Any],
    to: wf.State,
    reason: str,
    effective_on: dt.date,
    by: str,
    policy: Policy,
    today: dt.date,
    now: dt.datetime,
    nti_school_weeks: int | None = None,
) -> wf.Transition:
    """Move ``case`` to ``to`` if the workflow allows it; history, deadlines, event."""
    await lock_pupil(conn, case.upn)
    case = await case_row(conn, case.id)
    f = await facts(conn, case)
    days = await school_days(conn, case.school_urn)
    decision = wf.transition(f, to, effective_on, today, policy, days, nti_school_weeks)
    data = dict(decision.data) | {"skipped": [s.value for s in decision.skipped]}
    if decision.prosecuted_notices:
        data["prosecuted_notices"] = list(decision.prosecuted_notices)
        await conn.execute(
            update(t.penalty_notices)
            .where(t.penalty_notices.c.id.in_(decision.prosecuted_notices))
            .values(status=wf.NoticeStatus.PROSECUTED.value, prosecuted_on=effective_on)
        )
    await write_history(
        conn,
        case.id,
        "transition",
        now,
        effective_on,
        by,
        reason,
        from_state=decision.from_state.value,
        to_state=to.value,
        rule=decision.rule,
        authority=decision.authority,
        data=data,
    )
    closing = to == wf.State.CLOSED
    await _touch(
        conn, case.id, now, state=to.value, open=not closing, closed_on=effective_on if closing else None
    )
    if to == wf.State.PROSECUTION and (offence_id := data.get("offence_id")):
        offence = next(o for o in f.offences if o.id == offence_id)
        await snapshot_register(conn, case, "prosecution", (offence.period_from, offence.period_to), now)
    await refresh_deadlines(conn, case.id, await facts(conn, await case_row(conn, case.id)), policy)
    await emit(
        conn,
        "case.transitioned",
        case.id,
        {
            "case_id": case.id,
            "upn": case.upn,
            "school_urn": case.school_urn,
            "from": decision.from_state.value,
            "to": to.value,
            "effective_on": effective_on,
            "by": by,
            "reason": reason,
            "rule": decision.rule,
            "authority": decision.authority,
            "skipped": [s.value for s in decision.skipped],
            "lead_officer": case.lead_officer,
        },
    )
    return decision


async def issue_notice(
    conn: AsyncConnection,
    case: Row[Any],
    parent_id: str,
    issued_on: dt.date,
    issuer_la: str,
    by: str,
    policy: Policy,
    today: dt.date,
    now: dt.datetime,
    offence_id: str | None = None,
) -> str:
    """Issue a penalty notice if the workflow allows it; returns the notice id."""
    await lock_pupil(conn, case.upn)
    case = await case_row(conn, case.id)
    f = await facts(conn, case)
    terms = wf.issue_notice(f, parent_id, issued_on, today, issuer_la, policy, offence_id)
    notice_id = str(uuid.uuid4())
    await conn.execute(
        t.penalty_notices.insert().values(
            id=notice_id,
            case_id=case.id,
            upn=case.upn,
            school_urn=case.school_urn,
            parent_id=parent_id,
            offence_id=terms.offence_id,
            issuer_la=issuer_la,
            issued_on=issued_on,
            sequence=terms.sequence,
            amount_day_21=terms.amount_if_paid_by_day_21,
            amount_day_28=terms.amount_if_paid_by_day_28,
            pay_reduced_by=terms.pay_reduced_by,
            pay_by=terms.pay_by,
            status=wf.NoticeStatus.ISSUED.value,
            issued_by=by,
            issued_at=now,
        )
    )
    rule, authority = wf.PERMISSIONS[wf.State.PENALTY_NOTICE]
    detail = {
        "notice_id": notice_id,
        "parent_id": parent_id,
        "sequence": terms.sequence,
        "offence_id": terms.offence_id,
    }
    reason = f"penalty notice {terms.sequence} issued to parent {parent_id}"
    if terms.moves_case:
        here, there = wf.LADDER.index(f.state), wf.LADDER.index(wf.State.PENALTY_NOTICE)
        skipped = [s.value for s in wf.LADDER[here + 1 : there]]
        await write_history(
            conn,
            case.id,
            "penalty_notice",
            now,
            issued_on,
            by,
            reason,
            from_state=f.state.value,
            to_state=wf.State.PENALTY_NOTICE.value,
            rule=rule,
            authority=authority,
            data=detail | {"skipped": skipped},
        )
        await _touch(conn, case.id, now, state=wf.State.PENALTY_NOTICE.value)
    else:
        await write_history(
            conn,
            case.id,
            "penalty_notice",
            now,
            issued_on,
            by,
            reason,
            rule=rule,
            authority=authority,
            data=detail,
        )
        await _touch(conn, case.id, now)
    offence = next(o for o in f.offences if o.id == terms.offence_id)
    await snapshot_register(
        conn, case, f"penalty_notice:{notice_id}", (offence.period_from, offence.period_to), now
    )
    await refresh_deadlines(conn, case.id, await facts(conn, await case_row(conn, case.id)), policy)
    body = {
        "case_id": case.id,
        "notice_id": notice_id,
        "upn": case.upn,
        "school_urn": case.school_urn,
        "parent_id": parent_id,
        "sequence": terms.sequence,
        "issued_on": issued_on,
        "issuer_la": issuer_la,
        "amount_if_paid_by_day_21": terms.amount_if_paid_by_day_21,
        "amount_if_paid_by_day_28": terms.amount_if_paid_by_day_28,
        "pay_reduced_by": terms.pay_reduced_by,
        "pay_by": terms.pay_by,
        "lead_officer": case.lead_officer,
    }
    await emit(conn, "penalty_notice.issued", case.id, body)
    if terms.moves_case:
        await emit(
            conn,
            "case.transitioned",
            case.id,
            {
                "case_id": case.id,
                "upn": case.upn,
                "school_urn": case.school_urn,
                "from": f.state.value,
                "to": wf.State.PENALTY_NOTICE.value,
                "effective_on": issued_on,
                "by": by,
                "reason": reason,
                "rule": rule,
                "authority": authority,
                "skipped": skipped,
                "lead_officer": case.lead_officer,
            },
        )
    return notice_id


async def notice_row(conn: AsyncConnection, case_id: str, notice_id: str) -> Row[Any]:
    n = t.penalty_notices.c
    row = (
        await conn.execute(select(t.penalty_notices).where(n.id == notice_id, n.case_id == case_id))
    ).first()
    if row is None:
        raise NotFound(notice_id)
    return row


def _notice(row: Row[Any]) -> wf.Notice:
    return wf.Notice(
        row.id,
        row.parent_id,
        row.issued_on,
        row.sequence,
        wf.NoticeStatus(row.status),
        row.offence_id,
        row.paid_on,
    )


async def record_payment(
    conn: AsyncConnection,
    case: Row[Any],
    notice_id: str,
    paid_on: dt.date,
    amount: Decimal,
    by: str,
    policy: Policy,
    today: dt.date,
    now: dt.datetime,
) -> None:
    await lock_pupil(conn, case.upn)
    row = await notice_row(conn, case.id, notice_id)
    due = wf.pay(_notice(row), paid_on, amount, today, policy)
    await conn.execute(
        t.payments.insert().values(
            id=str(uuid.uuid4()),
            notice_id=notice_id,
            paid_on=paid_on,
            amount_pence=due * 100,
            recorded_by=by,
            recorded_at=now,
        )
    )
    await conn.execute(
        update(t.penalty_notices)
        .where(t.penalty_notices.c.id == notice_id)
        .values(status=wf.NoticeStatus.PAID.value, paid_on=paid_on)
    )
    await write_history(
        conn,
        case.id,
        "payment",
        now,
        paid_on,
        by,
        f"£{due} paid",
        data={"notice_id": notice_id, "amount": due},
    )
    await _touch(conn, case.id, now)
    await refresh_deadlines(conn, case.id, await facts(conn, await case_row(conn, case.id)), policy)


async def withdraw_notice(
    conn: AsyncConnection,
    case: Row[Any],
    notice_id: str,
    reason: str,
    on: dt.date,
    by: str,
    policy: Policy,
    today: dt.date,
    now: dt.datetime,
) -> None:
    await lock_pupil(conn, case.upn)
    row = await notice_row(conn, case.id, notice_id)
    wf.withdraw(_notice(row), on, today)
    await conn.execute(
        update(t.penalty_notices)
        .where(t.penalty_notices.c.id == notice_id)
        .values(status=wf.NoticeStatus.WITHDRAWN.value, withdrawn_on=on, withdrawn_reason=reason)
    )
    await write_history(conn, case.id, "withdrawal", now, on, by, reason, data={"notice_id": notice_id})
    await _touch(conn, case.id, now)
    await refresh_deadlines(conn, case.id, await facts(conn, await case_row(conn, case.id)), policy)


async def add_record(
    conn: AsyncConnection,
    case: Row[Any],
    kind: wf.RecordKind,
    text_: str,
    on: dt.date,
    years: int | None,
    by: str,
    policy: Policy,
    today: dt.date,
    now: dt.datetime,
) -> str:
    await lock_pupil(conn, case.upn)
    case = await case_row(conn, case.id)
    f = await facts(conn, case)
    data = wf.check_record(f, kind, on, today, policy, years)
    record_id = str(uuid.uuid4())
    await conn.execute(
        t.records.insert().values(
            id=record_id,
            case_id=case.id,
            kind=kind.value,
            on=on,
            text=text_,
            data=data,
            recorded_by=by,
            recorded_at=now,
        )
    )
    await write_history(
        conn, case.id, "record", now, on, by, text_, data={"record_id": record_id, "kind": kind.value} | data
    )
    await _touch(conn, case.id, now)
    await refresh_deadlines(conn, case.id, await facts(conn, case), policy)
    return record_id


async def add_offence(
    conn: AsyncConnection,
    case: Row[Any],
    start: dt.date,
    end: dt.date,
    reason: str,
    by: str,
    policy: Policy,
    today: dt.date,
    now: dt.datetime,
) -> str:
    """An offence the LA records itself (SPEC §7: "or an LA-recorded offence"), from the register."""
    if case.state == wf.State.CLOSED:
        raise wf.Refused(wf.Rule.CASE_CLOSED, "the case is closed; open a new case")
    if end > today:
        raise wf.Refused(wf.Rule.DATE_IN_FUTURE, f"to {end} is after today ({today})")
    await lock_pupil(conn, case.upn)
    marks = await register_between(conn, case.upn, case.school_urn, start, end)
    counted = [m for m in marks if m["code"] in policy.penalty_threshold.codes]
    offence_id = str(uuid.uuid4())
    await conn.execute(
        t.offences.insert().values(
            id=offence_id,
            upn=case.upn,
            school_urn=case.school_urn,
            source="la",
            episode=None,
            met_on=end,
            period_from=start,
            period_to=end,
            sessions=len(counted),
            holiday_sessions=sum(1 for m in counted if m["code"] == "G"),
            first_absence=_date(counted[0]["date"]) if counted else None,
            last_absence=_date(counted[-1]["date"]) if counted else None,
            evidence=[[m["date"], m["session"], m["code"]] for m in counted],
            withdrawn=False,
            reason=reason,
            recorded_by=by,
            recorded_at=now,
        )
    )
    await write_history(
        conn,
        case.id,
        "offence",
        now,
        end,
        by,
        reason,
        data={"offence_id": offence_id, "from": start, "to": end, "sessions": len(counted)},
    )
    await _touch(conn, case.id, now)
    await refresh_deadlines(conn, case.id, await facts(conn, case), policy)
    return offence_id


async def set_details(
    conn: AsyncConnection,
    case: Row[Any],
    lead_officer: str | None,
    parents: list[tuple[str, str]] | None,
    by: str,
    today: dt.date,
    now: dt.datetime,
) -> None:
    """Assign the lead officer and add or rename parents (parents are never removed: notices name them)."""
    if case.state == wf.State.CLOSED:
        raise wf.Refused(wf.Rule.CASE_CLOSED, "the case is closed; open a new case")
    changes: dict[str, Any] = {}
    if lead_officer is not None and lead_officer != case.lead_officer:
        changes["lead_officer"] = lead_officer
    known = {
        r.parent_id: r.name
        for r in await conn.execute(select(t.parents).where(t.parents.c.case_id == case.id))
    }
    for pid, name in parents or []:
        if pid not in known:
            await conn.execute(t.parents.insert().values(case_id=case.id, parent_id=pid, name=name))
        elif known[pid] != name:
            p = t.parents.c
            await conn.execute(
                update(t.parents).where(and_(p.case_id == case.id, p.parent_id == pid)).values(name=name)
            )
        else:
            continue
        changes.setdefault("parents", []).append(pid)
    if not changes:
        return
    if "lead_officer" in changes:
        await _touch(conn, case.id, now, lead_officer=lead_officer)
    else:
        await _touch(conn, case.id, now)
    await write_history(conn, case.id, "details", now, today, by, "case details changed", data=changes)
