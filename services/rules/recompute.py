"""Recomputing pupils: load each affected pupil's registry and register, run the pure engine,
store the year-to-date assessment, and turn changes in the episode list into signals.

Signals follow the episodes (SPEC §5): a new episode raises its signal once; an open episode that
ends, or one that an amendment made vanish, raises ``…_ended``; nothing is raised again while an
episode holds. Historic episodes found in a backfill are raised dated when they happened (and, if
already over, ended too). Per-session signals (first-day absence, register missing, unresolved N)
have no ``_ended`` unless an amendment withdraws them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import groupby
from typing import Any
from urllib.parse import quote

import orjson
import sqlalchemy
from sqlalchemy import Engine, Text, bindparam, cast, delete, event, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.rules import engine
from services.rules import tables as t
from shared.calendar import AcademicYear, Calendars, Closure, SchoolCalendar, Term
from shared.collector import tune_collector
from shared.db import (
    BoundRows,
    EncodedJSON,
    bind_rows,
    execute_bound,
    insert_rows,
    lock_pupils,
    offline_dialect,
    plain_insert,
    untouched_sqlite_file,
    upsert,
    upsert_statement,
)
from shared.events import CloudEvent, Topic, new_event, new_event_ids
from shared.outbox import enqueue, enqueue_rows, outbox_records, outbox_rows
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
    # The rows each school's Calendars was built from, as JSON bytes: what a worker process is sent
    # (a built Calendars pickles to ~300 KB and unpickles slowly; the rows are a few KB).
    specs: dict[str, bytes] = field(default_factory=dict)

    def invalidate(self, urns: Iterable[str]) -> None:
        for urn in urns:
            self.by_school.pop(urn, None)

    async def get(self, conn: AsyncConnection, urns: Iterable[str]) -> dict[str, Calendars]:
        now = time.monotonic()
        missing = sorted(
            {u for u in urns if u not in self.by_school or now - self.loaded_at[u] > self.ttl_seconds}
        )
        if missing:
            rows = await conn.execute(_calendars_query(missing))
            for urn, spec in calendar_specs(rows, missing).items():
                self.by_school[urn] = calendars_from_spec(spec)
                self.specs[urn] = spec
                self.loaded_at[urn] = now
        return {u: self.by_school[u] for u in urns}


def _calendars_query(urns: list[str]) -> Any:
    return select(t.calendars).where(t.calendars.c.school_urn.in_(urns))


def calendar_specs(rows: Iterable[Any], urns: Iterable[str]) -> dict[str, bytes]:
    """Each of ``urns``' calendar rows as JSON, ``[[year, terms, closed], …]`` (``calendars_from_spec``)."""
    found: dict[str, list[tuple[str, Any, Any]]] = defaultdict(list)
    for r in rows:
        found[r.school_urn].append((r.year, r.terms, r.closed))
    return {urn: orjson.dumps(sorted(found.get(urn, []), key=lambda row: row[0])) for urn in urns}


@lru_cache(maxsize=1024)
def calendars_from_spec(spec: bytes) -> Calendars:
    """A school's Calendars from its rows as JSON, ``[[year, terms, closed], …]``; memoised, so a
    worker process builds each school's once (and its engine's skeleton cache stays warm)."""
    return Calendars([calendar_from_row(year, terms, closed) for year, terms, closed in orjson.loads(spec)])


def calendar_from_row(year: str, terms: list[dict[str, str]], closed: list[dict[str, str]]) -> SchoolCalendar:
    return SchoolCalendar.build(
        AcademicYear.parse(year),
        tuple(Term(dt.date.fromisoformat(x["start"]), dt.date.fromisoformat(x["end"])) for x in terms),
        tuple(Closure(dt.date.fromisoformat(x["date"]), x["session"], x.get("reason", "")) for x in closed),
    )


def _register_json(dialect: str) -> Any:
    """An enrolment's register as one JSON object text, ``{"2024-09-03AM": "/", …}``."""
    key: Any = cast(t.register.c.date, Text).concat(t.register.c.session)
    folded = (
        func.json_object_agg(key, t.register.c.code)
        if dialect == "postgresql"
        else func.json_group_object(key, t.register.c.code)
    )
    return cast(folded, Text)  # text, not json: asyncpg would decode a json value itself


