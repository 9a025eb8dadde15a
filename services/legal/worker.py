"""The legal service's background work: the Kafka consumer (signals, registry, register) and the
deadline scheduler.

The scheduler announces each open deadline once, with ``deadline.approaching`` on
``rollcall.legal.v1``, on the ``deadline_lead_school_days``-th school day before it is due (the
school's calendar where known, else Monday–Friday; see ``clocks``) or at the first tick after,
as long as the deadline has not passed: a deadline that passed unannounced (created already late,
or the service was down) is shown as overdue rather than announced as approaching. The
announcement is recorded with the event in one transaction, so it is made once; a deadline whose
due date moves is announced again.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.legal import cases, projection
from services.legal import tables as t
from services.legal import workflow as wf
from services.legal.clocks import SchoolDays
from shared import directory
from shared.consumer import InboxConsumer
from shared.db import try_lock
from shared.events import CloudEvent, Topic
from shared.observability import error_fields
from shared.service import Runtime

log = structlog.get_logger()

# Deadlines further off than this cannot be inside their announcement lead even across a summer
# holiday (10 school days ≈ 2 weeks, plus 7 weeks of holiday), so the scheduler skips them.
HORIZON = dt.timedelta(days=120)


async def consume(rt: Runtime) -> None:
    async def on_events(conn: AsyncConnection, events: list[CloudEvent]) -> None:
        await projection.apply(conn, events, rt.policy, rt.now())

    consumer = InboxConsumer(
        rt.settings.kafka_bootstrap,
        rt.settings.group,
        [Topic.SIGNALS, Topic.REGISTRY, Topic.MARKS],
        rt.engine,
        t.inbox,
        on_events,
        after_commit=rt.relay.wake,
    )
    rt.state["consumer"] = consumer
    await consumer.run()


async def tick(rt: Runtime) -> int:
    """Announce the deadlines whose announcement day has come, as of the runtime's clock."""
    today, now = rt.today(), rt.now()
    dl, c = t.deadlines.c, t.cases.c
    announced = 0
    async with rt.engine.begin() as conn:
        if not await try_lock(conn, "legal:scheduler"):
            return 0  # another legal process is announcing right now
        rows = (
            await conn.execute(
                select(t.deadlines, c.upn, c.school_urn, c.lead_officer, c.state)
                .join(t.cases, c.id == dl.case_id)
                .where(
                    dl.status == "open",
                    dl.announced_at.is_(None),
                    dl.due_on >= today,
                    dl.due_on <= today + HORIZON,
                )
                .order_by(dl.due_on, dl.id)
            )
        ).all()
        calendars: dict[str, SchoolDays] = {}
        for r in rows:
            days = calendars.get(r.school_urn)
            if days is None:
                days = calendars[r.school_urn] = await cases.school_days(conn, r.school_urn)
            announce = wf.announce_on(r.due_on, rt.policy, days)
            if announce > today:
                continue
            left = sum(
                1 for i in range((r.due_on - today).days) if days.is_school_day(today + dt.timedelta(days=i))
            )
            await cases.emit(
                conn,
                "deadline.approaching",
                r.case_id,
                {
                    "case_id": r.case_id,
                    "deadline_id": r.id,
                    "kind": r.kind,
                    "due_on": r.due_on,
                    "announce_on": announce,
                    "school_days_left": left,
                    "subject": r.subject,
                    "upn": r.upn,
                    "school_urn": r.school_urn,
                    "lead_officer": r.lead_officer,
                    "state": r.state,
                },
            )
            await conn.execute(update(t.deadlines).where(dl.id == r.id).values(announced_at=now))
            announced += 1
    if announced:
        rt.relay.wake()
    return announced


async def schedule(rt: Runtime) -> None:
    while True:
        await asyncio.sleep(rt.settings.scheduler_seconds)
        try:
            announced = await tick(rt)
            if announced:
                log.info("deadlines_announced", count=announced)
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
