"""Recomputing pupils: load each affected pupil's registry and register, run the pure engine,
store the year-to-date assessment, and turn changes in the episode list into signals.

Signals follow the episodes (SPEC §5): a new episode raises its signal once; an open episode that
ends, or one that an amendment made vanish, raises ``…_ended``; nothing is raised again while an
episode holds. Historic episodes found in a backfill are raised dated when they happened (and, if
already over, ended too). Per-session signals (first-day absence, register missing, unresolved N)
have no ``_ended`` unless an amendment withdraws them.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import String, delete, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncConnection

from services.rules import engine
from services.rules import tables as t
from shared.calendar import AcademicYear, Calendars, Closure, SchoolCalendar, Term
from shared.db import lock_pupils, upsert
from shared.events import Topic, new_event
from shared.outbox import enqueue, outbox_records
from shared.policy import Policy

SOURCE = "/rollcall/rules"
_CHUNK = 500
# Signals whose start and end are both announced; the rest are announced once.
STARTED_ENDED = {"persistent_absence", "severe_absence"}
ONCE_ONLY = {"band_changed"}


def start_signal(episode_type: str) -> str:
    return f"{episode_type}_started" if episode_type in STARTED_ENDED else episode_type


def end_signal(episode_type: str) -> str:
    return f"{episode_type}_ended"


@dataclass
class CalendarCache:
    """Each school's calendars, built once and dropped when this process applies a
    ``calendar.updated``. Entries also expire after ``ttl_seconds``, because with several rules
    instances (one per group of partitions) the instance that applies a calendar change is not
    always the one recomputing that school's pupils; the change itself triggers a recompute of
    the school's pupils, so the window is small."""

    by_school: dict[str, Calendars] = field(default_factory=dict)
    loaded_at: dict[str, float] = field(default_factory=dict)
    ttl_seconds: float = 60.0

    def invalidate(self, urns: Iterable[str]) -> None:
        for urn in urns:
            self.by_school.pop(urn, None)

    async def get(self, conn: AsyncConnection, urns: Iterable[str]) -> dict[str, Calendars]:
        now = time.monotonic()
        missing = sorted(
            {u for u in urns if u not in self.by_school or now - self.loaded_at[u] > self.ttl_seconds}
        )
        if missing:
            rows = await conn.execute(select(t.calendars).where(t.calendars.c.school_urn.in_(missing)))
            built: dict[str, list[SchoolCalendar]] = defaultdict(list)
            for r in rows:
                built[r.school_urn].append(calendar_from_row(r.year, r.terms, r.closed))
            for urn in missing:
                self.by_school[urn] = Calendars(built.get(urn, []))
                self.loaded_at[urn] = now
        return {u: self.by_school[u] for u in urns}


def calendar_from_row(year: str, terms: list[dict[str, str]], closed: list[dict[str, str]]) -> SchoolCalendar:
    return SchoolCalendar.build(
        AcademicYear.parse(year),
        tuple(Term(dt.date.fromisoformat(x["start"]), dt.date.fromisoformat(x["end"])) for x in terms),
        tuple(Closure(dt.date.fromisoformat(x["date"]), x["session"], x.get("reason", "")) for x in closed),
    )


