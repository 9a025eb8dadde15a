"""Shared fixtures: one real Kafka broker per test run, SQLite and PostgreSQL databases, tokens.

Kafka runs on its own ports (19092/19093) under a temporary folder so a developer's running stack
on 9092 is untouched. PostgreSQL tests need ``ROLLCALL_TEST_POSTGRES_URL`` (``make test`` and CI
set it from ``deploy/postgres.sh``); without it they are skipped, and CI fails if any are.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import uuid
from collections.abc import Awaitable, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deploy.kafka import Broker
from shared.auth import mint_token
from shared.kafka import ensure_topics
from shared.settings import DEV_JWT_SECRET

KAFKA_PORT = int(os.environ.get("ROLLCALL_TEST_KAFKA_PORT", "19092"))
SECRET = DEV_JWT_SECRET
TEST_SECONDS = float(os.environ.get("ROLLCALL_TEST_SECONDS", "600"))
"""The most one async test may take (the slowest, the access matrix, takes ~100 s here): it is
cancelled there and fails with the traceback of where it waited. A hang that cancellation cannot
reach (a blocked thread, a fixture's teardown) meets pytest's ``faulthandler_timeout``
(pyproject.toml, 2 minutes later): every thread's stack is dumped and the run ends, so a hang
costs CI minutes, not its whole budget with nothing printed."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    """An async test runs under ``asyncio.timeout(TEST_SECONDS)``."""
    func = getattr(item, "obj", None)
    if func is None or not inspect.iscoroutinefunction(func):
        return (yield)

    @functools.wraps(func)
    async def bounded(*args: Any, **kwargs: Any) -> Any:
        limit = asyncio.timeout(TEST_SECONDS)
        try:
            async with limit:
                return await func(*args, **kwargs)
        except TimeoutError as exc:
            if limit.expired():
                raise AssertionError(f"{item.nodeid} took over {TEST_SECONDS:.0f} s") from exc
            raise

    item.obj = bounded  # type: ignore[attr-defined]
    try:
        return (yield)
    finally:
        item.obj = func  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    broker = Broker(tmp_path_factory.mktemp("kafka"), KAFKA_PORT, KAFKA_PORT + 1, heap="512m")
    broker.start()
    asyncio.run(ensure_topics(broker.bootstrap, partitions=3))
    yield broker.bootstrap
    broker.kill()  # its data is temporary: no need for a slow controlled shutdown


@pytest.fixture(scope="session")
def kafka_broker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Broker:
    """The running test broker's handle (for tests that restart it)."""
    base = Path(str(tmp_path_factory.getbasetemp()))
    home = next(p for p in base.iterdir() if p.name.startswith("kafka"))
    return Broker(home, KAFKA_PORT, KAFKA_PORT + 1, heap="512m")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


def postgres_admin_url() -> str | None:
    return os.environ.get("ROLLCALL_TEST_POSTGRES_URL")


@contextlib.contextmanager
def postgres_maker() -> Iterator[Callable[[], Awaitable[str]]]:
    """Makes new, empty PostgreSQL databases (one per service: they own same-named tables);
    all are dropped on exit."""
    base = postgres_admin_url()
    if not base:
        if os.environ.get("CI"):
            pytest.fail("CI must test PostgreSQL: ROLLCALL_TEST_POSTGRES_URL is not set")
        pytest.skip("ROLLCALL_TEST_POSTGRES_URL is not set (run `make test`)")
    dsn = base.replace("postgresql+asyncpg://", "postgresql://")
    made: list[str] = []

    async def make() -> str:
        name = f"rollcall_t_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        made.append(name)
        return base.rsplit("/", 1)[0] + f"/{name}"

    yield make

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for name in made:
                # An autovacuum worker can hold the database for a moment, and only a superuser
                # may terminate it: retry, and leave a stray test database rather than fail.
                for attempt in range(10):
                    try:
                        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                        break
                    except asyncpg.PostgresError:
                        await asyncio.sleep(0.2 * (attempt + 1))
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture
def postgres_databases() -> Iterator[Callable[[], Awaitable[str]]]:
    """New, empty PostgreSQL databases for one test, dropped afterwards."""
    with postgres_maker() as make:
        yield make


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def make_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], Awaitable[str]]:
    """Makes a fresh database URL per name: a SQLite file, or (the postgres param) a new
    PostgreSQL database."""

    async def make(name: str) -> str:
        if request.param == "sqlite":
            return f"sqlite+aiosqlite:///{tmp_path / name}.db"
        maker: Callable[[], Awaitable[str]] = request.getfixturevalue("postgres_databases")
        return await maker()

    return make


@pytest.fixture
async def postgres_url(postgres_databases: Callable[[], Awaitable[str]]) -> str:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    return await postgres_databases()


async def new_topic(bootstrap: str, prefix: str, partitions: int) -> str:
    """A new topic of the test's own, ``<prefix>.<random>``, with ``partitions`` partitions."""
    topic = f"{prefix}.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()
    return topic


def token(scopes: str, schools: list[str] | None = None, la: str | None = None, sub: str = "test") -> str:
    return mint_token(SECRET, sub, scopes.split(), schools=schools, la=la)


def bearer(scopes: str, schools: list[str] | None = None, la: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(scopes, schools, la)}"}