@lru_cache(maxsize=2)
def _pupils_query(dialect: str) -> Any:
    """``load_raw``'s query, built once per dialect (building it cost ~0.29 ms of a ~6 ms GET; one
    statement object also keeps SQLAlchemy's compiled-statement cache key memoised).

    One query for everything (a GET reads one pupil: each query costs ~1 ms of driver round
    trip). The hot path of a recompute is the register (~380 marks a pupil): the database folds
    each enrolment's register into one JSON object {"2024-09-03AM": code}, parsed by orjson in
    C, instead of a Python row (and a date, and a tuple) per mark; the engine reads it as
    IsoMarks. Pupils with no enrolment yet are left out (they wait for their registry record)."""
    p, c, e, r = t.pupils.c, t.care.c, t.enrolments.c, t.register.c
    folded = select(_register_json(dialect)).where(r.upn == e.upn, r.school_urn == e.school_urn)
    return (
        select(
            p.upn, p.date_of_birth, c.cin, c.cp, c.cla, c.early_help, c.etac, c.part_time_start,
            c.part_time_end, e.school_urn, e.admission_date, e.leaving_date, folded.scalar_subquery(),
        )
        .select_from(t.pupils.join(t.enrolments, e.upn == p.upn).outerjoin(t.care, c.upn == p.upn))
        .where(p.upn.in_(bindparam("upns", expanding=True)))
        .order_by(p.upn, e.school_urn)
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class RawPupil:
    """A pupil as read from the database, cheap to send to a worker process: each enrolment's
    register is still the JSON text the database folded it into (parsed where it is assessed)."""

    upn: str
    date_of_birth: dt.date
    care: engine.Care
    enrolments: tuple[tuple[str, dt.date, dt.date | None, str], ...]  # urn, admission, leaving, JSON


async def load_raw(
    conn: AsyncConnection, upns: list[str], cache: CalendarCache
) -> tuple[list[RawPupil], dict[str, Calendars]]:
    """Every pupil of ``upns`` whose registry record has arrived (others wait for it), and the
    calendars of their schools: one query per table per chunk of pupils, never one per pupil."""
    query = _pupils_query(conn.dialect.name)
    rows: list[Any] = []
    for start in range(0, len(upns), _CHUNK):
        rows += await conn.execute(query, {"upns": upns[start : start + _CHUNK]})
    calendars = await cache.get(conn, {row.school_urn for row in rows})
    return raw_pupils(rows), calendars


def raw_pupils(rows: list[Any]) -> list[RawPupil]:
    """``_pupils_query``'s rows (ordered by pupil) as one ``RawPupil`` each."""
    raws: list[RawPupil] = []
    for upn, group in groupby(rows, key=lambda row: row.upn):
        enrolments = list(group)
        x = enrolments[0]
        raws.append(
            RawPupil(
                upn,
                x.date_of_birth,
                engine.Care(
                    cin=bool(x.cin),
                    cp=bool(x.cp),
                    cla=bool(x.cla),
                    early_help=bool(x.early_help),
                    etac=bool(x.etac),
                    part_time_start=x.part_time_start,
                    part_time_end=x.part_time_end,
                ),
                tuple((y.school_urn, y.admission_date, y.leaving_date, y[-1] or "{}") for y in enrolments),
            )
        )
    return raws


def pupil_input(raw: RawPupil, calendars: dict[str, Calendars]) -> engine.PupilInput:
    return engine.PupilInput(
        upn=raw.upn,
        date_of_birth=raw.date_of_birth,
        care=raw.care,
        enrolments=tuple(
            engine.EnrolmentRegister(
                urn, admission, leaving, calendars[urn], engine.IsoMarks(orjson.loads(text))
            )
            for urn, admission, leaving, text in raw.enrolments
        ),
    )


async def load_inputs(
    conn: AsyncConnection, upns: list[str], cache: CalendarCache
) -> dict[str, engine.PupilInput]:
    """The engine's input for each pupil whose registry record has arrived (others wait for it)."""
    raws, calendars = await load_raw(conn, upns, cache)
    return {r.upn: pupil_input(r, calendars) for r in raws}


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
    event_id: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The signal's row for GET /v1/signals and its CloudEvent (``key``: the episode's; a fresh
    event id unless one of a batch made together, ``new_event_ids``, is given).

    The data is encoded once, for the row (``EncodedJSON``) and inside the event (an orjson
    ``Fragment``): with its evidence it is most of both, ~600 bytes a signal."""
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
        "evidence": ep.evidence,
    }
    encoded = orjson.dumps(data)
    event = new_event(f"signal.{name}", SOURCE, {}, subject=upn, event_id=event_id)
    event["data"] = orjson.Fragment(encoded)
    row = {
        "id": event["id"],
        "type": name,
        "upn": upn,
        "school_urn": ep.school_urn,
        "episode_key": key,
        "occurred_on": occurred,
        "raised_at": now,
        "data": EncodedJSON(encoded),
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


@dataclass
class Writes:
    """What assessing a group of pupils against their stored episodes asks to be written."""

    assessments: list[dict[str, Any]] = field(default_factory=list)
    episodes: list[dict[str, Any]] = field(default_factory=list)
    vanished: list[tuple[str, str]] = field(default_factory=list)  # (upn, episode key) to delete
    signals: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[tuple[Any, ...]] = field(default_factory=list)  # ``outbox_rows``


ASSESSMENT_KEY = ("upn", "school_urn")
EPISODE_KEY = ("upn", "key")


@dataclass
class BoundWrites:
    """``Writes`` with their rows bound for the database's driver (``bind_writes``): made in a pool
    worker or a thread, so the service's process only executes them (``_store``)."""

    assessments: BoundRows
    episodes: BoundRows
    vanished: list[tuple[str, str]]
    signals: BoundRows
    outbox: list[tuple[Any, ...]]


