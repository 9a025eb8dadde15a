"""Schools, calendars, pupil rosters and care status: the registry the rules are applied against.

Each write compares with what is stored and emits an event only for a real change, in the same
transaction as the change (outbox). A roster ``PUT`` upserts the pupils it lists — pupils it does
not list are left as they are, since leaving is recorded with ``leaving_date``, not by omission
(an MIS may send its roll in parts). A calendar ``PUT`` replaces that school's calendar for that
year; marks already recorded are kept whatever the new calendar says.

Events carry no names or postcodes: the other services need dates of birth (compulsory school
age), characteristics (cohort reports) and parent ids (penalty notices per parent), not names.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.ingest import tables as t
from services.ingest.schemas import CalendarIn, CareIn, PupilIn, RosterIn, RosterResult, SchoolIn
from shared.calendar import AcademicYear, CalendarError, Closure, SchoolCalendar, Term
from shared.csa import birthday
from shared.db import lock_school
from shared.events import EventType, Topic, new_event
from shared.outbox import enqueue, outbox_records
from shared.problems import Problem
from shared.upn import InvalidUPN, validate_upn

SOURCE = "/rollcall/ingest"


def _unprocessable(errors: list[dict[str, Any]]) -> Problem:
    return Problem(
        422, "validation", "Request is not valid", f"{len(errors)} invalid field(s)", errors=errors
    )


async def put_school(conn: AsyncConnection, urn: str, body: SchoolIn, now: dt.datetime) -> bool:
    """Create or replace a school; True if anything changed."""
    values = body.model_dump()
    row = (await conn.execute(select(t.schools).where(t.schools.c.urn == urn))).mappings().first()
    if row is not None and all(row[k] == v for k, v in values.items()):
        return False
    if row is None:
        await conn.execute(insert(t.schools).values(urn=urn, updated_at=now, **values))
    else:
        await conn.execute(update(t.schools).where(t.schools.c.urn == urn).values(updated_at=now, **values))
    data = {"urn": urn, **{k: v for k, v in values.items() if k != "postcode"}}
    await enqueue(
        conn,
        t.outbox,
        outbox_records(Topic.REGISTRY, [(urn, new_event(EventType.SCHOOL_UPDATED, SOURCE, data, urn))]),
    )
    return True


def build_calendar(year_label: str, body: CalendarIn) -> SchoolCalendar:
    """The validated calendar, or a 422 problem listing every error."""
    try:
        year = AcademicYear.parse(year_label)
        return SchoolCalendar.build(
            year,
            tuple(Term(x.start, x.end) for x in body.terms),
            tuple(Closure(x.date, x.session, x.reason) for x in body.closed),
        )
    except CalendarError as exc:
        raise _unprocessable(
            [{"index": None, "field": f, "code": "calendar", "detail": d} for f, d in exc.errors]
        ) from exc


async def put_calendar(
    conn: AsyncConnection, urn: str, year_label: str, body: CalendarIn, now: dt.datetime
) -> bool:
    build_calendar(year_label, body)
    terms = [{"start": x.start.isoformat(), "end": x.end.isoformat()} for x in body.terms]
    closed = [{"date": x.date.isoformat(), "session": x.session, "reason": x.reason} for x in body.closed]
    await lock_school(conn, urn)
    c = t.calendars.c
    row = (
        await conn.execute(select(c.terms, c.closed).where(c.school_urn == urn, c.year == year_label))
    ).first()
    if row is not None and row.terms == terms and row.closed == closed:
        return False
    if row is None:
        await conn.execute(
            insert(t.calendars).values(
                school_urn=urn, year=year_label, terms=terms, closed=closed, updated_at=now
            )
        )
    else:
        await conn.execute(
            update(t.calendars)
            .where(c.school_urn == urn, c.year == year_label)
            .values(terms=terms, closed=closed, updated_at=now)
        )
    data = {"school_urn": urn, "year": year_label, "terms": terms, "closed": closed}
    await enqueue(
        conn,
        t.outbox,
        outbox_records(Topic.REGISTRY, [(urn, new_event(EventType.CALENDAR_UPDATED, SOURCE, data, urn))]),
    )
    return True


def _roster_errors(pupils: list[PupilIn], today: dt.date) -> tuple[list[str], list[dict[str, Any]]]:
    """Normalised UPNs and every error of the roster (the roster is written whole or not at all)."""
    errors: list[dict[str, Any]] = []
    upns: list[str] = []
    seen: set[str] = set()

    def err(i: int, f: str, code: str, detail: str) -> None:
        errors.append({"index": i, "field": f"pupils.{i}.{f}", "code": code, "detail": detail})

    earliest_birth = birthday(today, -30)  # not today.replace(year=...): 29 February has no such day
    for i, p in enumerate(pupils):
        try:
            upn = validate_upn(p.upn)
        except InvalidUPN as exc:
            err(i, "upn", "upn", exc.detail)
            upn = p.upn
        if upn in seen:
            err(i, "upn", "duplicate", "the same UPN appears twice in this roster")
        seen.add(upn)
        upns.append(upn)
        if p.date_of_birth >= today or p.date_of_birth < earliest_birth:
            err(i, "date_of_birth", "date_range", "date of birth is not plausible for a pupil")
        if p.leaving_date is not None and p.leaving_date < p.admission_date:
            err(i, "leaving_date", "date_order", "leaving date is before the admission date")
        if p.sen != "ehcp" and p.ehcp_la_code is not None:
            err(i, "ehcp_la_code", "ehcp", "ehcp_la_code is only for pupils whose sen is ehcp")
        if len({x.id for x in p.parents}) != len(p.parents):
            err(i, "parents", "duplicate", "parent ids must be unique")
    return upns, errors


def _pupil_values(p: PupilIn) -> dict[str, Any]:
    return {
        "given_name": p.given_name,
        "family_name": p.family_name,
        "date_of_birth": p.date_of_birth,
        "sex": p.sex,
        "home_la_code": p.home_la_code,
        "home_postcode": p.home_postcode,
        "ward": p.ward,
        "fsm": p.fsm,
        "sen": p.sen,
        # The maintaining LA is normally the home LA when the MIS does not say.
        "ehcp_la_code": (p.ehcp_la_code or p.home_la_code) if p.sen == "ehcp" else None,
        "parents": [x.model_dump() for x in p.parents],
    }


def _enrolment_values(p: PupilIn) -> dict[str, Any]:
    return {"year_group": p.year_group, "admission_date": p.admission_date, "leaving_date": p.leaving_date}


async def put_roster(
    conn: AsyncConnection, urn: str, body: RosterIn, today: dt.date, now: dt.datetime
) -> RosterResult:
    upns, errors = _roster_errors(body.pupils, today)
    if errors:
        raise _unprocessable(errors)
    await lock_school(conn, urn)
    stored: dict[str, dict[str, Any]] = {}
    enrolled: dict[str, dict[str, Any]] = {}
    for start in range(0, len(upns), 2000):
        chunk = upns[start : start + 2000]
        for r in (await conn.execute(select(t.pupils).where(t.pupils.c.upn.in_(chunk)))).mappings():
            stored[r["upn"]] = dict(r)
        e = t.enrolments.c
        for r in (
            await conn.execute(select(t.enrolments).where(e.school_urn == urn, e.upn.in_(chunk)))
        ).mappings():
            enrolled[r["upn"]] = dict(r)

    created = updated = unchanged = 0
    new_pupils: list[dict[str, Any]] = []
    new_enrolments: list[dict[str, Any]] = []
    events: list[tuple[str, dict[str, Any]]] = []
    for upn, p in zip(upns, body.pupils, strict=True):
        pv, ev = _pupil_values(p), _enrolment_values(p)
        old_p, old_e = stored.get(upn), enrolled.get(upn)
        pupil_same = old_p is not None and all(old_p[k] == v for k, v in pv.items())
        enrol_same = old_e is not None and all(old_e[k] == v for k, v in ev.items())
        if pupil_same and enrol_same:
            unchanged += 1
            continue
        if old_p is None:
            new_pupils.append({"upn": upn, "updated_at": now, **pv})
        elif not pupil_same:
            await conn.execute(update(t.pupils).where(t.pupils.c.upn == upn).values(updated_at=now, **pv))
        if old_e is None:
            new_enrolments.append({"school_urn": urn, "upn": upn, "updated_at": now, **ev})
        elif not enrol_same:
            await conn.execute(
                update(t.enrolments)
                .where(t.enrolments.c.school_urn == urn, t.enrolments.c.upn == upn)
                .values(updated_at=now, **ev)
            )
        if old_e is None:
            created += 1
        else:
            updated += 1
        data = {
            "upn": upn,
            "school_urn": urn,
            "date_of_birth": p.date_of_birth.isoformat(),
            "sex": p.sex,
            "year_group": p.year_group,
            "home_la_code": p.home_la_code,
            "ward": p.ward,
            "admission_date": p.admission_date.isoformat(),
            "leaving_date": p.leaving_date.isoformat() if p.leaving_date else None,
            "fsm": p.fsm,
            "sen": p.sen,
            "ehcp_la_code": pv["ehcp_la_code"],
            "parent_ids": [x.id for x in p.parents],
        }
        events.append((upn, new_event(EventType.PUPIL_UPDATED, SOURCE, data, subject=upn)))
    if new_pupils:
        await conn.execute(insert(t.pupils), new_pupils)
    if new_enrolments:
        await conn.execute(insert(t.enrolments), new_enrolments)
    await enqueue(conn, t.outbox, outbox_records(Topic.REGISTRY, events))
    return RosterResult(created=created, updated=updated, unchanged=unchanged)


async def put_care(conn: AsyncConnection, upn: str, body: CareIn, now: dt.datetime) -> bool:
    """Record a pupil's care status (from a social-care system); True if it changed.

    Care status may arrive before the pupil is on any roll, so it is keyed by UPN alone.
    """
    ptt = body.part_time_timetable
    if ptt is not None and ptt.end is not None and ptt.end < ptt.start:
        raise _unprocessable(
            [
                {
                    "index": None,
                    "field": "part_time_timetable.end",
                    "code": "date_order",
                    "detail": "end is before start",
                }
            ]
        )
    values = {
        "cin": body.cin,
        "cp": body.cp,
        "cla": body.cla,
        "early_help": body.early_help,
        "etac": body.etac,
        "part_time_start": ptt.start if ptt else None,
        "part_time_end": ptt.end if ptt else None,
    }
    row = (await conn.execute(select(t.care).where(t.care.c.upn == upn))).mappings().first()
    if row is not None and all(row[k] == v for k, v in values.items()):
        return False
    if row is None:
        await conn.execute(insert(t.care).values(upn=upn, updated_at=now, **values))
    else:
        await conn.execute(update(t.care).where(t.care.c.upn == upn).values(updated_at=now, **values))
    data = {
        "upn": upn,
        **{k: values[k] for k in ("cin", "cp", "cla", "early_help", "etac")},
        "part_time_timetable": (
            {"start": ptt.start.isoformat(), "end": ptt.end.isoformat() if ptt.end else None} if ptt else None
        ),
    }
    await enqueue(
        conn,
        t.outbox,
        outbox_records(Topic.REGISTRY, [(upn, new_event(EventType.CARE_UPDATED, SOURCE, data, upn))]),
    )
    return True


def valid_upn_or_422(value: str) -> str:
    try:
        return validate_upn(value)
    except InvalidUPN as exc:
        raise _unprocessable([{"index": None, "field": "upn", "code": "upn", "detail": exc.detail}]) from exc
