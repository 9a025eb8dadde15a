"""Applying ingest's events to the rules service's copy of the registry and register.

Events arrive from two topics (marks and registry), so a mark may arrive before the pupil it
belongs to: every event is applied as it comes and the affected pupils are then recomputed from
whatever is stored, which gives the same result whatever order the events came in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.rules import tables as t
from shared.calendar import week_start
from shared.codes import CodeError, lookup
from shared.db import upsert
from shared.events import CloudEvent, EventType

WEEK_COUNTS = ("present", "aea", "authorised", "unauthorised", "not_counted")


@dataclass
class Changes:
    """What a batch of events touched: the pupils to recompute and the calendars to reload."""

    pupils: set[str] = field(default_factory=set)
    calendars: set[str] = field(default_factory=set)  # school URNs whose calendar changed


async def apply(conn: AsyncConnection, events: Iterable[CloudEvent]) -> Changes:
    """Store the effects of ``events`` (already de-duplicated by the inbox), in order."""
    changes = Changes()
    register: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    schools: dict[str, dict[str, Any]] = {}
    calendars: dict[tuple[str, str], dict[str, Any]] = {}
    pupils: dict[str, dict[str, Any]] = {}
    enrolments: dict[tuple[str, str], dict[str, Any]] = {}
    care: dict[str, dict[str, Any]] = {}
    days: dict[tuple[str, dt.date, str], dict[str, Any]] = {}
    weeks: dict[tuple[str, dt.date, str], dict[str, Any]] = {}

    def count(upn: str, urn: str, day: dt.date, code: str, category: str, n: int) -> None:
        monday = week_start(day)
        week = weeks.setdefault((urn, monday, upn), {"school_urn": urn, "week": monday, "upn": upn,
                                                     **dict.fromkeys(WEEK_COUNTS, 0)})  # fmt: skip
        week[category if category in WEEK_COUNTS else "not_counted"] += n
        row = days.setdefault((urn, day, code), {"school_urn": urn, "date": day, "code": code,
                                                 "category": category, "sessions": 0})  # fmt: skip
        row["sessions"] += n

    for event in events:
        d = event.data
        if event.type in (EventType.MARK_RECORDED, EventType.MARK_AMENDED):
            key = (d["upn"], d["school_urn"], d["date"], d["session"])
            day = _iso(d["date"])
            count(d["upn"], d["school_urn"], day, d["code"], d["category"], 1)
            if event.type == EventType.MARK_AMENDED and d.get("previous_code"):
                previous = d["previous_code"]
                count(d["upn"], d["school_urn"], day, previous, _category(previous, day), -1)
            register[key] = {
                "upn": d["upn"],
                "school_urn": d["school_urn"],
                "date": _iso(d["date"]),
                "session": d["session"],
                "code": d["code"],
                "category": d["category"],
            }
            changes.pupils.add(d["upn"])
        elif event.type == EventType.PUPIL_UPDATED:
            pupils[d["upn"]] = {
                "upn": d["upn"],
                "date_of_birth": _iso(d["date_of_birth"]),
                "sex": d.get("sex"),
                "home_la_code": d["home_la_code"],
                "ward": d.get("ward"),
                "fsm": d["fsm"],
                "sen": d["sen"],
                "ehcp_la_code": d.get("ehcp_la_code"),
            }
            enrolments[(d["upn"], d["school_urn"])] = {
                "upn": d["upn"],
                "school_urn": d["school_urn"],
                "year_group": d["year_group"],
                "admission_date": _iso(d["admission_date"]),
                "leaving_date": _iso(d.get("leaving_date")),
            }
            changes.pupils.add(d["upn"])
        elif event.type == EventType.CARE_UPDATED:
            ptt = d.get("part_time_timetable") or {}
            care[d["upn"]] = {
                "upn": d["upn"],
                **{k: bool(d[k]) for k in ("cin", "cp", "cla", "early_help", "etac")},
                "part_time_start": _iso(ptt.get("start")),
                "part_time_end": _iso(ptt.get("end")),
            }
            changes.pupils.add(d["upn"])
        elif event.type == EventType.SCHOOL_UPDATED:
            schools[d["urn"]] = {
                k: d.get(k) for k in ("urn", "name", "la_code", "phase", "type", "locality", "ward")
            }
        elif event.type == EventType.CALENDAR_UPDATED:
            calendars[(d["school_urn"], d["year"])] = {
                "school_urn": d["school_urn"],
                "year": d["year"],
                "terms": d["terms"],
                "closed": d["closed"],
            }
            changes.calendars.add(d["school_urn"])
    await upsert(conn, t.schools, list(schools.values()), ["urn"])
    await upsert(conn, t.calendars, list(calendars.values()), ["school_urn", "year"])
    await upsert(conn, t.pupils, list(pupils.values()), ["upn"])
    await upsert(conn, t.enrolments, list(enrolments.values()), ["upn", "school_urn"])
    await upsert(conn, t.care, list(care.values()), ["upn"])
    await upsert(conn, t.register, list(register.values()), ["upn", "school_urn", "date", "session"])
    await upsert(
        conn,
        t.register_days,
        [r for r in days.values() if r["sessions"]],
        ["school_urn", "date", "code"],
        add=("sessions",),
    )
    changed = [w for w in weeks.values() if any(w[c] for c in WEEK_COUNTS)]
    await upsert(conn, t.register_weeks, changed, ["school_urn", "week", "upn"], add=WEEK_COUNTS)  # fmt: skip
    if changes.calendars:
        rows = await conn.execute(
            select(t.enrolments.c.upn).where(t.enrolments.c.school_urn.in_(sorted(changes.calendars)))
        )
        changes.pupils.update(r.upn for r in rows)
    return changes


def _category(code: str, day: dt.date) -> str:
    """The statistical category of a code that ingest accepted for ``day`` (so it is known then)."""
    try:
        return lookup(code, day).category.value
    except CodeError:
        return "unknown"


def _iso(value: Any) -> Any:
    """ISO date strings from events as ``date`` objects (None stays None)."""
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(value)
