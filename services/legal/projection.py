"""Applying events from Kafka: the registry and register (ingest) and the signals (rules).

* ``rollcall.registry.v1``: schools (LA and type: who issues, independent/NMSS rules), calendars
  (school days for deadline announcements and Notice to Improve periods), pupils (date of birth for
  compulsory school age, parent ids, home and EHCP LA), care status (``cla``: no ESO).
* ``rollcall.marks.v1``: the register, kept for every pupil, for the evidence pack's register of
  the offence period (see tables.py for why every pupil).
* ``rollcall.signals.v1``: every signal is kept for the evidence pack. ``penalty_threshold_met``
  records an *offence* (its window, the day it was met and the counted sessions) and
  ``…_ended`` with ``withdrawn`` withdraws it (an amendment removed the absences).
  ``penalty_threshold_met`` and ``severe_absence_started`` open a case in ``support`` for an
  officer to review — dated the day the signal says it began, opened by ``system``, no lead
  officer, parents from the pupil record (names unknown until an officer adds them) — or, when the
  pupil already has an open case, are noted in its history. Nothing here ever issues a notice or
  moves a case. No case is opened for a pupil known not to be of compulsory school age that day.

Registry and register rows of a batch are written first, so a signal in the same batch sees them.
A malformed event is logged (type and id only) and skipped: retrying it would stall its partition.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.legal import cases
from services.legal import tables as t
from shared.csa import is_compulsory_school_age
from shared.db import upsert
from shared.events import CloudEvent, EventType
from shared.observability import error_fields
from shared.policy import Policy

OPENS_CASE = frozenset({"penalty_threshold_met", "severe_absence_started"})
# Signals noted in an open case's history (others are kept for the evidence pack only).
NOTED = OPENS_CASE | {
    "penalty_threshold_met_ended",
    "severe_absence_ended",
    "attendance_return_due",
    "sickness_return_due",
}
SYSTEM = "system"
log = structlog.get_logger()


def _iso(value: Any) -> Any:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(value)


class SignalData(BaseModel):
    """The part of a ``signal.*`` event's data the legal service relies on (rules' payload)."""

    model_config = ConfigDict(extra="ignore")

    signal: str
    upn: str
    school_urn: str
    episode: str
    started_on: dt.date
    ended_on: dt.date | None = None
    occurred_on: dt.date | None = None
    withdrawn: bool = False
    detail: dict[str, Any] = {}
    evidence: list[list[Any]] = []


@dataclass
class Batch:
    """One consumed batch: registry and register rows to upsert, then the signals in order."""

    register: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    schools: dict[str, dict[str, Any]] = field(default_factory=dict)
    calendars: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pupils: dict[str, dict[str, Any]] = field(default_factory=dict)
    enrolments: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    care: dict[str, dict[str, Any]] = field(default_factory=dict)
    signals: list[tuple[str, SignalData]] = field(default_factory=list)  # (event id, data)

    def add(self, event: CloudEvent) -> None:
        """Add the event's rows; raises ``KeyError``/``ValueError``/``ValidationError`` if malformed."""
        d = event.data
        if event.type in (EventType.MARK_RECORDED, EventType.MARK_AMENDED):
            self.register[(d["upn"], d["school_urn"], d["date"], d["session"])] = {
                "upn": d["upn"],
                "school_urn": d["school_urn"],
                "date": _iso(d["date"]),
                "session": d["session"],
                "code": d["code"],
                "category": d["category"],
            }
        elif event.type == EventType.PUPIL_UPDATED:
            self.pupils[d["upn"]] = {
                "upn": d["upn"],
                "date_of_birth": _iso(d["date_of_birth"]),
                "home_la_code": d["home_la_code"],
                "ehcp_la_code": d.get("ehcp_la_code"),
                "parent_ids": [str(p) for p in d.get("parent_ids") or []],
            }
            self.enrolments[(d["upn"], d["school_urn"])] = {
                "upn": d["upn"],
                "school_urn": d["school_urn"],
                "admission_date": _iso(d["admission_date"]),
                "leaving_date": _iso(d.get("leaving_date")),
            }
        elif event.type == EventType.CARE_UPDATED:
            self.care[d["upn"]] = {"upn": d["upn"], "cla": bool(d["cla"])}
        elif event.type == EventType.SCHOOL_UPDATED:
            self.schools[d["urn"]] = {k: d[k] for k in ("urn", "name", "la_code", "phase", "type")}
        elif event.type == EventType.CALENDAR_UPDATED:
            self.calendars[(d["school_urn"], d["year"])] = {
                "school_urn": d["school_urn"],
                "year": d["year"],
                "terms": d["terms"],
                "closed": d["closed"],
            }
        elif event.type.startswith("signal."):
            self.signals.append((event.id, SignalData.model_validate(d)))


async def apply(
    conn: AsyncConnection, events: list[CloudEvent], policy: Policy, now: dt.datetime
) -> set[str]:
    """Store the effects of ``events`` (already de-duplicated by the inbox); the case ids touched."""
    batch = Batch()
    for event in events:
        try:
            batch.add(event)
        except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            # A malformed event must not stall the partition (the batch would be retried forever).
            log.error("event_malformed", event_type=event.type, event_id=event.id, **error_fields(exc))
    await upsert(conn, t.schools, list(batch.schools.values()), ["urn"])
    await upsert(conn, t.calendars, list(batch.calendars.values()), ["school_urn", "year"])
    await upsert(conn, t.pupils, list(batch.pupils.values()), ["upn"])
    await upsert(conn, t.enrolments, list(batch.enrolments.values()), ["upn", "school_urn"])
    await upsert(conn, t.care, list(batch.care.values()), ["upn"])
    await upsert(conn, t.register, list(batch.register.values()), ["upn", "school_urn", "date", "session"])
    await _add_parents(conn, batch.pupils)
    touched: set[str] = set()
    for event_id, signal in batch.signals:
        case_id = await apply_signal(conn, event_id, signal, policy, now)
        if case_id:
            touched.add(case_id)
    return touched


