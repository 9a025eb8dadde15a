"""Several processes of one service on one PostgreSQL database: exactly one relay publishes the
shared outbox at a time, and another takes over when the leader stops or its session is ended
(real Kafka, real PostgreSQL; each relay has its own engine and producer, as separate processes would)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import MetaData, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared import kafka
from shared.events import new_event
from shared.outbox import OutboxRelay, enqueue, outbox_records, outbox_table
from tests.conftest import new_topic

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

metadata = MetaData()
OUTBOX = outbox_table(metadata)


async def add(engine: AsyncEngine, topic: str, n: int, tag: str) -> None:
    events = [(f"pupil-{i % 50}", new_event("test.event", "/test", {"n": i, "tag": tag})) for i in range(n)]
    async with engine.begin() as conn:
        await enqueue(conn, OUTBOX, outbox_records(topic, events))


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 60) -> None:
    async with asyncio.timeout(seconds):
        while not await check():  # noqa: ASYNC110 - polling the database and a consumer
            await asyncio.sleep(0.05)


async def test_one_relay_leads_per_database_and_another_takes_over(
    postgres_url: str, kafka_bootstrap: str
) -> None:
    topic = await new_topic(kafka_bootstrap, "test.outbox", 3)
    engines = [create_async_engine(postgres_url) for _ in range(3)]
    async with engines[0].begin() as conn:
        await conn.run_sync(metadata.create_all)
    producers = [kafka.producer(kafka_bootstrap) for _ in engines]
    relays = [
        OutboxRelay(e, OUTBOX, p, batch=500, poll_seconds=0.2)
        for e, p in zip(engines, producers, strict=True)
    ]
    seen: Counter[str] = Counter()
    consumer = kafka.consumer(kafka_bootstrap, None, topic)
    await consumer.start()

    async def listen() -> None:
        async for record in consumer:
            seen[dict(record.headers)["ce_id"].decode()] += 1

    async def published(n: int) -> bool:
        """``n`` distinct events read from Kafka and the outbox empty (deleted once acknowledged)."""
        async with engines[0].connect() as conn:
            left = (await conn.execute(select(func.count()).select_from(OUTBOX))).scalar()
        return len(seen) == n and left == 0

    tasks: list[asyncio.Task[None]] = [asyncio.create_task(listen())]
    try:
        for p in producers:
            await p.start()
        # Two processes' worth of events before any relay runs, then more while all three run.
        await add(engines[1], topic, 1000, "before")
        await add(engines[2], topic, 1000, "before")
        tasks += [asyncio.create_task(r.run()) for r in relays]
        for i in range(5):
            await add(engines[i % 3], topic, 400, "during")
        await until(lambda: published(4000))
        leaders = [r for r in relays if r.leading]
        assert len(leaders) == 1

        # The leader's process stops: another relay takes the lock and publishes what follows.
        first = relays.index(leaders[0])
        leaders[0].stop()
        await tasks[1 + first]
        await add(engines[first], topic, 500, "after")
        await until(lambda: published(4500))
        assert sum(r.leading for r in relays) == 1
        assert not relays[first].leading

        # The server ends the new leader's session (and with it the lock): the relay sees it at
        # once, without a round trip of its own, and a relay leads again and publishes the rest.
        second = next(r for r in relays if r.leading)
        assert second._leader is not None
        pid = (await second._leader.get_raw_connection()).driver_connection.get_server_pid()
        async with engines[0].connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await add(engines[relays.index(second)], topic, 300, "after a kill")
        await until(lambda: published(4800))
        assert sum(r.leading for r in relays) == 1
        await asyncio.sleep(0.5)  # room for any stray second copy to arrive
        assert max(seen.values()) == 1, "an event was published twice"
    finally:
        for r in relays:
            r.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await consumer.stop()
        for p in producers:
            await p.stop()
        for e in engines:
            await e.dispose()


async def test_the_relay_vacuums_the_outbox_it_empties(postgres_url: str, kafka_bootstrap: str) -> None:
    """Every ``vacuum_every`` deleted rows the relay VACUUMs the outbox: its dead rows are removed
    as it goes, not left for autovacuum (a queue table would otherwise grow to gigabytes)."""
    topic = await new_topic(kafka_bootstrap, "test.outbox", 1)
    engine = create_async_engine(postgres_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        # Autovacuum off for this table, so any VACUUM counted below is the relay's.
        await conn.execute(text("ALTER TABLE outbox SET (autovacuum_enabled = false)"))
    producer = kafka.producer(kafka_bootstrap)
    await producer.start()
    relay = OutboxRelay(engine, OUTBOX, producer, batch=100, vacuum_every=250)

    async def table_stat(column: str) -> int:
        async with engine.connect() as conn:
            query = text(f"SELECT {column} FROM pg_stat_user_tables WHERE relname = 'outbox'")  # noqa: S608 - ours
            return int((await conn.execute(query)).scalar_one())

    async def emptied() -> bool:
        async with engine.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(OUTBOX))).scalar() == 0

    async def vacuumed() -> bool:
        return relay.vacuums == 1

    running = asyncio.create_task(relay.run())
    try:
        assert await table_stat("vacuum_count") == 0
        await add(engine, topic, 200, "below")
        await until(emptied)
        await asyncio.sleep(0.3)
        assert relay.vacuums == 0  # 200 deleted: fewer than vacuum_every
        await add(engine, topic, 100, "over")
        await until(vacuumed)
        assert await table_stat("vacuum_count") == 1
        assert await table_stat("n_dead_tup") == 0
        assert await emptied()
    finally:
        relay.stop()
        await running
        await producer.stop()
        await engine.dispose()


@dataclass
class Pair:
    """Two processes' relays on one outbox (each its own engine and producer): ``leader`` takes
    the relay lock first; ``running`` is the leader's ``run`` task once a test starts it."""

    topic: str
    engines: list[AsyncEngine]
    producers: list[Any]
    leader: OutboxRelay
    follower: OutboxRelay
    running: asyncio.Task[None] | None = None

    async def backlog(self) -> int:
        async with self.engines[0].connect() as conn:
            total = select(func.coalesce(func.sum(OUTBOX.c.events), 0))
            return int((await conn.execute(total)).scalar_one())


