"""The inbox: a consumer applies an event and records its id in one transaction.

``first_time`` inserts the event id and says whether it was new, so a redelivered event (the
relay republished it, or the consumer died before committing its Kafka offset) has no second
effect. Used by every service that consumes Kafka.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, MetaData, String, Table, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.db import insert_rows, plain_insert


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("event_id", String(64), primary_key=True),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


async def first_time(conn: AsyncConnection, table: Table, event_id: str) -> bool:
    """Record ``event_id`` as processed; False if it already was (skip the event's effects)."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    result = await conn.execute(insert(table).values(event_id=event_id).on_conflict_do_nothing())
    return bool(result.rowcount == 1)


async def first_times(conn: AsyncConnection, table: Table, event_ids: list[str]) -> set[str]:
    """Record a batch of event ids; returns those not processed before (one query per 1,000 ids)."""
    new: set[str] = set()
    for start in range(0, len(event_ids), 1000):
        chunk = list(dict.fromkeys(event_ids[start : start + 1000]))
        rows = await conn.execute(select(table.c.event_id).where(table.c.event_id.in_(chunk)))
        done = {r.event_id for r in rows}
        fresh = [i for i in chunk if i not in done]
        if fresh:
            await insert_rows(conn, plain_insert(table), [{"event_id": i} for i in fresh])
        new.update(fresh)
    return new
