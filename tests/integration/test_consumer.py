"""The inbox consumer against a real broker and real databases: an event whose data the database
refuses is skipped on its own (counted), the events around it in the same batch are applied, and
the consumer moves on instead of retrying the batch for ever (a fuzzed name holding U+0000
stopped every PostgreSQL consumer in CI on 23 Nov)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import CheckConstraint, Column, Integer, MetaData, String, Table, event, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from shared import kafka
from shared.consumer import UNAPPLICABLE, InboxConsumer
from shared.events import CloudEvent, encode, new_event
from shared.inbox import inbox_table
from tests.conftest import new_topic

pytestmark = pytest.mark.integration

metadata = MetaData()
INBOX = inbox_table(metadata)
NOTES = Table(
    "notes",
    metadata,
    Column("n", Integer, primary_key=True),
    Column("text", String(200), nullable=False),
    CheckConstraint("length(text) <= 10", name="short_text"),
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


async def test_an_event_the_database_refuses_is_skipped_and_its_batch_is_applied(
    db_url: str, kafka_bootstrap: str
) -> None:
    topic = await new_topic(kafka_bootstrap, "test.consumer", 1)
    engine = create_async_engine(db_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)

    texts = ["first", "far too long for the check", "third", "fourth"]
    if engine.dialect.name == "postgresql":
        texts.insert(2, "nul\x00")  # PostgreSQL cannot store U+0000 in text: a data exception
    refused = 2 if engine.dialect.name == "postgresql" else 1

    async def handle(conn: AsyncConnection, events: list[CloudEvent]) -> None:
        await conn.execute(insert(NOTES), [{"n": e.data["n"], "text": e.data["text"]} for e in events])

    producer = kafka.producer(kafka_bootstrap)
    await producer.start()
    try:
        for n, text in enumerate(texts):
            event = new_event("test.note", "/test", {"n": n, "text": text})
            await producer.send_and_wait(topic, encode(event))
    finally:
        await producer.stop()

    def skipped() -> float:
        return sum(
            s.value
            for m in UNAPPLICABLE.collect()
            for s in m.samples
            if s.name.endswith("_total") and s.labels.get("group") == group
        )

    group = f"test-{uuid.uuid4().hex[:8]}"
    consumer = InboxConsumer(kafka_bootstrap, group, [topic], engine, INBOX, handle)
    task = asyncio.create_task(consumer.run())
    try:
        async with asyncio.timeout(60):
            while True:
                async with engine.connect() as conn:
                    rows = await conn.execute(select(NOTES.c.n, NOTES.c.text).order_by(NOTES.c.n))
                    stored = [tuple(r) for r in rows]
                if len(stored) == len(texts) - refused:
                    break
                await asyncio.sleep(0.1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await engine.dispose()
    expected: list[Any] = [(n, t) for n, t in enumerate(texts) if len(t) <= 10 and "\x00" not in t]
    assert stored == expected
    assert skipped() == refused


async def test_parts_commit_when_asked_and_a_failed_transaction_is_retried_from_its_first_part(
    db_url: str, kafka_bootstrap: str
) -> None:
    """``apply_parts``: parts share a transaction until the commit rule says commit; a transaction
    that fails is applied again from its own first part (the parts committed before it stay
    applied once, through the inbox), and every event ends up applied exactly once."""
    engine = create_async_engine(db_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    commits: list[int] = []
    event.listen(engine.sync_engine, "commit", lambda conn: commits.append(1))
    calls: Counter[int] = Counter()
    last = [-1]  # the last event handled
    failed = False

    async def handle(conn: AsyncConnection, events: list[CloudEvent]) -> None:
        nonlocal failed
        for e in events:
            calls[e.data["n"]] += 1
        last[0] = events[-1].data["n"] if events else last[0]
        if not failed and any(e.data["n"] == 7 for e in events):
            failed = True
            raise RuntimeError("a transient fault")  # e.g. the database restarting
        await conn.execute(insert(NOTES), [{"n": e.data["n"], "text": "ok"} for e in events])

    parts = [
        [CloudEvent.model_validate(new_event("test.note", "/test", {"n": 2 * k + i})) for i in range(2)]
        for k in range(6)
    ]

    def commit_when() -> bool:  # transactions [0, 1], [2, 3], [4, 5]
        return last[0] in (3, 7)

    consumer = InboxConsumer(
        kafka_bootstrap, "test-parts", ["unused"], engine, INBOX, handle,
        commit_when=commit_when, part_seconds=3600,
    )  # fmt: skip
    quiet = InboxConsumer(kafka_bootstrap, "test-parts", ["unused"], engine, INBOX, handle)
    try:
        before = len(commits)
        await consumer.apply_parts(parts)
        async with engine.connect() as conn:
            stored = [r.n for r in await conn.execute(select(NOTES.c.n).order_by(NOTES.c.n))]
            inboxed = len((await conn.execute(select(INBOX.c.event_id))).all())
        assert stored == list(range(12))
        assert inboxed == 12
        # part 1 ([2, 3]) and 3 ([6, 7]) make transaction 2 fail once: [4..7] seen twice, the rest once
        assert calls == Counter({n: 2 if 4 <= n <= 7 else 1 for n in range(12)})
        assert len(commits) - before == 3

        # Nothing asks for a commit and the transaction is young: one transaction for all parts.
        more = [
            [
                CloudEvent.model_validate(new_event("test.note", "/test", {"n": 100 + 2 * k + i}))
                for i in range(2)
            ]
            for k in range(5)
        ]
        before = len(commits)
        await quiet.apply_parts(more)
        assert len(commits) - before == 1
    finally:
        await engine.dispose()
        for c in (consumer, quiet):
            await c._consumer.stop()  # made, never started
