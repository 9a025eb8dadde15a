"""Transactional outbox and its relay (ARCHITECTURE principle 3: durable first, then tell).

A service writes its state and the events describing it in one transaction (``outbox_records``
+ ``enqueue``); ``OutboxRelay`` publishes pending rows to Kafka in ``seq`` order with the
idempotent producer and deletes them once Kafka has acknowledged every one (``acks=all``).
A process killed between commit and publish loses nothing: the rows are still there and the next
relay publishes them. A crash after send but before delete republishes a few events; consumers
de-duplicate by event id (the inbox).

One relay runs per service database (inside the service process by default; ``python -m
shared.outbox`` runs it on its own). Rows are published strictly in commit order, which keeps the
per-pupil order that consumers rely on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import Counter
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.events import new_traceparent

log = structlog.get_logger()

PUBLISHED = Counter("rollcall_outbox_published_total", "Events published from the outbox", ["topic"])


def outbox_table(metadata: MetaData) -> Table:
    """The outbox table, declared in each service's own metadata and migrations."""
    return Table(
        "outbox",
        metadata,
        # BIGINT on PostgreSQL; INTEGER PRIMARY KEY (the rowid, autoincrementing) on SQLite.
        Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False),
        Column("topic", String(100), nullable=False),
        Column("key", String(100), nullable=False),
        Column("event_type", String(100), nullable=False),
        Column("traceparent", String(64), nullable=False),
        Column("value", LargeBinary, nullable=False),
    )


def outbox_records(topic: str, events: Iterable[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows for ``events`` given as ``(key, cloud_event_dict)`` pairs."""
    return [
        {
            "event_id": event["id"],
            "topic": topic,
            "key": key,
            "event_type": event["type"],
            "traceparent": new_traceparent(),
            "value": orjson.dumps(event),
        }
        for key, event in events
    ]


async def enqueue(conn: AsyncConnection, table: Table, records: list[dict[str, Any]]) -> None:
    """Add rows to the outbox inside the caller's transaction."""
    if records:
        await conn.execute(insert(table), records)


class OutboxRelay:
    """Publishes outbox rows to Kafka; wake it after a commit for low latency, it also polls."""

    def __init__(
        self,
        engine: AsyncEngine,
        table: Table,
        producer: AIOKafkaProducer,
        batch: int = 10_000,
        poll_seconds: float = 1.0,
    ) -> None:
        self._engine = engine
        self._table = table
        self._producer = producer
        self._batch = batch
        self._poll = poll_seconds
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one publisher at a time: the loop and a shutdown drain
        self._partitioner = DefaultPartitioner()
        self._stopping = False
        self.healthy = False

    def wake(self) -> None:
        self._wake.set()

    async def publish_once(self) -> int:
        """Publish one batch of pending rows in commit order; returns how many were published."""
        async with self._lock:
            return await self._publish_batch()

    async def _publish_batch(self) -> int:
        t = self._table
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        t.c.seq, t.c.event_id, t.c.topic, t.c.key, t.c.event_type, t.c.traceparent, t.c.value
                    )
                    .order_by(t.c.seq)
                    .limit(self._batch)
                )
            ).all()
            await conn.rollback()
        if not rows:
            return 0
        await asyncio.gather(*await self._send(rows))
        # Delete exactly the rows sent: on PostgreSQL a lower seq can become visible after a higher
        # one (sequences are allocated before commit), so a seq range could take an unsent row.
        seqs = [row.seq for row in rows]
        async with self._engine.begin() as conn:
            for start in range(0, len(seqs), 5000):
                await conn.execute(delete(t).where(t.c.seq.in_(seqs[start : start + 5000])))
        for row in rows:
            PUBLISHED.labels(row.topic).inc()
        return len(rows)

    async def _send(self, rows: Sequence[Any]) -> list[asyncio.Future[Any]]:
        """Queue ``rows`` as record batches per partition, in commit order within each partition.

        Batching by hand (the same murmur2 partitioner as ``send``, so keys land where Java and
        every other client put them) is about twice as fast as one ``send`` per record.
        """
        futures: list[asyncio.Future[Any]] = []
        open_batches: dict[tuple[str, int], Any] = {}
        partitions: dict[str, list[int]] = {}
        for row in rows:
            if row.topic not in partitions:
                partitions[row.topic] = sorted(await self._producer.partitions_for(row.topic))
            key = row.key.encode()
            partition = self._partitioner(key, partitions[row.topic], partitions[row.topic])
            headers = [
                ("ce_id", row.event_id.encode()),
                ("ce_type", row.event_type.encode()),
                ("traceparent", row.traceparent.encode()),
            ]
            slot = (row.topic, partition)
            batch = open_batches.get(slot)
            if batch is None:
                batch = open_batches[slot] = self._producer.create_batch()
            if batch.append(key=key, value=row.value, timestamp=None, headers=headers) is None:
                futures.append(await self._producer.send_batch(batch, row.topic, partition=partition))
                batch = open_batches[slot] = self._producer.create_batch()
                if batch.append(key=key, value=row.value, timestamp=None, headers=headers) is None:
                    raise ValueError("an outbox event is larger than the producer's batch size")
        for (topic, partition), batch in open_batches.items():
            futures.append(await self._producer.send_batch(batch, topic, partition=partition))
        return futures

    async def run(self) -> None:
        """Publish until stopped; errors are logged and retried after a pause (nothing is dropped)."""
        while not self._stopping:
            try:
                published = await self.publish_once()
                self.healthy = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: keep the rows, retry later
                self.healthy = False
                log.warning("outbox_relay_retry", error_type=type(exc).__name__)
                published = 0
                await asyncio.sleep(self._poll)
            if published == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
                self._wake.clear()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