def bind_writes(writes: Writes, dialect: str) -> BoundWrites:
    """``writes`` bound for ``dialect`` (the engine's name: ``sqlite``, ``postgresql``)."""
    d = offline_dialect(dialect)

    def bound_upsert(table: Any, key: tuple[str, ...], rows: list[dict[str, Any]]) -> BoundRows:
        return bind_rows(upsert_statement(dialect, table, key, tuple(rows[0]) if rows else ()), d, rows)

    return BoundWrites(
        assessments=bound_upsert(t.assessments, ASSESSMENT_KEY, writes.assessments),
        episodes=bound_upsert(t.episodes, EPISODE_KEY, writes.episodes),
        vanished=writes.vanished,
        signals=bind_rows(plain_insert(t.signals), d, writes.signals),
        outbox=writes.outbox,
    )


Stored = dict[str, dict[str, dict[str, Any]]]  # upn -> episode key -> the stored episode row


def assess_and_diff(
    raws: list[RawPupil],
    calendars: dict[str, Calendars],
    stored: Stored,
    policy: Policy,
    today: dt.date,
    now: dt.datetime,
) -> Writes:
    """Assess ``raws`` and turn the difference from their stored episodes into rows and signals.

    Pure apart from fresh event ids: it runs in a worker process for large groups (``recompute``'s
    ``pool``), so its arguments and result are plain picklable data."""
    out = Writes()
    raised: list[tuple[str, str, engine.Episode, str, bool]] = []  # made into signals at the end

    def emit(
        name: str, ep: engine.Episode, upn: str, withdrawn: bool = False, key: str | None = None
    ) -> None:
        raised.append((name, key or ep.key, ep, upn, withdrawn))

    no_episodes: dict[str, dict[str, Any]] = {}
    for raw in raws:
        upn = raw.upn
        before = stored.get(upn, no_episodes)
        current: set[str] = set()
        for a in engine.assess(pupil_input(raw, calendars), policy, today, now):
            out.assessments.append(assessment_row(a, now))
            for ep in a.episodes:
                key = ep.key
                current.add(key)
                old = before.get(key)
                if old is None:
                    emit(start_signal(ep.type), ep, upn)
                    if ep.ended_on is not None and ep.type in STARTED_ENDED:
                        emit(end_signal(ep.type), ep, upn)
                    out.episodes.append(_episode_row(ep, upn))
                elif old["ended_on"] is None and ep.ended_on is not None:
                    if ep.type not in ONCE_ONLY:
                        emit(end_signal(ep.type), ep, upn)
                    out.episodes.append(_episode_row(ep, upn))
                elif old["ended_on"] is not None and ep.ended_on is None:
                    emit(start_signal(ep.type), ep, upn)  # re-opened by an amendment: it holds again
                    out.episodes.append(_episode_row(ep, upn))
                elif old["ended_on"] != ep.ended_on or old["detail"] != dict(ep.detail):
                    out.episodes.append(_episode_row(ep, upn))
        for key in before.keys() - current:
            old = before[key]
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
            out.vanished.append((upn, key))
    events: list[tuple[str, dict[str, Any]]] = []
    for (name, key, ep, upn, withdrawn), event_id in zip(raised, new_event_ids(len(raised)), strict=True):
        row, event = _signal(name, key, ep, upn, now, today, withdrawn, event_id)
        out.signals.append(row)
        events.append((upn, event))
    out.outbox = outbox_rows(Topic.SIGNALS, events)
    return out


