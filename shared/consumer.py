"""Consuming Kafka with the inbox: apply a batch of events and record their ids in one
transaction, then commit the offsets (ARCHITECTURE principle 3).

A consumer that dies after its transaction but before committing offsets gets the same events
again; the inbox makes them no-ops. A record that is not a valid CloudEvent is logged (by topic,
partition and offset only) and skipped, so one bad record cannot stall a partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiokafka import AIOKafkaConsumer
from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import kafka
from shared.events import CloudEvent, decode
from shared.inbox import first_times

log = structlog.get_logger()
CONSUMED = Counter("rollcall_events_consumed_total", "Events applied from Kafka", ["group", "topic"])

Handler = Callable[[AsyncConnection, list[CloudEvent]], Awaitable[None]]


class InboxConsumer:
    def __init__(
        self,
        bootstrap: str,
        group: str,
        topics: list[str],
        engine: AsyncEngine,
        inbox: Table,
        handle: Handler,
        after_commit: Callable[[], None] = lambda: None,
        max_records: int = 5000,
    ) -> None:
        self._consumer: AIOKafkaConsumer = kafka.consumer(bootstrap, group, *topics)
        self._group = group
        self._engine = engine
        self._inbox = inbox
        self._handle = handle
        self._after_commit = after_commit
        self._max_records = max_records
        self.caught_up = asyncio.Event()

    async def _start(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._consumer.start()
                return
            except Exception as exc:  # noqa: BLE001 - the broker may not be up yet
                log.warning("consumer_start_retry", group=self._group, error_type=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def run(self) -> None:
        try:
            await self._start()
            while True:
                batch = await self._consumer.getmany(timeout_ms=200, max_records=self._max_records)
                if not batch:
                    self.caught_up.set()
                    continue
                events: list[CloudEvent] = []
                for tp, records in batch.items():
                    for rec in records:
                        try:
                            events.append(decode(rec.value))
                        except (ValidationError, ValueError):
                            log.error(
                                "event_undecodable", topic=tp.topic, partition=tp.partition, offset=rec.offset
                            )
                        CONSUMED.labels(self._group, tp.topic).inc()
                await self.apply(events)
                await self._consumer.commit()
                self._after_commit()
        finally:
            await self._consumer.stop()

    async def apply(self, events: list[CloudEvent]) -> None:
        """Apply the events not seen before, in one transaction; retried until it succeeds."""
        delay = 0.5
        while True:
            try:
                async with self._engine.begin() as conn:
                    fresh = await first_times(conn, self._inbox, [e.id for e in events])
                    once: list[CloudEvent] = []
                    for event in events:  # a republished event can appear twice in one batch
                        if event.id in fresh:
                            fresh.discard(event.id)
                            once.append(event)
                    await self._handle(conn, once)
                return
            except Exception as exc:  # noqa: BLE001 - keep the offsets; try again
                log.error("consumer_apply_retry", group=self._group, error_type=type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
