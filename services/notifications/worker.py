"""The notifications service's background work: the Kafka consumer that turns signals and legal
deadlines into alerts, the delivery worker, and the escalation scheduler.

All three read time from the runtime's injectable clock. The scheduler sleeps until the earliest
pending escalation falls due (woken early when new first-day alerts are committed, and at least
every ``scheduler_seconds``, so a clock that jumps is noticed).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from services.notifications import alerts
from services.notifications import tables as t
from services.notifications.delivery import Deliverer
from services.notifications.feed import AlertFeed
from services.notifications.settings import NotificationSettings
from shared.consumer import InboxConsumer
from shared.db import try_lock
from shared.events import CloudEvent, Topic
from shared.observability import error_fields
from shared.service import Runtime

log = structlog.get_logger()


@dataclass
class Wiring:
    """This process's long-lived notification objects (kept in ``Runtime.state``)."""

    settings: NotificationSettings
    feed: AlertFeed = field(default_factory=AlertFeed)
    escalation_wake: asyncio.Event = field(default_factory=asyncio.Event)
    deliverer: Deliverer | None = None

    def committed(self, rt: Runtime) -> None:
        """After a commit that may have raised alerts: wake the relay, the queue, streams, scheduler."""
        rt.relay.wake()
        if self.deliverer is not None:
            self.deliverer.wake()
        self.feed.notify()
        self.escalation_wake.set()


def settings_of(rt: Runtime) -> NotificationSettings:
    settings = rt.settings
    assert isinstance(settings, NotificationSettings), "the notifications app builds NotificationSettings"
    return settings


def wiring(rt: Runtime) -> Wiring:
    found = rt.state.get("notifications")
    if found is None:
        found = rt.state["notifications"] = Wiring(settings_of(rt))
    assert isinstance(found, Wiring)
    return found


def context(rt: Runtime) -> alerts.Context:
    return alerts.Context(settings_of(rt), rt.policy, rt.now().astimezone(dt.UTC), rt.today())


class AlertConsumer(InboxConsumer):
    """The inbox consumer, telling ``after_commit`` as soon as the database transaction has
    committed rather than after the Kafka offset commit: the alerts are durable by then, so
    delivery need not wait for the broker's round trip."""

    async def apply(self, events: list[CloudEvent]) -> None:
        await super().apply(events)
        self._after_commit()


async def consume(rt: Runtime) -> None:
    wire = wiring(rt)

    async def on_events(conn: AsyncConnection, events: list[CloudEvent]) -> None:
        await alerts.handle_events(conn, context(rt), events)

    consumer = AlertConsumer(
        rt.settings.kafka_bootstrap,
        rt.settings.group,
        [Topic.SIGNALS, Topic.REGISTRY, Topic.LEGAL],
        rt.engine,
        t.inbox,
        on_events,
        after_commit=lambda: wire.committed(rt),
    )
    rt.state["consumer"] = consumer
    await consumer.run()


async def deliver(rt: Runtime) -> None:
    wire = wiring(rt)
    deliverer = Deliverer(rt.engine, wire.settings, rt.now, on_delivered=rt.relay.wake)
    wire.deliverer = deliverer
    await deliverer.run()


async def tick(rt: Runtime) -> alerts.Outcome:
    """Escalate what is due as of the runtime's clock."""
    async with rt.engine.begin() as conn:
        if not await try_lock(conn, "notifications:escalation"):
            return alerts.Outcome()  # another notifications process is escalating right now
        outcome = await alerts.escalate_due(conn, context(rt))
    if outcome.escalated:
        wiring(rt).committed(rt)
        log.info("alerts_escalated", episodes=outcome.escalated)
    return outcome


async def escalate(rt: Runtime) -> None:
    wire = wiring(rt)
    while True:
        wire.escalation_wake.clear()
        wait = rt.settings.scheduler_seconds
        try:
            outcome = await tick(rt)
            async with rt.reads.connect() as conn:
                due = await alerts.next_escalation(conn)
            if outcome.escalated:
                continue
            if due is not None:
                wait = min(wait, max(0.0, (due - rt.now()).total_seconds()) + 0.01)
        except Exception as exc:  # noqa: BLE001 - the next tick tries again
            log.error("escalation_tick_failed", **error_fields(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wire.escalation_wake.wait(), timeout=wait)
