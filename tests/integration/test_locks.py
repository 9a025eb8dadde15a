"""Several processes of a service on one PostgreSQL database: pupil locks serialise work on the
same pupils (and not on others), and a scheduler tick runs in one process at a time."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import lock_key, lock_pupils, try_lock

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


async def test_pupil_locks_and_scheduler_turns(postgres_url: str) -> None:
    engine = create_async_engine(postgres_url)
    try:
        async with engine.connect() as a, engine.connect() as b:
            await a.begin()
            await lock_pupils(a, ["P1", "P2"])
            await b.begin()
            other = next(f"Q{i}" for i in range(1000) if lock_key(f"Q{i}") % 256 not in
                         {lock_key("P1") % 256, lock_key("P2") % 256})  # fmt: skip
            await asyncio.wait_for(lock_pupils(b, [other]), 5)  # another pupil: not held up
            blocked = asyncio.create_task(lock_pupils(b, ["P2", "P9"]))
            await asyncio.sleep(0.5)
            assert not blocked.done()  # the same pupil: waits for the first transaction
            await a.commit()
            await asyncio.wait_for(blocked, 5)

            assert await try_lock(a, "rules:scheduler")
            assert not await try_lock(b, "rules:scheduler")  # the other process skips its turn
            await a.commit()
            assert await try_lock(b, "rules:scheduler")
            await b.commit()
    finally:
        await engine.dispose()
