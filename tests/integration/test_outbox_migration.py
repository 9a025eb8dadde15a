"""Each service's migration to the outbox of bundles (``shared.outbox.bundle_outbox``), on SQLite and
PostgreSQL: events pending at the upgrade are kept in order and published as they were, new
bundles go after them, and the downgrade splits every bundle back into a row per event."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection

from shared.db import create_engine
from shared.events import new_event
from shared.migrate import alembic_config, upgrade
from shared.outbox import enqueue, outbox_records, outbox_table, pending_events

pytestmark = pytest.mark.integration

BEFORE = {"ingest": "0004", "legal": "0004", "notifications": "0004", "rules": "0007"}
# Old rows as the services wrote them: keys and JSON that need escaping survive the conversion.
OLD = [
    (f"e{i}", "rollcall.test.v1", key, "test.event", f"00-{'a' * 32}-{'b' * 15}{i}-01", orjson.dumps(value))
    for i, (key, value) in enumerate(
        [("A123", {"n": 0}), ('quote " back \\ slash', {"text": "line\nfeed"}), ("é ☃", {"n": 2})]
    )
]


async def _run(url: str, work: Callable[[Connection], Any]) -> Any:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(work)
    finally:
        await engine.dispose()


def _insert_old(conn: Connection) -> None:
    conn.execute(
        text(
            "INSERT INTO outbox (event_id, topic, key, event_type, traceparent, value) "
            "VALUES (:id, :topic, :key, :type, :tp, :value)"
        ),
        [dict(zip(("id", "topic", "key", "type", "tp", "value"), row, strict=True)) for row in OLD],
    )


def _old_rows(conn: Connection) -> list[tuple[Any, ...]]:
    columns = "event_id, topic, key, event_type, traceparent, value"
    rows = conn.execute(text(f"SELECT {columns} FROM outbox ORDER BY seq"))  # noqa: S608 - constants
    return [(*r[:5], bytes(r[5])) for r in rows]


def _drift(conn: Connection) -> list[Any]:
    """What autogenerate would change in ``outbox`` to match ``outbox_table`` (nothing, if they agree)."""
    declared = MetaData()
    outbox_table(declared)
    opts = {"include_name": lambda name, kind, _parents: kind != "table" or name == "outbox"}
    return list(compare_metadata(MigrationContext.configure(conn, opts=opts), declared))


@pytest.mark.parametrize("service", sorted(BEFORE))
async def test_pending_events_survive_the_bundling_both_ways(
    make_url: Callable[[str], Awaitable[str]], service: str
) -> None:
    url = await make_url(service)
    await asyncio.to_thread(upgrade, service, url, BEFORE[service])
    await _run(url, _insert_old)
    expected = [(topic, key, eid, etype, value) for eid, topic, key, etype, _tp, value in OLD]

    await asyncio.to_thread(upgrade, service, url)
    assert await _run(url, _drift) == []  # the migrated table is outbox_table's
    table = outbox_table(MetaData())
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            assert await pending_events(conn, table) == expected
            fresh = [("k9", new_event("test.event", "/test", {"n": 9}))]
            await enqueue(conn, table, outbox_records("rollcall.test.v1", fresh))
            after = await pending_events(conn, table)
    finally:
        await engine.dispose()
    assert after[:3] == expected
    assert after[3][:3] == ("rollcall.test.v1", "k9", fresh[0][1]["id"])

    await asyncio.to_thread(command.downgrade, alembic_config(service, url), BEFORE[service])
    old = await _run(url, _old_rows)
    assert [r[:4] + r[5:] for r in old[:3]] == [r[:4] + r[5:] for r in OLD]
    assert [r[4] for r in old[:3]] == [r[4] for r in OLD]  # each kept its traceparent
    assert old[3][:4] == (fresh[0][1]["id"], "rollcall.test.v1", "k9", "test.event")
    assert orjson.loads(old[3][5]) == fresh[0][1]
