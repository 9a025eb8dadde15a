"""``shared.db.reader``: a read neither takes nor waits for SQLite's write lock (every transaction
beginning IMMEDIATE made reads and writers queue for each other), reads a snapshot, and on
PostgreSQL is a READ ONLY transaction, so a write slipped into a read path fails.

``shared.db.untouched_sqlite_file``: only a SQLite write transaction that has written nothing yet
may let other connections read for it (a recompute's worker processes)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, func, insert, select
from sqlalchemy.exc import DBAPIError

from shared.db import create_engine, reader, untouched_sqlite_file

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


async def test_only_an_untouched_sqlite_write_transaction_lets_others_read_for_it(
    make_url: Callable[[str], Awaitable[str]], tmp_path: Path
) -> None:
    engine = create_engine(await make_url("untouched"))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(insert(counted), [{"n": 1}])
            assert await untouched_sqlite_file(conn) is None  # it wrote
        async with engine.begin() as conn:
            await conn.execute(select(func.count()).select_from(counted))
            path = await untouched_sqlite_file(conn)
            if engine.dialect.name != "sqlite":
                assert path is None
                return
            assert path is not None
            assert Path(path) == tmp_path / "untouched.db"
            # It holds the write lock: no other writer gets in, so another connection reads what
            # this transaction would until it writes.
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
                assert other.execute("SELECT count(*) FROM counted").fetchone() == (1,)
                await conn.execute(insert(counted), [{"n": 2}])
                assert await untouched_sqlite_file(conn) is None  # now its reads differ from others'
                assert other.execute("SELECT count(*) FROM counted").fetchone() == (1,)
            finally:
                other.close()
        async with engine.begin() as conn:  # the next transaction starts untouched again
            assert await untouched_sqlite_file(conn) == path
        async with engine.connect() as conn:  # no BEGIN yet (nothing executed): no lock held
            assert await untouched_sqlite_file(conn) is None
        async with reader(engine).connect() as read:  # a snapshot holds no lock: others may write
            await read.execute(select(func.count()).select_from(counted))
            assert await untouched_sqlite_file(read) is None
    finally:
        await engine.dispose()
    memory = create_engine("sqlite+aiosqlite:///:memory:")
    try:
        async with memory.begin() as conn:
            assert await untouched_sqlite_file(conn) is None  # no file another process could open
    finally:
        await memory.dispose()