@contextlib.asynccontextmanager
async def leader_and_follower(
    postgres_url: str, kafka_bootstrap: str, max_backlog: int
) -> AsyncIterator[Pair]:
    topic = await new_topic(kafka_bootstrap, "test.outbox", 3)
    engines = [create_async_engine(postgres_url) for _ in range(2)]
    async with engines[0].begin() as conn:
        await conn.run_sync(metadata.create_all)
    producers = [kafka.producer(kafka_bootstrap) for _ in engines]
    for p in producers:
        await p.start()
    leader = OutboxRelay(engines[0], OUTBOX, producers[0], batch=100, max_backlog=max_backlog)
    follower = OutboxRelay(engines[1], OUTBOX, producers[1], max_backlog=max_backlog, stall_seconds=60)
    pair = Pair(topic, engines, producers, leader, follower)
    try:
        assert await leader._lead()  # holds the relay lock, not yet publishing
        assert not await follower._lead()
        yield pair
    finally:
        for r in (leader, follower):
            r.stop()
        if pair.running is not None:
            await pair.running
        await leader._resign()
        for p in producers:
            await p.stop()
        for e in engines:
            await e.dispose()


async def test_a_process_that_does_not_lead_waits_for_room_while_the_leader_publishes(
    postgres_url: str, kafka_bootstrap: str
) -> None:
    """Backpressure across processes: a process whose relay does not lead reads the shared
    backlog and waits while it is over ``max_backlog`` and the leader is publishing; when nobody
    publishes (the leader stalled) it stops waiting: durable first."""
    async with leader_and_follower(postgres_url, kafka_bootstrap, max_backlog=500) as w:
        for i in range(20):
            await add(w.engines[1], w.topic, 100, f"b{i}")  # 2,000 events in 20 bundles
        waiting = asyncio.create_task(w.follower.room(wait_seconds=120))
        await asyncio.sleep(1.0)
        assert not waiting.done()  # over max_backlog: the follower waits
        w.running = asyncio.create_task(w.leader.run())
        async with asyncio.timeout(60):
            await waiting  # released once the leader has published down to max_backlog
        assert await w.backlog() <= 500 + 100  # one bundle may have been read but not yet deleted
        async with asyncio.timeout(60):
            while await w.backlog():  # noqa: ASYNC110 - polling the database
                await asyncio.sleep(0.05)

        # The leader stops publishing but keeps the lock: the follower waits only until it sees
        # the oldest bundle has not moved for stall_seconds, then takes the request.
        w.leader.stop()
        await w.running
        w.running = None
        assert await w.leader._lead()
        for i in range(20):
            await add(w.engines[1], w.topic, 100, f"c{i}")
        stalled = OutboxRelay(w.engines[1], OUTBOX, w.producers[1], max_backlog=500, stall_seconds=0.5)
        async with asyncio.timeout(30):
            await stalled.room(wait_seconds=120)
        assert await w.backlog() == 2000  # nothing was published: it stopped waiting for nothing


async def test_the_leader_waits_first_so_its_core_publishes(postgres_url: str, kafka_bootstrap: str) -> None:
    """The leading process waits for room while the whole outbox's backlog is over half
    ``max_backlog`` (events other processes committed count too), where a process that does not
    lead still takes requests: it cannot publish, so waiting would leave its core idle."""
    async with leader_and_follower(postgres_url, kafka_bootstrap, max_backlog=1000) as w:
        w.leader.healthy = True  # as after its relay's first round
        for i in range(8):
            await add(w.engines[1], w.topic, 100, f"b{i}")  # 800 events, all committed by the other process
        async with asyncio.timeout(10):
            await w.follower.room(wait_seconds=120)  # 800 <= 1,000: the follower goes ahead
        waiting = asyncio.create_task(w.leader.room(wait_seconds=120))
        await asyncio.sleep(1.0)
        assert not waiting.done()  # 800 > 500: the leader waits, though it committed none of them
        w.running = asyncio.create_task(w.leader.run())
        async with asyncio.timeout(60):
            await waiting  # released once its relay has published down to half max_backlog
        assert await w.backlog() <= 500 + 100  # one bundle may have been read but not yet deleted