async def load_inputs(
    conn: AsyncConnection, upns: list[str], cache: CalendarCache
) -> dict[str, engine.PupilInput]:
    """The engine's input for each pupil whose registry record has arrived (others wait for it)."""
    pupils: dict[str, Any] = {}
    care: dict[str, Any] = {}
    enrolled: dict[str, list[Any]] = defaultdict(list)
    marks: dict[tuple[str, str], dict[tuple[dt.date, str], str]] = defaultdict(dict)
    for start in range(0, len(upns), _CHUNK):
        chunk = upns[start : start + _CHUNK]
        for r in await conn.execute(select(t.pupils).where(t.pupils.c.upn.in_(chunk))):
            pupils[r.upn] = r
        for r in await conn.execute(select(t.care).where(t.care.c.upn.in_(chunk))):
            care[r.upn] = r
        for r in await conn.execute(select(t.enrolments).where(t.enrolments.c.upn.in_(chunk))):
            enrolled[r.upn].append(r)
        reg = t.register.c
        # The hot loop of a recompute (380 rows a pupil): plain tuples, and dates parsed with
        # the C ``fromisoformat`` rather than SQLAlchemy's per-row processor on SQLite.
        raw_date = type_coerce(reg.date, String)
        result = await conn.execute(
            select(reg.upn, reg.school_urn, raw_date, reg.session, reg.code).where(reg.upn.in_(chunk))
        )
        fromiso = dt.date.fromisoformat
        for upn, urn, day, session, code in result:
            marks[(upn, urn)][day if isinstance(day, dt.date) else fromiso(day), session] = code
    calendars = await cache.get(conn, {e.school_urn for rows in enrolled.values() for e in rows})
    inputs: dict[str, engine.PupilInput] = {}
    for upn, p in pupils.items():
        if not enrolled.get(upn):
            continue
        c = care.get(upn)
        inputs[upn] = engine.PupilInput(
            upn=upn,
            date_of_birth=p.date_of_birth,
            care=engine.Care(
                cin=bool(c and c.cin),
                cp=bool(c and c.cp),
                cla=bool(c and c.cla),
                early_help=bool(c and c.early_help),
                etac=bool(c and c.etac),
                part_time_start=c.part_time_start if c else None,
                part_time_end=c.part_time_end if c else None,
            ),
            enrolments=tuple(
                engine.EnrolmentRegister(
                    school_urn=e.school_urn,
                    admission_date=e.admission_date,
                    leaving_date=e.leaving_date,
                    calendars=calendars[e.school_urn],
                    marks=marks.get((upn, e.school_urn), {}),
                )
                for e in sorted(enrolled[upn], key=lambda e: e.school_urn)
            ),
        )
    return inputs


def assessment_row(a: engine.Assessment, now: dt.datetime) -> dict[str, Any]:
    m = a.measures
    s = m.sessions
    start, end = a.period
    return {
        "upn": a.upn,
        "school_urn": a.school_urn,
        "period_from": start,
        "period_to": end,
        "possible": s.possible,
        "present": s.present,
        "aea": s.aea,
        "authorised": s.authorised,
        "unauthorised": s.unauthorised,
        "not_counted": s.not_counted,
        "holiday": m.code_counts.get("G", 0),
        "part_time": m.code_counts.get("C2", 0),
        "attendance_rate": m.attendance_rate,
        "band": a.band.value if a.band is not None else None,
        "persistent_absence": m.persistent_absence,
        "severe_absence": m.severe_absence,
        "compulsory_school_age": a.compulsory_school_age,
        "penalty_unauthorised": a.penalty_window.unauthorised_sessions,
        "penalty_threshold_met": a.penalty_window.threshold_met,
        "continuous_unauthorised_days": a.continuous_unauthorised_days,
        "illness_days": a.illness_days,
        "computed_at": now,
    }