async def load_stored(conn: AsyncConnection, upns: list[str]) -> Stored:
    """The stored episodes of ``upns`` (episodes are per pupil)."""
    stored: Stored = defaultdict(dict)
    for start in range(0, len(upns), _CHUNK):
        add_stored(stored, await conn.execute(_episodes_query(upns[start : start + _CHUNK])))
    return stored


def _episodes_query(upns: list[str]) -> Any:
    return select(t.episodes).where(t.episodes.c.upn.in_(upns))


def add_stored(stored: Stored, rows: Iterable[Any]) -> None:
    for r in rows:
        stored[r.upn][r.key] = dict(r._mapping)


def _assess_in_worker(
    raws: list[RawPupil],
    specs: dict[str, bytes],
    stored: Stored,
    policy: Policy,
    today: dt.date,
    now: dt.datetime,
    dialect: str,
) -> BoundWrites:
    """``assess_and_diff`` in a worker process, its rows bound there (``bind_writes``); calendars
    sent as their rows (see CalendarCache)."""
    calendars = {urn: calendars_from_spec(spec) for urn, spec in specs.items()}
    return bind_writes(assess_and_diff(raws, calendars, stored, policy, today, now), dialect)


def _assessed(
    pupils: int,
    raws: list[RawPupil],
    specs: dict[str, bytes],
    stored: Stored,
    policy: Policy,
    today: dt.date,
    now: dt.datetime,
    dialect: str,
) -> tuple[int, BoundWrites]:
    """``_assess_in_worker``, with the count of pupils (as ``_read_and_assess_in_worker`` answers)."""
    return pupils, _assess_in_worker(raws, specs, stored, policy, today, now, dialect)


_READERS: dict[str, Engine] = {}  # in a pool process: a read-only engine per SQLite file


