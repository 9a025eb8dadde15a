"""The rules service's background work: the Kafka consumer that recomputes pupils as marks and
registry changes arrive, and the scheduler for signals that the clock alone can raise
(``register_missing`` at the register deadline, ``unresolved_n`` after 5 school days,
``part_time_timetable_overdue``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Executor

import structlog
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection

from services.rules import projection, recompute
from services.rules import tables as t
from shared import directory
from shared.consumer import InboxConsumer
from shared.db import Gate, try_lock
from shared.events import CloudEvent, EventType, Topic
from shared.observability import error_fields
from shared.service import Runtime

log = structlog.get_logger()
FAST_SIGNALS = Counter(
    "rollcall_first_day_fast_signals_total", "first_day_absence signals raised by the fast path"
)


def calendar_cache(rt: Runtime) -> recompute.CalendarCache:
    cache = rt.state.get("calendars")
    if cache is None:
        cache = rt.state["calendars"] = recompute.CalendarCache()
    assert isinstance(cache, recompute.CalendarCache)
    return cache


def assessor_pool(rt: Runtime) -> Executor | None:
    """The worker processes large recomputes assess their pupils in (``assess_workers``), made on
    first use (``recompute.assessor_processes``); None when the service is to use its own process
    only. One worker is a pipeline already: it assesses while this process reads and writes."""
    workers = int(getattr(rt.settings, "assess_workers", 0))
    if workers < 1:
        return None
    pool = rt.state.get("assessors")
    if pool is None:
        pool = rt.state["assessors"] = recompute.assessor_processes(workers)
    assert isinstance(pool, Executor)
    return pool


async def close_assessors(rt: Runtime) -> None:
    """A worker that only waits for shutdown, then stops the assessor processes."""
    try:
        await asyncio.Event().wait()
    finally:
        pool = rt.state.pop("assessors", None)
        if isinstance(pool, Executor):
            pool.shutdown(wait=False, cancel_futures=True)


PUPILS_PER_PART = 100
"""The live consumer's unit of work: a batch of marks is applied and recomputed this many pupils
at a time (~0.1–0.3 s on this machine), and its transaction is committed between two parts once
it has been open 0.25 s or (SQLite) the first-day fast path waits for the write lock, so that
path never waits behind a whole batch of a backlog (``InboxConsumer.apply_parts``)."""

_MARKS = (EventType.MARK_RECORDED, EventType.MARK_AMENDED)


def by_pupils(events: list[CloudEvent], per: int = PUPILS_PER_PART) -> list[list[CloudEvent]]:
    """``events`` cut into parts of at most ``per`` pupils, each pupil's events in one part and in
    their order. Parts applied one after another leave the same register and episodes as the
    whole batch at once: each part recomputes its pupils from what is then stored, and no pupil
    is in two parts. A batch holding anything but marks (a school's calendar, a pupil's care
    status: they touch other pupils) stays whole."""
    if any(e.type not in _MARKS for e in events):
        return [events]
    out: list[list[CloudEvent]] = []
    part_of: dict[str, int] = {}
    in_last = 0  # pupils in the last part
    for event in events:
        upn = event.data["upn"]
        part = part_of.get(upn)
        if part is None:
            if not out or in_last >= per:
                out.append([])
                in_last = 0
            part = part_of[upn] = len(out) - 1
            in_last += 1
        out[part].append(event)
    return out


def write_gate(rt: Runtime) -> tuple[Gate, Gate, Callable[[], bool]]:
    """The (bulk, urgent) gates of the live consumer and the first-day fast path, and whether an
    urgent writer waits: the runtime's ``WriteGate`` on SQLite (the relay's deletes are urgent
    too); on PostgreSQL none (writers lock only the pupils they touch)."""
    if rt.engine.dialect.name != "sqlite":
        return contextlib.nullcontext, contextlib.nullcontext, lambda: False
    return rt.write_gate.bulk, rt.write_gate.urgent, rt.write_gate.waiting


async def handle(rt: Runtime, conn: AsyncConnection, events: list[CloudEvent]) -> None:
    changes = await projection.apply(conn, events)
    cache = calendar_cache(rt)
    cache.invalidate(changes.calendars)
    if changes.pupils:
        await recompute.recompute(
            conn, changes.pupils, rt.policy, cache, rt.today(), rt.now(), pool=assessor_pool(rt)
        )


async def consume(rt: Runtime) -> None:
    async def on_events(conn: AsyncConnection, events: list[CloudEvent]) -> None:
        await handle(rt, conn, events)

    consumer = InboxConsumer(
        rt.settings.kafka_bootstrap,
        rt.settings.group,
        [Topic.MARKS, Topic.REGISTRY],
        rt.engine,
        t.inbox,
        on_events,
        after_commit=rt.relay.wake,
        split=by_pupils,
        gate=write_gate(rt)[0],
        commit_when=write_gate(rt)[2],
    )
    rt.state["consumer"] = consumer
    await consumer.run()


async def consume_first_day(rt: Runtime) -> None:
    """The first-day fast path (``recompute.first_day_now``): its own consumer group on the marks
    topic, so a looked-after child's absence this morning is signalled within a moment even while
    the full consumer works through a backlog of the borough's marks. Idempotent without an
    inbox: an episode already stored raises nothing."""

    if not getattr(rt.settings, "first_day_fast_path", True):
        return

    async def candidates(events: list[CloudEvent]) -> list[CloudEvent]:
        marks = [e for e in events if e.type in (EventType.MARK_RECORDED, EventType.MARK_AMENDED)]
        async with rt.reads.connect() as conn:  # a read: no write lock taken for the rest
            return await recompute.first_day_candidates(conn, marks, rt.today())

    async def on_events(conn: AsyncConnection, events: list[CloudEvent]) -> None:
        marks = [(e.id, e.data) for e in events]
        outcome = await recompute.first_day_now(
            conn, marks, rt.policy, calendar_cache(rt), rt.today(), rt.now()
        )
        if outcome.signals:
            FAST_SIGNALS.inc(outcome.signals)

    consumer = InboxConsumer(
        rt.settings.kafka_bootstrap,
        f"{rt.settings.group}.first-day",
        [Topic.MARKS],
        rt.engine,
        None,
        on_events,
        after_commit=rt.relay.wake,
        prepare=candidates,
        gate=write_gate(rt)[1],
    )
    await consumer.run()


async def tick(rt: Runtime) -> recompute.Outcome:
    """Recompute the pupils whose signals can change with time alone, as of the runtime's clock."""
    async with rt.engine.begin() as conn:
        if not await try_lock(conn, "rules:scheduler"):
            return recompute.Outcome()  # another rules process is ticking right now
        upns = await recompute.pupils_to_watch(conn)
        outcome = await recompute.recompute(
            conn, upns, rt.policy, calendar_cache(rt), rt.today(), rt.now(), pool=assessor_pool(rt)
        )
    if outcome.signals:
        rt.relay.wake()
    return outcome


async def schedule(rt: Runtime) -> None:
    while True:
        await asyncio.sleep(rt.settings.scheduler_seconds)
        try:
            outcome = await tick(rt)
            log.info("scheduler_tick", pupils=outcome.pupils, signals=outcome.signals)
        except Exception as exc:  # noqa: BLE001 - the next tick tries again
            log.error("scheduler_tick_failed", **error_fields(exc))


def setup_directory(rt: Runtime) -> None:
    directory.directory_of(rt.state, t.directory)


async def consume_directory(rt: Runtime) -> None:
    """Keep the local copy of notifications' directory (who is a social worker) current."""
    await directory.consume(
        rt.settings.kafka_bootstrap,
        rt.settings.group,
        rt.engine,
        t.inbox,
        directory.directory_of(rt.state, t.directory),
    )
