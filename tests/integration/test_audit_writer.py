"""``AuditWriter`` group-commits the audit rows of requests answered together (SQLite and
PostgreSQL): each waiting request's row and subjects are stored exactly as its own transaction
would store them (and as ``write_entry``, through SQLAlchemy, stores them), in fewer transactions
(a transaction is one connection taken from the pool), and a commit that fails fails every
request in it with nothing of theirs written."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event, select

from services.legal import tables as t
from shared.audit import AuditEntry, AuditWriter, audit_row, write_entry
from shared.auth import Principal
from shared.db import create_engine
from shared.migrate import upgrade

pytestmark = pytest.mark.integration


def upn(i: int, j: int) -> str:
    return f"A{i:06d}{j:06d}"


def row(i: int) -> dict[str, Any]:
    entry = AuditEntry(f"purpose {i}")
    entry.add(upns=[upn(i, j) for j in range(i % 4)], resources=[f"case-{i}"])
    who = Principal(sub=f"reader-{i}", scopes=frozenset({"legal:read"}), schools=None, la="343")
    written = audit_row(entry, principal=who, service="legal", method="GET", route=f"/v1/r/{i}", status=200)
    return {"row": written, "upns": list(entry.upns)}


async def check(url: str) -> None:
    await asyncio.to_thread(upgrade, "legal", url)
    engine = create_engine(url)
    commits = 0  # the writer's transactions: each takes one connection from the pool

    @event.listens_for(engine.sync_engine, "checkout")
    def _count(*_: Any) -> None:
        nonlocal commits
        commits += 1

    writer = AuditWriter(engine, t.audit)
    log, subjects = t.audit.log.c, t.audit.subjects.c
    try:
        rows = [row(i) for i in range(60)]
        bad = dict(rows[7]["row"], sub=None)  # NOT NULL: the whole commit fails
        results = await asyncio.gather(
            *(writer.write(bad if i == 7 else r["row"], r["upns"]) for i, r in enumerate(rows)),
            return_exceptions=True,
        )
        assert all(isinstance(x, Exception) for x in results)  # one transaction, refused as a whole
        async with engine.connect() as conn:
            assert (await conn.execute(select(log.id))).all() == []

        commits = 0
        await asyncio.gather(*(writer.write(r["row"], r["upns"]) for r in rows))
        assert 1 <= commits < 10  # grouped: not one transaction per request
        async with engine.connect() as conn:
            stored = {r.route: r for r in await conn.execute(select(t.audit.log))}
            pairs = (await conn.execute(select(subjects.audit_id, subjects.upn))).all()
        assert len(stored) == 60
        for i in range(60):
            got = stored[f"/v1/r/{i}"]
            assert (got.sub, got.purpose, got.resources) == (f"reader-{i}", f"purpose {i}", [f"case-{i}"])
            assert sorted(u for a, u in pairs if a == got.id) == [upn(i, j) for j in range(i % 4)]

        one = row(99)  # alone: its own transaction, as before (a school's token, no LA)
        commits = 0
        await writer.write(one["row"] | {"schools": ["123456"], "la": None}, one["upns"])
        assert commits == 1

        # The same row through SQLAlchemy (write_entry) reads back identical, subjects included.
        who = Principal(
            sub="reader-99", scopes=frozenset({"legal:read"}), schools=frozenset({"123456"}), la=None
        )
        entry = AuditEntry("purpose 99")
        entry.add(upns=one["upns"], resources=["case-99"])
        async with engine.begin() as conn:
            await write_entry(
                conn, t.audit, entry, principal=who, service="legal", method="GET", route="/v1/r/99",
                status=200, at=one["row"]["at"],
            )  # fmt: skip
        async with engine.connect() as conn:
            both = (await conn.execute(select(t.audit.log).where(log.route == "/v1/r/99"))).all()
            upns = [
                sorted((await conn.execute(select(subjects.upn).where(subjects.audit_id == r.id))).scalars())
                for r in both
            ]
        assert len(both) == 2
        assert both[0]._asdict() | {"id": 0} == both[1]._asdict() | {"id": 0}
        assert len(one["upns"]) == 3
        assert upns[0] == upns[1] == sorted(one["upns"])
    finally:
        await engine.dispose()


async def test_audit_writer_sqlite(sqlite_url: str) -> None:
    await check(sqlite_url)


@pytest.mark.postgres
async def test_audit_writer_postgres(postgres_url: str) -> None:
    await check(postgres_url)
