"""A pooled PostgreSQL connection that the server closed is replaced at checkout (``shared.db``'s
checkout check, which stands in for ``pool_pre_ping``): the next transaction works, on a new
backend, and a request never sees the dead connection."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from shared.db import create_engine, on_loopback_without_tls_choice

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


@pytest.mark.parametrize(("query", "tls"), [("", False), ("?ssl=require", True), ("?ssl=prefer", True)])
async def test_loopback_connections_are_plain_unless_the_url_asks_for_tls(
    postgres_url: str, query: str, tls: bool
) -> None:
    """The test server is on 127.0.0.1 and offers TLS (Debian's does): without an ``ssl`` of its
    own the URL connects plainly; with one, the URL's choice stands."""
    assert on_loopback_without_tls_choice(postgres_url)
    server = create_engine(postgres_url)
    try:
        async with server.connect() as conn:
            offered = (await conn.execute(text("SHOW ssl"))).scalar_one()
    finally:
        await server.dispose()
    if offered != "on":
        pytest.skip("this PostgreSQL server does not offer TLS")
    engine = create_engine(postgres_url + query)
    try:
        async with engine.connect() as conn:
            used = (
                await conn.execute(text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))
            ).scalar_one()
        assert used is tls
    finally:
        await engine.dispose()


def test_only_a_loopback_url_without_a_tls_choice_is_made_plain() -> None:
    plain = on_loopback_without_tls_choice
    assert plain("postgresql+asyncpg://u:p@127.0.0.1:5432/db")
    assert plain("postgresql+asyncpg://u:p@localhost/db")
    assert plain("postgresql+asyncpg://u:p@[::1]:5432/db")
    assert not plain("postgresql+asyncpg://u:p@db.internal:5432/db")
    assert not plain("postgresql+asyncpg://u:p@10.0.0.5/db")
    assert not plain("postgresql+asyncpg://u:p@127.0.0.1/db?sslmode=require")
    assert not plain("sqlite+aiosqlite:///rollcall.db")
