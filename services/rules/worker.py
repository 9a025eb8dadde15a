"""The rules service's background work: the Kafka consumer that recomputes pupils as marks and
registry changes arrive, and the scheduler for signals that the clock alone can raise
(``register_missing`` at the register deadline, ``unresolved_n`` after 5 school days,
``part_time_timetable_overdue``).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from services.rules import projection, recompute
from services.rules import tables as t
from shared import directory
from shared.consumer import InboxConsumer
from shared.db import try_lock
from shared.events import CloudEvent, Topic
from shared.observability import error_fields
from shared.service import Runtime

log = structlog.get_logger()


def calendar_cache(rt: Runtime) -> recompute.CalendarCache:
    cache = rt.state.get("calendars")
    if cache is None:
        cache = rt.state["calendars"] = recompute.CalendarCache()
    assert isinstance(cache, recompute.CalendarCache)
    return cache


def assessor_pool(rt: Runtime) -> Executor | None:
    """The worker processes large recomputes assess their pupils in (``assess_workers``), made on
    first use; None when the service is to use its own process only. ``forkserver`` processes,
    because forking a process that runs threads (aiosqlite's, the Kafka client's) is unsafe."""
    workers = int(getattr(rt.settings, "assess_workers", 0))
    if workers < 2:
        return None
    pool = rt.state.get("assessors")
    if pool is None:
        context = multiprocessing.get_context("forkserver")
        pool = rt.state["assessors"] = ProcessPoolExecutor(workers, mp_context=context)
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
    )
    rt.state["consumer"] = consumer
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