async def apply_signal(
    conn: AsyncConnection, event_id: str, signal: SignalData, policy: Policy, now: dt.datetime
) -> str | None:
    """Keep the signal, record or withdraw its offence, open or note the pupil's case."""
    name, upn, urn, episode = signal.signal, signal.upn, signal.school_urn, signal.episode
    occurred_on = signal.occurred_on or signal.started_on
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    await conn.execute(
        insert(t.signals)
        .values(
            id=event_id,
            type=name,
            upn=upn,
            school_urn=urn,
            episode=episode,
            occurred_on=occurred_on,
            withdrawn=signal.withdrawn,
            detail=signal.detail,
            evidence=signal.evidence,
            received_at=now,
        )
        .on_conflict_do_nothing()
    )
    await cases.lock_pupil(conn, upn)
    if name == "penalty_threshold_met":
        await _record_offence(conn, signal, now)
    elif name == "penalty_threshold_met_ended":
        o = t.offences.c
        values: dict[str, Any] = {"withdrawn": True} if signal.withdrawn else {"ended_on": signal.ended_on}
        await conn.execute(update(t.offences).where(o.upn == upn, o.episode == episode).values(**values))
    if name not in NOTED:
        return None
    case = await cases.open_case_of(conn, upn)
    if case is None:
        if name not in OPENS_CASE or not await _compulsory_age(conn, upn, occurred_on):
            return None
        parent_ids = (
            await conn.execute(select(t.pupils.c.parent_ids).where(t.pupils.c.upn == upn))
        ).scalar_one_or_none() or []
        return await cases.open_case(
            conn,
            upn=upn,
            school_urn=urn,
            parents=[(str(p), "") for p in parent_ids],
            lead_officer=None,
            by=SYSTEM,
            opened_on=occurred_on,
            trigger=f"signal.{name}",
            reason=f"{name} on {occurred_on}: opened for officer review",
            policy=policy,
            now=now,
        )
    await cases.write_history(
        conn,
        case.id,
        "signal",
        now,
        occurred_on,
        SYSTEM,
        f"{name} on {occurred_on}",
        data={"signal": name, "episode": episode, "school_urn": urn, "signal_id": event_id},
    )
    await cases.refresh_deadlines(conn, case.id, await cases.facts(conn, case), policy)
    return str(case.id)


async def _record_offence(conn: AsyncConnection, signal: SignalData, now: dt.datetime) -> None:
    """The threshold episode as an offence: its window up to the day it was met, the counted sessions."""
    evidence = signal.evidence
    dates = sorted(_iso(x[0]) for x in evidence if x)
    met_on = signal.started_on
    o = t.offences.c
    existing = (
        await conn.execute(select(o.id).where(o.upn == signal.upn, o.episode == signal.episode))
    ).scalar_one_or_none()
    values = {
        "school_urn": signal.school_urn,
        "met_on": met_on,
        "period_from": _iso(signal.detail.get("window_from")) or (dates[0] if dates else met_on),
        "period_to": met_on,
        "sessions": int(signal.detail.get("sessions") or len(evidence)),
        "holiday_sessions": sum(1 for x in evidence if len(x) > 2 and x[2] == "G"),
        "first_absence": dates[0] if dates else None,
        "last_absence": dates[-1] if dates else None,
        "evidence": evidence,
        "withdrawn": False,  # a re-opened episode (an amendment brought it back) holds again
        "ended_on": None,
    }
    if existing is None:
        await conn.execute(
            t.offences.insert().values(
                id=str(uuid.uuid4()),
                upn=signal.upn,
                source="signal",
                episode=signal.episode,
                reason=None,
                recorded_by=SYSTEM,
                recorded_at=now,
                **values,
            )
        )
    else:
        await conn.execute(update(t.offences).where(o.id == existing).values(**values))


async def _add_parents(conn: AsyncConnection, pupils: dict[str, dict[str, Any]]) -> None:
    """Parents the registry names for a pupil with an open case join it (a signal can open the
    case before the pupil's record arrives: they are different topics). None is ever removed."""
    upns = sorted(u for u, p in pupils.items() if p["parent_ids"])
    for start in range(0, len(upns), 1000):
        chunk = upns[start : start + 1000]
        open_cases = (
            await conn.execute(
                select(t.cases.c.id, t.cases.c.upn).where(t.cases.c.upn.in_(chunk), t.cases.c.open)
            )
        ).all()
        for case_id, upn in open_cases:
            known = set(
                (
                    await conn.execute(select(t.parents.c.parent_id).where(t.parents.c.case_id == case_id))
                ).scalars()
            )
            new = [
                {"case_id": case_id, "parent_id": p, "name": ""}
                for p in pupils[upn]["parent_ids"]
                if p not in known
            ]
            if new:
                await conn.execute(t.parents.insert(), new)


async def _compulsory_age(conn: AsyncConnection, upn: str, on: dt.date) -> bool:
    """False only when the pupil is known and not of compulsory school age on ``on``."""
    dob = (
        await conn.execute(select(t.pupils.c.date_of_birth).where(t.pupils.c.upn == upn))
    ).scalar_one_or_none()
    return dob is None or is_compulsory_school_age(dob, on)
