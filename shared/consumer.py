"""Consuming Kafka with the inbox: apply a batch of events and record their ids in one
transaction, then commit the offsets (ARCHITECTURE principle 3).

A consumer that dies after its transaction but before committing offsets gets the same events
again; the inbox makes them no-ops. A record that is not a valid CloudEvent is logged (by topic,
partition and offset only) and skipped, so one bad record cannot stall a partition.

A batch the database refuses for its *data* (SQLSTATE class 22, data exception, or 23, integrity
violation — e.g. text holding U+0000, which PostgreSQL cannot store) is applied again one event
at a time, and an event refused on its own is logged by id and type and counted in
``rollcall_events_unapplicable_total`` (alert on it), then skipped: retrying cannot change its
data, and stalling the partition would stop every other pupil's events behind it — first-day
alerts included (the CI run of 23 Nov: a fuzzed name with U+0000 stopped the PostgreSQL
consumers). Every other failure (database down, deadlock, a bug) keeps the offsets and retries
with backoff, so nothing is skipped because of a transient fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog
from aiokafka import AIOKafkaConsumer
from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy import Table
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import kafka
from shared.db import Gate
from shared.events import CloudEvent, decode
from shared.inbox import first_times
from shared.observability import error_fields, sqlstate

log = structlog.get_logger()
CONSUMED = Counter("rollcall_events_consumed_total", "Events applied from Kafka", ["group", "topic"])
UNAPPLICABLE = Counter(
    "rollcall_events_unapplicable_total", "Events skipped: the database refused their data", ["group", "type"]
)
_DATA_ERRORS = ("22", "23")  # SQLSTATE classes: data exception, integrity constraint violation

Handler = Callable[[AsyncConnection, list[CloudEvent]], Awaitable[None]]


class InboxConsumer:
    def __init__(
        self,
        bootstrap: str,
        group: str,
        topics: list[str],
        engine: AsyncEngine,
        inbox: Table | None,
        handle: Handler,
        after_commit: Callable[[], None] = lambda: None,
        max_records: int = 5000,
        prepare: Callable[[list[CloudEvent]], Awaitable[list[CloudEvent]]] | None = None,
        split: Callable[[list[CloudEvent]], list[list[CloudEvent]]] | None = None,
        gate: Gate = contextlib.nullcontext,
        commit_when: Callable[[], bool] = lambda: False,
        part_seconds: float = 0.25,
    ) -> None:
        self._consumer: AIOKafkaConsumer = kafka.consumer(bootstrap, group, *topics)
        self._group = group
        self._engine = engine
        self._inbox = inbox
        self._handle = handle
        self._after_commit = after_commit
        # Picks the events worth a write transaction, before one is begun (without an inbox
        # only: the others are passed over; on SQLite every write transaction queues for the lock).
        self._prepare = prepare
        # Cuts a batch into parts, applied in order; the transaction is committed (and the next
        # begun) between two parts once it has been open ``part_seconds`` or ``commit_when()``
        # says another writer waits, so no transaction holds the database (or a pupil's lock)
        # for a whole large batch, and a quiet moment costs no extra commits.
        self._split = split
        self._gate = gate  # entered around each transaction (``WriteGate``)
        self._commit_when = commit_when
        self._part_seconds = part_seconds
        self._max_records = max_records
        self.caught_up = asyncio.Event()  # set once every assigned partition was read to its end

    async def _start(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._consumer.start()
                return
            except Exception as exc:  # noqa: BLE001 - the broker may not be up yet
                log.warning("consumer_start_retry", group=self._group, **error_fields(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def run(self) -> None:
        try:
            await self._start()
            while True:
                batch = await self._consumer.getmany(timeout_ms=200, max_records=self._max_records)
                if not batch:
                    if not self.caught_up.is_set() and await self._at_end():
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
                    CONSUMED.labels(self._group, tp.topic).inc(len(records))  # labels() per record: 8 %
                if self._prepare is not None:
                    events = await self._prepare(events)
                if self._split is not None and len(events) > 1:
                    await self.apply_parts(self._split(events))
                elif events:
                    await self.apply(events)
                await self._consumer.commit()
                self._after_commit()
        finally:
            await self._consumer.stop()

    async def _at_end(self) -> bool:
        """Whether every assigned partition has been read to its end (an empty poll alone may just
        be a slow first fetch)."""
        parts = list(self._consumer.assignment())
        if not parts:
            return False
        ends = await self._consumer.end_offsets(parts)
        for tp in parts:
            if await self._consumer.position(tp) < ends[tp]:
                return False
        return True

    async def _apply_in(self, conn: AsyncConnection, events: list[CloudEvent]) -> None:
        ids = [e.id for e in events]
        # No inbox: the handler is idempotent by itself (it records nothing per event).
        fresh = set(ids) if self._inbox is None else await first_times(conn, self._inbox, ids)
        once: list[CloudEvent] = []
        for event in events:  # a republished event can appear twice in one batch
            if event.id in fresh:
                fresh.discard(event.id)
                once.append(event)
        await self._handle(conn, once)

    async def apply_parts(self, parts: list[list[CloudEvent]]) -> None:
        """Apply ``parts`` in order, as few transactions as the commit rule allows. A failed
        transaction is retried from its first part (the parts committed before it are in the
        inbox); for data the database refuses, the parts left are applied one by one."""
        done = 0
        delay = 0.5
        while done < len(parts):
            at = done
            try:
                async with self._gate(), self._engine.begin() as conn:
                    opened = time.monotonic()
                    while at < len(parts):
                        await self._apply_in(conn, parts[at])
                        at += 1
                        if self._commit_when() or time.monotonic() - opened >= self._part_seconds:
                            break
                done = at
            except Exception as exc:  # noqa: BLE001 - keep the offsets; try again
                if _refused_data(exc):
                    for part in parts[done:]:
                        await self.apply(part)
                    return
                log.error("consumer_apply_retry", group=self._group, **error_fields(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)

    async def apply(self, events: list[CloudEvent]) -> None:
        """Apply the events not seen before, in one transaction; retried until it succeeds (or,
        for data the database refuses, event by event, skipping the refused ones)."""
        delay = 0.5
        while True:
            try:
                async with self._gate(), self._engine.begin() as conn:
                    await self._apply_in(conn, events)
                return
            except Exception as exc:  # noqa: BLE001 - keep the offsets; try again
                if _refused_data(exc):
                    if len(events) > 1:
                        for event in events:
                            await self.apply([event])
                    else:
                        log.error("event_unapplicable", group=self._group, event_id=events[0].id,
                                  event_type=events[0].type, **error_fields(exc))  # fmt: skip
                        UNAPPLICABLE.labels(self._group, events[0].type).inc()
                    return
                log.error("consumer_apply_retry", group=self._group, **error_fields(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)


def _refused_data(exc: Exception) -> bool:
    """The database refused the data itself (retrying cannot help), not a fault or a bug."""
    if isinstance(exc, IntegrityError | DataError):  # SQLite's constraint errors carry no SQLSTATE
        return True
    code = sqlstate(exc)
    return code is not None and code[:2] in _DATA_ERRORS
