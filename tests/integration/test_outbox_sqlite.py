"""The relay on SQLite (the embedded default): a seq is never reused, and an event committed while
an earlier batch's delete waits for the write lock is published without waiting for it (issue 8:
a first-day signal waited behind the rules consumer's transactions that way). Real Kafka, a real
SQLite file, the services' own migrations."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path

import orjson
import pytest
from sqlalchemy import MetaData, delete, func, select

from shared import kafka
from shared.db import WriteGate, create_engine
from shared.events import new_event
from shared.migrate import upgrade
from shared.outbox import OutboxRelay, enqueue, outbox_records, outbox_table
from tests.conftest import new_topic

pytestmark = pytest.mark.integration

metadata = MetaData()
OUTBOX = outbox_table(metadata)


def records(topic: str, n: int, tag: str) -> list[dict[str, object]]:
    return outbox_records(
        topic, [(f"k{i}", new_event("test.event", "/test", {"tag": tag})) for i in range(n)]
    )


@pytest.mark.parametrize("service", ["ingest", "rules", "legal", "notifications"])
async def test_the_migrated_outbox_never_reuses_a_seq(tmp_path: Path, service: str) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    await asyncio.to_thread(upgrade, service, url)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await enqueue(conn, OUTBOX, records("t", 5, "a"))
            top = (await conn.execute(select(func.max(OUTBOX.c.seq)))).scalar_one()
            await conn.execute(delete(OUTBOX))  # the relay deleted everything it published
            await enqueue(conn, OUTBOX, records("t", 1, "b"))
            again = (await conn.execute(select(OUTBOX.c.seq))).scalar_one()
        assert again > top
    finally:
        await engine.dispose()


async def test_the_migration_keeps_pending_rows(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    await asyncio.to_thread(upgrade, "rules", url, "0006")
    db = sqlite3.connect(tmp_path / "db.sqlite")
    db.executemany(
        "INSERT INTO outbox (event_id, topic, key, event_type, traceparent, value) VALUES (?, ?, ?, ?, ?, ?)",
        [(f"e{i}", "t", "k", "test.event", "00-x", b"{}") for i in range(3)],
    )
    db.commit()
    await asyncio.to_thread(upgrade, "rules", url)
    bundles = db.execute("SELECT seq, meta FROM outbox ORDER BY seq").fetchall()
    assert [(seq, orjson.loads(meta)) for seq, meta in bundles] == [
        (1, [["e0", "k", "test.event"]]),
        (2, [["e1", "k", "test.event"]]),
        (3, [["e2", "k", "test.event"]]),
    ]
    ddl = db.execute("SELECT sql FROM sqlite_master WHERE name = 'outbox'").fetchone()[0]
    assert "AUTOINCREMENT" in ddl
    db.close()


async def test_a_new_event_is_published_while_an_earlier_delete_waits(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic = await new_topic(kafka_bootstrap, "test.outbox", 2)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    gate = WriteGate()
    producer = kafka.producer(kafka_bootstrap)
    relay = OutboxRelay(engine, OUTBOX, producer, batch=500, poll_seconds=5, gate=gate.urgent)
    seen: Counter[str] = Counter()
    tags: Counter[str] = Counter()
    consumer = kafka.consumer(kafka_bootstrap, None, topic)

    async def listen() -> None:
        async for record in consumer:
            seen[dict(record.headers)["ce_id"].decode()] += 1
            tags[record.value.decode().split('"tag":"')[1].split('"')[0]] += 1

    async def until(tag: str, n: int, seconds: float = 15) -> None:
        async with asyncio.timeout(seconds):
            while tags[tag] < n:  # noqa: ASYNC110 - polling a consumer
                await asyncio.sleep(0.02)

    await consumer.start()
    await producer.start()
    tasks = [asyncio.create_task(listen()), asyncio.create_task(relay.run())]
    try:
        async with gate.bulk():  # a long consumer transaction: the relay's deletes must wait
            async with engine.begin() as conn:
                await enqueue(conn, OUTBOX, records(topic, 10, "first"))
            relay.wake()
            await until("first", 10)
            await asyncio.sleep(0.3)  # the first batch's delete is now queued at the gate
            async with engine.begin() as conn:
                await enqueue(conn, OUTBOX, records(topic, 3, "signal"))
            relay.wake()
            await until("signal", 3)  # published although the first delete has not happened
            async with engine.connect() as conn:
                left = (await conn.execute(select(func.sum(OUTBOX.c.events)))).scalar_one()
            assert left == 13  # nothing deleted yet: the gate is still held
        async with asyncio.timeout(15):
            while True:
                async with engine.connect() as conn:
                    left = (await conn.execute(select(func.count()).select_from(OUTBOX))).scalar_one()
                if left == 0:
                    break
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert len(seen) == 13
        assert max(seen.values()) == 1
    finally:
        relay.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
        await engine.dispose()
