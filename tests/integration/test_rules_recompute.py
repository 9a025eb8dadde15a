"""Recomputing many pupils at once against a real database (SQLite and PostgreSQL): the bulk path
of a whole-borough recompute gives exactly what pupil-by-pupil assessment gives, in the calling
process or split across a pool of worker processes, and a second pass over an unchanged register
raises nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

import orjson
import pytest
from sqlalchemy import delete, insert, select, update

from bench.rules import fill_rules_db
from services.rules import engine, recompute, worker
from services.rules import tables as t
from services.rules.app import create_app
from services.rules.settings import RulesSettings
from shared.db import create_engine
from shared.policy import load_policy

pytestmark = pytest.mark.integration
TODAY = dt.date(2025, 3, 14)
NOW = dt.datetime(2025, 3, 14, 16, tzinfo=dt.UTC)
SORTED = orjson.OPT_SORT_KEYS
SCALE = 0.007  # ~260 pupils of the synthetic borough: above recompute.PARALLEL_MIN_PUPILS


async def recompute_all(url: str, upns: list[str], pool: Executor | None) -> tuple[int, dict[str, Any]]:
    """Recompute every pupil in one transaction; (signals raised, what the tables then hold)."""
    db = create_engine(url)
    try:
        async with db.begin() as conn:
            outcome = await recompute.recompute(
                conn, upns, load_policy(), recompute.CalendarCache(), TODAY, NOW, pool=pool
            )
    finally:
        await db.dispose()
    return outcome.signals, await state_of(url, upns)


async def state_of(url: str, upns: list[str]) -> dict[str, Any]:
    """What the computed tables hold (and the engine's inputs read back)."""
    db = create_engine(url)
    try:
        async with db.connect() as conn:
            a = [dict(r._mapping) for r in await conn.execute(select(t.assessments))]
            for row in a:
                row.pop("computed_at")
            e = [dict(r._mapping) for r in await conn.execute(select(t.episodes))]
            s = [
                (
                    r.type,
                    r.upn,
                    r.episode_key,
                    r.occurred_on,
                    orjson.dumps(r.data, option=orjson.OPT_SORT_KEYS),
                )
                for r in await conn.execute(select(t.signals))
            ]
            inputs = await recompute.load_inputs(conn, upns, recompute.CalendarCache())
    finally:
        await db.dispose()
    key = lambda row: (row["upn"], row.get("school_urn"), row.get("key"))  # noqa: E731
    state = {"assessments": sorted(a, key=key), "episodes": sorted(e, key=key), "signals": sorted(s)}
    state["inputs"] = inputs
    return state


async def test_bulk_recompute_in_process_and_in_a_pool_agree(
    make_url: Callable[[str], Awaitable[str]],
) -> None:
    inline_url, pooled_url = await make_url("inline"), await make_url("pooled")
    upns, marks = await fill_rules_db(inline_url, 11, SCALE)
    assert (upns, marks) == await fill_rules_db(pooled_url, 11, SCALE)
    assert len(upns) >= recompute.PARALLEL_MIN_PUPILS

    raised, inline = await recompute_all(inline_url, upns, None)
    pool, single = recompute.assessor_processes(2), recompute.assessor_processes(1)
    try:
        pooled_raised, pooled = await recompute_all(pooled_url, upns, pool)
        again, after = await recompute_all(pooled_url, upns, single)  # one worker: a pipeline too
    finally:
        pool.shutdown()
        single.shutdown()
    assert raised > 0
    assert pooled_raised == raised
    for table in ("assessments", "episodes", "signals"):
        assert pooled[table] == inline[table], table
    # Nothing changed in the register: nothing to announce, the same state.
    assert again == 0
    assert after["assessments"] == inline["assessments"]
    assert after["episodes"] == inline["episodes"]

    # The stored register, read back folded, is the register that was written, and each pupil's
    # assessment from it is the engine's on those inputs (what the rows above were built from).
    inputs: dict[str, engine.PupilInput] = inline["inputs"]
    assert sum(len(e.marks) for p in inputs.values() for e in p.enrolments) == marks
    sample = inputs[upns[len(upns) // 2]]
    first = next(a for a in inline["assessments"] if a["upn"] == sample.upn)
    assessed = engine.assess(sample, load_policy(), TODAY, NOW)
    assert first["possible"] == assessed[0].measures.sessions.possible


async def test_a_pooled_recompute_after_a_write_reads_what_its_transaction_wrote(
    make_url: Callable[[str], Awaitable[str]],
) -> None:
    """A consumer's batch writes the register and then recomputes in the same transaction: the
    uncommitted marks must be what the pool assesses (no worker may read the file behind it)."""
    url = await make_url("written")
    upns, _ = await fill_rules_db(url, 11, SCALE)
    pupil = upns[len(upns) // 3]
    db = create_engine(url)
    pool = recompute.assessor_processes(2)
    try:
        async with db.begin() as conn:
            # Every mark of one pupil becomes an unauthorised absence, uncommitted.
            await conn.execute(
                update(t.register).where(t.register.c.upn == pupil).values(code="O", category="unauthorised")
            )
            outcome = await recompute.recompute(
                conn, upns, load_policy(), recompute.CalendarCache(), TODAY, NOW, pool=pool
            )
            assert outcome.pupils == len(upns)
            rows = (await conn.execute(select(t.assessments).where(t.assessments.c.upn == pupil))).all()
    finally:
        pool.shutdown()
        await db.dispose()
    assert rows
    for row in rows:
        assert row.possible > 0
        assert (row.present, row.aea, row.authorised) == (0, 0, 0)
        assert row.unauthorised == row.possible


async def test_a_scheduler_tick_with_assessor_processes_stores_what_one_process_does(
    make_url: Callable[[str], Awaitable[str]], kafka_bootstrap: str
) -> None:
    """The rules service with ``ROLLCALL_ASSESS_WORKERS=2``: its scheduler's tick recomputes every
    watched pupil in worker processes (on SQLite they read the pupils themselves: the tick has
    written nothing first) and stores exactly what assessing them in one process stores."""
    inline_url, service_url = await make_url("tick-inline"), await make_url("tick-service")
    for url in (inline_url, service_url):
        upns, _ = await fill_rules_db(url, 11, SCALE)
        db = create_engine(url)
        try:
            async with db.begin() as conn:  # every pupil looked after: all watched by the scheduler
                await conn.execute(delete(t.care))
                await conn.execute(
                    insert(t.care),
                    [
                        {"upn": u, "cin": False, "cp": False, "cla": True, "early_help": False, "etac": False}
                        for u in upns
                    ],
                )
        finally:
            await db.dispose()
    raised, inline = await recompute_all(inline_url, upns, None)
    config = RulesSettings(
        env="test",
        database_url=service_url,
        kafka_bootstrap=kafka_bootstrap,
        assess_workers=2,
        workers="close_assessors",  # no consumer, scheduler or refresher besides this tick
    )
    app = create_app(config)
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        runtime.clock = lambda: NOW
        outcome = await worker.tick(runtime)
        assert runtime.state.get("assessors") is not None  # the pool was used
    assert outcome.pupils == len(upns) >= recompute.PARALLEL_MIN_PUPILS
    assert outcome.signals == raised > 0
    ticked = await state_of(service_url, upns)
    for table in ("assessments", "episodes", "signals"):
        assert ticked[table] == inline[table], table
