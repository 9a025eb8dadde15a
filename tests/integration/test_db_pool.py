"""A pooled PostgreSQL connection that the server closed is replaced at checkout (``shared.db``'s
checkout check, which stands in for ``pool_pre_ping``): the next transaction works, on a new
backend, and a request never sees the dead connection."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from shared.db import create_engine

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


async def test_a_connection_the_server_closed_is_replaced_at_checkout(postgres_url: str) -> None:
    engine = create_engine(postgres_url, pool_size=1, max_overflow=0)
    admin = create_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            first = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        for _ in range(3):  # the pool's one connection, killed again and again
            async with admin.connect() as other:
                killed = (
                    await other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": first})
                ).scalar_one()
            assert killed
            await asyncio.sleep(0.2)  # the server's close reaches the pooled connection's socket
            async with engine.begin() as conn:
                now = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            assert now != first
            first = now
    finally:
        await engine.dispose()
        await admin.dispose()