def _signal(
    name: str,
    key: str,
    ep: engine.Episode,
    upn: str,
    now: dt.datetime,
    today: dt.date,
    withdrawn: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The signal's row for GET /v1/signals and its CloudEvent (``key``: the episode's)."""
    occurred = ep.ended_on if name.endswith("_ended") and ep.ended_on else ep.started_on
    data = {
        "signal": name,
        "upn": upn,
        "school_urn": ep.school_urn,
        "episode": key,
        "started_on": ep.started_on.isoformat(),
        "ended_on": ep.ended_on.isoformat() if ep.ended_on else None,
        "occurred_on": occurred.isoformat(),
        "current": occurred == today,
        "withdrawn": withdrawn,
        "detail": dict(ep.detail),
        # (date, session, code) triples; orjson writes the dates as ISO strings.
        "evidence": [list(x) for x in ep.evidence],
    }
    event = new_event(f"signal.{name}", SOURCE, data, subject=upn)
    row = {
        "id": event["id"],
        "type": name,
        "upn": upn,
        "school_urn": ep.school_urn,
        "episode_key": key,
        "occurred_on": occurred,
        "raised_at": now,
        "data": data,
    }
    return row, event


def _episode_row(ep: engine.Episode, upn: str) -> dict[str, Any]:
    return {
        "key": ep.key,
        "upn": upn,
        "school_urn": ep.school_urn,
        "type": ep.type,
        "started_on": ep.started_on,
        "ended_on": ep.ended_on,
        "detail": dict(ep.detail),
    }


@dataclass
class Outcome:
    pupils: int = 0
    signals: int = 0


async def recompute(
    conn: AsyncConnection,
    upns: Iterable[str],
    policy: Policy,
    cache: CalendarCache,
    today: dt.date,
    now: dt.datetime,
) -> Outcome:
    """Recompute ``upns`` inside the caller's transaction; signals go to the outbox.

    The pupils are locked first (``lock_pupils``): with several rules processes on one database
    (partitions shared by a consumer group, a scheduler in each), two recomputes of one pupil —
    say a mark on one partition and its school's calendar change on another — are serialised,
    so an episode is never diffed twice against the same stored state (a signal published twice)."""
    wanted = sorted(set(upns))
    await lock_pupils(conn, wanted)
    inputs = await load_inputs(conn, wanted, cache)
    if not inputs:
        return Outcome()
    stored: dict[tuple[str, str], dict[str, Any]] = {}  # (upn, episode key): episodes are per pupil
    keys = sorted(inputs)
    for start in range(0, len(keys), _CHUNK):
        rows = await conn.execute(
            select(t.episodes).where(t.episodes.c.upn.in_(keys[start : start + _CHUNK]))
        )
        for r in rows:
            stored[(r.upn, r.key)] = dict(r._mapping)

    assessment_rows: list[dict[str, Any]] = []
    episode_rows: list[dict[str, Any]] = []
    vanished: list[tuple[str, str]] = []
    signal_rows: list[dict[str, Any]] = []
    events: list[tuple[str, dict[str, Any]]] = []

    def emit(
        name: str, ep: engine.Episode, upn: str, withdrawn: bool = False, key: str | None = None
    ) -> None:
        row, event = _signal(name, key or ep.key, ep, upn, now, today, withdrawn)
        signal_rows.append(row)
        events.append((upn, event))

    by_upn_stored: dict[str, set[str]] = defaultdict(set)
    for upn, key in stored:
        by_upn_stored[upn].add(key)

    for upn, pupil in inputs.items():
        assessments = engine.assess(pupil, policy, today, now)
        current: set[str] = set()
        for a in assessments:
            assessment_rows.append(assessment_row(a, now))
            for ep in a.episodes:
                current.add(ep.key)
                old = stored.get((upn, ep.key))
                if old is None:
                    emit(start_signal(ep.type), ep, upn)
                    if ep.ended_on is not None and ep.type in STARTED_ENDED:
                        emit(end_signal(ep.type), ep, upn)
                    episode_rows.append(_episode_row(ep, upn))
                elif old["ended_on"] is None and ep.ended_on is not None:
                    if ep.type not in ONCE_ONLY:
                        emit(end_signal(ep.type), ep, upn)
                    episode_rows.append(_episode_row(ep, upn))
                elif old["ended_on"] is not None and ep.ended_on is None:
                    emit(start_signal(ep.type), ep, upn)  # re-opened by an amendment: it holds again
                    episode_rows.append(_episode_row(ep, upn))
                elif old["ended_on"] != ep.ended_on or old["detail"] != dict(ep.detail):
                    episode_rows.append(_episode_row(ep, upn))
        for key in by_upn_stored.get(upn, set()) - current:
            old = stored[(upn, key)]
            ep = engine.Episode(
                type=old["type"],
                school_urn=old["school_urn"],
                started_on=old["started_on"],
                ended_on=old["ended_on"] or today,
                evidence=(),
                detail=old["detail"],
            )
            if old["ended_on"] is None and old["type"] not in ONCE_ONLY:
                emit(end_signal(old["type"]), ep, upn, withdrawn=True, key=key)
            vanished.append((upn, key))

    await upsert(conn, t.assessments, assessment_rows, ["upn", "school_urn"])
    await upsert(conn, t.episodes, episode_rows, ["upn", "key"])
    e = t.episodes.c
    for upn, key in vanished:
        await conn.execute(delete(t.episodes).where(e.upn == upn, e.key == key))
    if signal_rows:
        await conn.execute(t.signals.insert(), signal_rows)
    await enqueue(conn, t.outbox, outbox_records(Topic.SIGNALS, events))
    return Outcome(pupils=len(inputs), signals=len(signal_rows))


async def pupils_to_watch(conn: AsyncConnection) -> list[str]:
    """Pupils whose signals can change with the clock alone: an ``N`` in the register, a
    first-day response (register missing), or a part-time timetable."""
    reg, c = t.register.c, t.care.c
    with_n = select(reg.upn).where(reg.code == "N").distinct()
    watched = select(c.upn).where(c.cin | c.cp | c.cla | c.etac | c.part_time_start.is_not(None))
    rows = await conn.execute(with_n.union(watched))
    return [r[0] for r in rows]