def _reader(path: str) -> Engine:
    """A read-only engine on the SQLite file ``path`` (made once per pool process): transactions
    are opened and ended by hand (``_read_part``), each a WAL snapshot that never takes a lock."""
    found = _READERS.get(path)
    if found is None:
        if len(_READERS) >= 4:  # a process serves one database; tests make many
            for stale in _READERS.values():
                stale.dispose()
            _READERS.clear()
        found = sqlalchemy.create_engine(
            f"sqlite:///file:{quote(path)}?mode=ro&uri=true", json_deserializer=orjson.loads
        )

        @event.listens_for(found, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # BEGIN and ROLLBACK by hand
            dbapi_connection.execute("PRAGMA busy_timeout=30000")

        _READERS[path] = found
    return found


def _read_part(path: str, upns: list[str]) -> tuple[list[RawPupil], dict[str, bytes], Stored]:
    """``upns``' registry, registers, schools' calendars (as specs) and stored episodes, read from
    the SQLite file ``path`` in one snapshot (see ``untouched_sqlite_file``)."""
    with _reader(path).connect() as c:
        c.exec_driver_sql("BEGIN")
        try:
            rows = list(c.execute(_pupils_query("sqlite"), {"upns": upns}))
            urns = sorted({row.school_urn for row in rows})
            specs = calendar_specs(c.execute(_calendars_query(urns)), urns)
            stored: Stored = defaultdict(dict)
            add_stored(stored, c.execute(_episodes_query(upns)))
        finally:
            c.exec_driver_sql("ROLLBACK")
    return raw_pupils(rows), specs, stored


def _read_and_assess_in_worker(
    path: str, upns: list[str], policy: Policy, today: dt.date, now: dt.datetime
) -> tuple[int, BoundWrites]:
    """``_assess_in_worker`` on pupils this worker reads itself (``_read_part``): how many were
    found (those whose registry record has arrived), and their bound rows."""
    raws, specs, stored = _read_part(path, upns)
    return len(raws), _assess_in_worker(raws, specs, stored, policy, today, now, "sqlite")


def assessor_processes(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes for ``recompute``. ``forkserver`` processes, because forking
    a process that runs threads (aiosqlite's, the Kafka client's) is unsafe; each runs the cyclic
    collector as the services do (``tune_collector``)."""
    context = multiprocessing.get_context("forkserver")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_start_assessor)


def _start_assessor() -> None:
    """A pool process's start: unpickling this function imported this module and the engine (so the
    first task does not), then the collector is set as the services set it."""
    tune_collector()


_PART = 125
"""Pupils per task sent to the pool. Small enough that the workers finish a transaction's parts
close together: after the last one they wait while this process stores it and commits (whole
borough, 1,000 pupils a transaction, first pass: 30.5-35.1 s against 35.3-38.1 s with 250)."""
THREAD_MIN_PUPILS = 50  # a recompute of this many pupils or more assesses in a thread
PARALLEL_MIN_PUPILS = 200
"""Below this many pupils a recompute assesses them in the calling process: sending them to the
pool costs more than it saves (a live batch of a few marks, a GET)."""


async def recompute(
    conn: AsyncConnection,
    upns: Iterable[str],
    policy: Policy,
    cache: CalendarCache,
    today: dt.date,
    now: dt.datetime,
    pool: Executor | None = None,
) -> Outcome:
    """Recompute ``upns`` inside the caller's transaction; signals go to the outbox.

    The pupils are locked first (``lock_pupils``): with several rules processes on one database
    (partitions shared by a consumer group, a scheduler in each), two recomputes of one pupil —
    say a mark on one partition and its school's calendar change on another — are serialised,
    so an episode is never diffed twice against the same stored state (a signal published twice).

    With a ``pool`` (worker processes, ``worker.assessor_pool``) and at least
    ``PARALLEL_MIN_PUPILS`` pupils, the pure part — engine, diff, rows — is split across the
    pool's workers while this process reads and writes the database, inside the same transaction:
    the result is the same, on every core. On SQLite, when this transaction has written nothing
    yet (a scheduler tick, a whole-borough recompute; not a consumer's batch, which applies its
    marks first), the workers read their pupils too, each from its own connection to the file
    (``untouched_sqlite_file``), and this process only writes."""
    wanted = sorted(set(upns))
    await lock_pupils(conn, wanted)
    if pool is None or len(wanted) < PARALLEL_MIN_PUPILS:
        raws, calendars = await load_raw(conn, wanted, cache)
        if not raws:
            return Outcome()
        stored = await load_stored(conn, [r.upn for r in raws])
        dialect = conn.dialect.name

        def assess() -> BoundWrites:
            return bind_writes(assess_and_diff(raws, calendars, stored, policy, today, now), dialect)

        # In a thread for many pupils, so the service's event loop (its HTTP requests, the
        # first-day fast path) keeps getting the interpreter while thousands are assessed.
        writes = await asyncio.to_thread(assess) if len(raws) >= THREAD_MIN_PUPILS else assess()
        await _store(conn, writes)
        return Outcome(pupils=len(raws), signals=len(writes.signals.params))
    loop = asyncio.get_running_loop()
    parts = [wanted[start : start + _PART] for start in range(0, len(wanted), _PART)]
    futures: list[asyncio.Future[tuple[int, BoundWrites]]] = []
    outcome = Outcome()
    path = await untouched_sqlite_file(conn)
    if path is not None:
        # SQLite, nothing written yet in this transaction: the workers read their parts themselves
        # (what this transaction would read, see ``untouched_sqlite_file``), so this process only
        # writes. Reading the registers was most of its time, and it set the whole recompute's.
        futures = [
            loop.run_in_executor(pool, _read_and_assess_in_worker, path, part, policy, today, now)
            for part in parts
        ]
    else:
        # Read every part while the workers assess the first ones (all in this transaction).
        dialect = conn.dialect.name
        for part in parts:
            raws, _ = await load_raw(conn, part, cache)
            if not raws:
                continue
            stored = await load_stored(conn, [r.upn for r in raws])
            specs = {urn: cache.specs[urn] for urn in {e[0] for r in raws for e in r.enrolments}}
            futures.append(
                loop.run_in_executor(
                    pool, _assessed, len(raws), raws, specs, stored, policy, today, now, dialect
                )
            )
    # Store each part's rows as it comes back while the workers assess the next (parts in order).
    try:
        for future in futures:
            pupils, writes = await future
            await _store(conn, writes)
            outcome.pupils += pupils
            outcome.signals += len(writes.signals.params)
    finally:
        for future in futures:
            future.cancel()  # a failed part: the transaction rolls back, the rest is not wanted
    return outcome


async def _store(conn: AsyncConnection, writes: BoundWrites) -> None:
    """Write what ``bind_writes`` bound, signals to the outbox."""
    d = conn.dialect.name
    a, ep = writes.assessments, writes.episodes
    await execute_bound(conn, upsert_statement(d, t.assessments, ASSESSMENT_KEY, a.keys), a)
    await execute_bound(conn, upsert_statement(d, t.episodes, EPISODE_KEY, ep.keys), ep)
    e = t.episodes.c
    for upn, key in writes.vanished:
        await conn.execute(delete(t.episodes).where(e.upn == upn, e.key == key))
    await execute_bound(conn, plain_insert(t.signals), writes.signals)
    await enqueue_rows(conn, t.outbox, writes.outbox)


async def pupils_to_watch(conn: AsyncConnection) -> list[str]:
    """Pupils whose signals can change with the clock alone: an ``N`` in the register, a
    first-day response (register missing), or a part-time timetable."""
    reg, c = t.register.c, t.care.c
    with_n = select(reg.upn).where(reg.code == "N").distinct()
    watched = select(c.upn).where(c.cin | c.cp | c.cla | c.etac | c.part_time_start.is_not(None))
    rows = await conn.execute(with_n.union(watched))
    return [r[0] for r in rows]


FIRST_DAY = "first_day_absence"


async def first_day_candidates(
    conn: AsyncConnection, events: list[CloudEvent], today: dt.date
) -> list[CloudEvent]:
    """The mark events the first-day fast path must look at: today's, of pupils whose care status
    asks for a first-day response (a read; everything else is passed over without a write
    transaction). A present mark stays in (it may correct an absence in the same batch)."""
    day = today.isoformat()
    todays = [e for e in events if e.data.get("date") == day]
    if not any(e.data.get("code") in engine.ABSENCE_CODES for e in todays):
        return []
    c = t.care.c
    upns = sorted({e.data["upn"] for e in todays})
    rows = await conn.execute(select(c.upn).where(c.upn.in_(upns), or_(c.cin, c.cp, c.cla, c.etac)))
    vulnerable = {r.upn for r in rows}
    return [e for e in todays if e.data["upn"] in vulnerable]


async def first_day_now(
    conn: AsyncConnection,
    marks: Iterable[tuple[str, dict[str, Any]]],
    policy: Policy,
    cache: CalendarCache,
    today: dt.date,
    now: dt.datetime,
) -> Outcome:
    """Raise ``first_day_absence`` for today's absence marks at once, ahead of the full recompute.

    The first-day fast path (issue 8: a social worker alerted in a fraction of a second while the
    morning's marks queue up behind a backlog). ``marks`` are mark events as ``(event id, data)``,
    read by a consumer group of their own from ``rollcall.marks.v1`` (``first_day_candidates``
    has passed over those of pupils whose care status asks for no first-day response); marks not
    of today or not an absence cost nothing. For the rest the pupil is assessed by the same
    engine, on the stored register with these marks laid over it, and only the
    ``first_day_absence`` episodes of those sessions that are not stored yet are written, with their
    signals, exactly as ``assess_and_diff`` writes a new episode. The full recompute later finds the
    episode stored and raises nothing: pupils are locked (``lock_pupils``; SQLite's single writer)
    and both read the stored episodes inside their own write transaction, so a signal is raised
    once whichever comes first. Everything else (measures, other signals, an amendment that takes
    the absence back) stays with the full recompute.

    Which is newer, a session's stored code or the event's? The full consumer applies a pupil's
    events in partition order and records each event id in its inbox in the same transaction. So
    if the event (the session's latest in this batch) is in the inbox, the stored code is that
    event's or a later amendment's, and it stands; if not, nothing after it was applied either,
    and the event's code is laid over the stored one (an amendment from present to absent too).
    """
    day = today.isoformat()
    # upn -> (urn, ISO session key) -> (code, event id); a later event of the session wins
    latest: dict[str, dict[tuple[str, str], tuple[str, str]]] = defaultdict(dict)
    for event_id, m in marks:
        if m["date"] == day:
            latest[m["upn"]][(m["school_urn"], f"{day}{m['session']}")] = (m["code"], event_id)
    wanted = {
        upn: absent
        for upn, codes in latest.items()
        if (absent := {k: v for k, v in codes.items() if v[0] in engine.ABSENCE_CODES})
    }
    if not wanted:
        return Outcome()
    upns = sorted(wanted)  # the engine raises first_day_absence only where care status asks for it
    await lock_pupils(conn, upns)
    ids = [event_id for upn in upns for _, event_id in wanted[upn].values()]
    applied = {
        r.event_id for r in await conn.execute(select(t.inbox.c.event_id).where(t.inbox.c.event_id.in_(ids)))
    }
    raws, calendars = await load_raw(conn, upns, cache)
    stored = await load_stored(conn, upns)
    writes = Writes()
    events: list[tuple[str, dict[str, Any]]] = []
    for raw in raws:
        overlay = wanted[raw.upn]
        enrolments = []
        for urn, admission, leaving, text in raw.enrolments:
            register = orjson.loads(text)
            for (school, key), (code, event_id) in overlay.items():
                if school == urn and event_id not in applied:  # else the stored code is as new
                    register[key] = code
            enrolments.append((urn, admission, leaving, orjson.dumps(register).decode()))
        pupil = RawPupil(raw.upn, raw.date_of_birth, raw.care, tuple(enrolments))
        sessions = {(urn, key[len(day) :]) for urn, key in overlay}
        for a in engine.assess(pupil_input(pupil, calendars), policy, today, now):
            for ep in a.episodes:
                if (
                    ep.type != FIRST_DAY
                    or ep.started_on != today
                    or (a.school_urn, ep.detail.get("session")) not in sessions
                    or ep.key in stored.get(raw.upn, {})
                ):
                    continue
                row, event = _signal(start_signal(FIRST_DAY), ep.key, ep, raw.upn, now, today)
                writes.signals.append(row)
                events.append((raw.upn, event))
                writes.episodes.append(_episode_row(ep, raw.upn))
    if writes.episodes:
        await upsert(conn, t.episodes, writes.episodes, list(EPISODE_KEY))
        await insert_rows(conn, plain_insert(t.signals), writes.signals)
        await enqueue(conn, t.outbox, outbox_records(Topic.SIGNALS, events))
    return Outcome(pupils=len(raws), signals=len(writes.signals))
