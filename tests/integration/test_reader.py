"""``shared.db.reader``: a read neither takes nor waits for SQLite's write lock (every transaction
beginning IMMEDIATE made reads and writers queue for each other), reads a snapshot, and on
PostgreSQL is a READ ONLY transaction, so a write slipped into a read path fails."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, func, insert, select
from sqlalchemy.exc import DBAPIError

from shared.db import create_engine, reader

pytestmark = pytest.mark.integration

metadata = MetaData()
counted = Table("counted", metadata, Column("n", Integer, nullable=False))


async def test_a_read_does_not_block_a_writer_and_sees_a_snapshot(
    make_url: Callable[[str], Awaitable[str]],
) -> None:
    engine = create_engine(await make_url("reader"))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(insert(counted), [{"n": 1}])
        async with reader(engine).connect() as read:
            assert (await read.execute(select(func.count()).select_from(counted))).scalar_one() == 1
            # A writer commits while the read is open, within a second (busy_timeout is 30 s).
            async with asyncio.timeout(1), engine.begin() as write:
                await write.execute(insert(counted), [{"n": 2}])
            if engine.dialect.name == "sqlite":  # PostgreSQL's READ COMMITTED sees it: no snapshot
                assert (await read.execute(select(func.count()).select_from(counted))).scalar_one() == 1
        async with reader(engine).connect() as read:
            assert (await read.execute(select(func.count()).select_from(counted))).scalar_one() == 2
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_a_write_on_a_reader_fails_on_postgresql(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        with pytest.raises(DBAPIError, match="read-only transaction"):
            async with reader(engine).connect() as read:
                await read.execute(insert(counted), [{"n": 1}])
        async with engine.begin() as conn:  # the pooled connection is writable again
            await conn.execute(insert(counted), [{"n": 1}])
    finally:
        await engine.dispose()
