"""The rules service's background work: the Kafka consumer that recomputes pupils as marks and
registry changes arrive, and the scheduler for signals that the clock alone can raise
(``register_missing`` at the register deadline, ``unresolved_n`` after 5 school days,
``part_time_timetable_overdue``).
"""

from __future__ import annotations

import asyncio

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


async def handle(rt: Runtime, conn: AsyncConnection, events: list[CloudEvent]) -> None:
    changes = await projection.apply(conn, events)
    cache = calendar_cache(rt)
    cache.invalidate(changes.calendars)
    if changes.pupils:
        await recompute.recompute(conn, changes.pupils, rt.policy, cache, rt.today(), rt.now())


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
        outcome = await recompute.recompute(conn, upns, rt.policy, calendar_cache(rt), rt.today(), rt.now())
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
