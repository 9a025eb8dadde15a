"""Ingest's Alembic history on SQLite and PostgreSQL: migration 0004 rekeys ``marks`` (session
first, pupil last) without losing a mark, back and forth, and the migrated schema is the one
``services/ingest/tables.py`` declares."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, inspect, select
from sqlalchemy.engine import Connection

from services.ingest import tables as t
from shared.db import create_engine
from shared.migrate import alembic_config, upgrade

pytestmark = pytest.mark.integration

NOW = dt.datetime(2024, 12, 2, 9, 5, tzinfo=dt.UTC)
ROWS = [
    ("100001", "A123456789012", dt.date(2024, 12, 2), "AM", "/", None, None, NOW),
    ("100001", "A123456789012", dt.date(2024, 12, 2), "PM", "L", 12, NOW, NOW),
    ("100001", "B123456789012", dt.date(2024, 11, 29), "AM", "O", None, None, NOW),
    ("100002", "A123456789012", dt.date(2024, 12, 2), "AM", "D", None, None, NOW),
]


async def _run(url: str, work: Callable[[Connection], Any], commit: bool = False) -> Any:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.run_sync(work)
            if commit:
                await conn.commit()
            return result
    finally:
        await engine.dispose()


def _insert(conn: Connection) -> None:
    conn.execute(t.marks.insert(), [dict(zip(t.marks.c.keys(), row, strict=True)) for row in ROWS])


def _key(conn: Connection) -> list[str]:
    return list(inspect(conn).get_pk_constraint("marks")["constrained_columns"])


def _marks(conn: Connection) -> list[tuple[Any, ...]]:
    m = t.marks.c
    rows = conn.execute(select(m.school_urn, m.upn, m.date, m.session, m.code, m.minutes_late)).all()
    return sorted(tuple(r) for r in rows)


def _drift(conn: Connection) -> list[Any]:
    """What autogenerate would change in ``marks`` to match tables.py (nothing, if they agree)."""
    declared = MetaData()
    t.marks.to_metadata(declared)
    opts = {"include_name": lambda name, kind, _parents: kind != "table" or name == "marks"}
    return list(compare_metadata(MigrationContext.configure(conn, opts=opts), declared))


async def test_0004_rekeys_marks_and_keeps_every_mark(make_url: Callable[[str], Awaitable[str]]) -> None:
    url = await make_url("ingest")
    await asyncio.to_thread(upgrade, "ingest", url, "0003")
    assert await _run(url, _key) == ["school_urn", "upn", "date", "session"]
    await _run(url, _insert, commit=True)
    expected = sorted((r[0], r[1], r[2], r[3], r[4], r[5]) for r in ROWS)

    await asyncio.to_thread(upgrade, "ingest", url)
    assert await _run(url, _key) == ["school_urn", "date", "session", "upn"]
    assert await _run(url, _marks) == expected
    assert await _run(url, _drift) == []  # the migrated table is tables.py's

    await asyncio.to_thread(command.downgrade, alembic_config("ingest", url), "0003")
    assert await _run(url, _key) == ["school_urn", "upn", "date", "session"]
    assert await _run(url, _marks) == expected
