"""``shared.db.insert_rows`` stores exactly what SQLAlchemy's own ``executemany`` stores (dates,
timestamps, JSON, booleans, floats, NULLs; plain inserts and upserts that overwrite or add), on
SQLite and PostgreSQL: it only skips SQLAlchemy's per-row parameter handling. Rows bound without
a connection (``offline_dialect``, as a recompute's pool workers bind them) are the same
parameters the engine's own dialect makes, and store the same rows."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import (
    BoundRows,
    bind_rows,
    bind_tuples,
    create_engine,
    execute_bound,
    insert_rows,
    offline_dialect,
    plain_insert,
    upsert,
    upsert_statement,
)

pytestmark = pytest.mark.integration

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("id", String(10), primary_key=True),
    Column("day", Date, nullable=True),
    Column("at", DateTime(timezone=True), nullable=True),
    Column("detail", JSON, nullable=True),
    Column("flag", Boolean, nullable=False),
    Column("n", Integer, nullable=False),
    Column("rate", Float, nullable=True),
)

ROWS: list[dict[str, Any]] = [
    {"id": f"t{i}", "day": dt.date(2024, 9, 2) + dt.timedelta(days=i) if i % 3 else None,
     "at": dt.datetime(2024, 9, 2, 8, 45, i, 123456, tzinfo=dt.UTC) if i % 4 else None,
     "detail": {"sessions": [i, "AM"], "why": "naïve café — “quoted”"} if i % 5 else None,
     "flag": bool(i % 2), "n": i, "rate": i / 7 if i % 6 else None}
    for i in range(40)
]  # fmt: skip


async def stored(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(r) for r in await conn.execute(select(things).order_by(things.c.id))]


async def reset(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.run_sync(metadata.create_all)


async def check(url: str) -> None:
    engine = create_engine(url)
    try:
        await reset(engine)
        async with engine.begin() as conn:
            await conn.execute(insert(things), ROWS)
        expected = await stored(engine)

        await reset(engine)
        async with engine.begin() as conn:
            await insert_rows(conn, insert(things), ROWS)
        assert await stored(engine) == expected
        assert sum(1 for r in expected if r[3] is None) == 8  # NULL JSON stays NULL, not 'null'

        # upsert: the key's other columns overwritten, `add` columns added to what is stored
        changed = [{**r, "day": dt.date(2025, 1, 6), "n": 100} for r in ROWS[:10]]
        async with engine.begin() as conn:
            await upsert(conn, things, changed, ["id"], add=("n",))
        after = {r[0]: r for r in await stored(engine)}
        assert [after[f"t{i}"][5] for i in range(12)] == [100 + i for i in range(10)] + [10, 11]
        assert {after[f"t{i}"][1] for i in range(10)} == {dt.date(2025, 1, 6)}
        assert len(after) == 40
        # the same shape again: the statement (and its compiled form) is reused, with new values
        async with engine.begin() as conn:
            await upsert(conn, things, changed[:3], ["id"], add=("n",))
            await insert_rows(conn, plain_insert(things), [{**ROWS[0], "id": "u0"}, {**ROWS[1], "id": "u1"}])
            await insert_rows(conn, plain_insert(things), [{**ROWS[2], "id": "u2"}])
        again = {r[0]: r for r in await stored(engine)}
        assert [again[f"t{i}"][5] for i in range(4)] == [200, 201, 202, 103]
        first = {r[0]: r for r in expected}
        assert [again[f"u{i}"][1:] for i in range(3)] == [first[f"t{i}"][1:] for i in range(3)]

        # bound offline (a pool worker) = bound by the engine's dialect; stored, the same rows
        offline = offline_dialect(engine.dialect.name)
        keys = tuple(ROWS[0])
        for stmt in (plain_insert(things), upsert_statement(engine.dialect.name, things, ["id"], keys)):
            assert bind_rows(stmt, offline, ROWS) == bind_rows(stmt, engine.dialect, ROWS)
            as_tuples = [tuple(r.values()) for r in ROWS]
            assert bind_tuples(stmt, engine.dialect, keys, as_tuples) == bind_rows(stmt, engine.dialect, ROWS)
        await reset(engine)
        bound = bind_rows(plain_insert(things), offline, ROWS)
        async with engine.begin() as conn:
            await execute_bound(conn, plain_insert(things), bound)
        assert await stored(engine) == expected
        # rows bound in another parameter order are refused, and nothing is written
        shuffled = BoundRows(bound.keys, bound.names[::-1], [p[::-1] for p in bound.params])
        await reset(engine)
        with pytest.raises(ValueError, match="rows bound as"):
            async with engine.begin() as conn:
                await execute_bound(conn, plain_insert(things), shuffled)
        assert await stored(engine) == []
    finally:
        await engine.dispose()


async def test_insert_rows_sqlite(sqlite_url: str) -> None:
    await check(sqlite_url)


@pytest.mark.postgres
async def test_insert_rows_postgres(postgres_url: str) -> None:
    await check(postgres_url)
