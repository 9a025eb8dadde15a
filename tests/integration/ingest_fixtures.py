"""Building an ingest app against a real database and the test broker, plus a small school."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
from aiokafka import TopicPartition
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest import tables
from shared import kafka
from shared.migrate import upgrade
from shared.service import Runtime
from shared.settings import Settings
from shared.upn import make_upn
from tests.conftest import bearer

ADMIN = "admin"
# A fixed "now" inside the 2024-25 year, so marks of September 2024 are in the past.
NOW = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.UTC)

TERMS_2024_25 = [
    {"start": "2024-09-03", "end": "2024-10-25"},
    {"start": "2024-11-04", "end": "2024-12-20"},
    {"start": "2025-01-06", "end": "2025-02-14"},
    {"start": "2025-02-24", "end": "2025-04-04"},
    {"start": "2025-04-22", "end": "2025-05-23"},
    {"start": "2025-06-02", "end": "2025-07-22"},
]


@asynccontextmanager
async def service_client(
    service: str,
    db_url: str,
    bootstrap: str,
    *,
    clock: Callable[[], dt.datetime] = lambda: NOW,
    **settings: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """A service's app (migrated database, real Kafka) behind httpx's ASGI transport, once ready.

    ``client.app`` is the FastAPI app (its ``state.runtime`` holds the engine, relay, clock...).
    """
    await asyncio.to_thread(upgrade, service, db_url)
    module = importlib.import_module(f"services.{service}.app")
    config = Settings(service=service, env="test", database_url=db_url, kafka_bootstrap=bootstrap, **settings)
    app = module.create_app(config)
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        runtime.clock = clock
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{service}") as client:
            client.app = app  # type: ignore[attr-defined]
            for _ in range(120):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.25)
            yield client


def ingest_client(
    db_url: str, bootstrap: str, *, relay: bool = True, clock: Callable[[], dt.datetime] = lambda: NOW
) -> Any:
    """An ingest app (migrated database, real Kafka) behind httpx's ASGI transport."""
    return service_client("ingest", db_url, bootstrap, clock=clock, relay_enabled=relay)


def school_body(la: str = "343", type_: str = "maintained", phase: str = "primary") -> dict[str, Any]:
    return {
        "name": "Test Primary",
        "la_code": la,
        "phase": phase,
        "type": type_,
        "locality": "north",
        "ward": "Ainsdale",
    }


def pupil(serial: int, school_estab: int = 2000, **over: Any) -> dict[str, Any]:
    body = {
        "upn": make_upn(343, school_estab, 18, serial),
        "given_name": "Alex",
        "family_name": "Smith",
        "date_of_birth": "2016-05-01",
        "sex": "F",
        "year_group": "3",
        "home_la_code": "343",
        "home_postcode": "PR8 1AA",
        "ward": "Ainsdale",
        "admission_date": "2022-09-01",
        "fsm": False,
        "sen": "none",
        "parents": [{"id": f"P{serial}", "name": "Sam Smith"}],
    }
    body.update(over)
    return body


async def setup_school(
    client: httpx.AsyncClient, urn: str, pupils: list[dict[str, Any]], la: str = "343"
) -> None:
    r = await client.put(f"/v1/schools/{urn}", json=school_body(la), headers=bearer(ADMIN))
    assert r.status_code == 200, r.text
    school = bearer("pupils:write", [urn])
    r = await client.put(
        f"/v1/schools/{urn}/calendar/2024-25",
        json={
            "terms": TERMS_2024_25,
            "closed": [
                {"date": "2024-09-02", "session": "ALL", "reason": "INSET"},
                {"date": "2025-05-05", "session": "ALL", "reason": "Bank holiday"},
                {"date": "2024-09-13", "session": "PM", "reason": "Planned closure"},
            ],
        },
        headers=school,
    )
    assert r.status_code == 200, r.text
    if pupils:  # an empty roster is refused (422): no pupils means just the school and its calendar
        r = await client.put(f"/v1/schools/{urn}/pupils", json={"pupils": pupils}, headers=school)
        assert r.status_code == 200, r.text


async def read_topic(
    bootstrap: str,
    topic: str,
    predicate: Callable[[dict[str, Any]], bool],
    expect: int,
    wait_seconds: float = 20,
) -> list[tuple[bytes, dict[str, Any], dict[str, bytes]]]:
    """Events on ``topic`` matching ``predicate``: waits until ``expect`` are seen (or timeout)."""
    consumer = kafka.consumer(bootstrap, None)
    await consumer.start()
    found: list[tuple[bytes, dict[str, Any], dict[str, bytes]]] = []
    try:
        parts = [TopicPartition(topic, p) for p in range(await kafka.partition_count(bootstrap, topic))]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while len(found) < expect and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    event = orjson.loads(rec.value)
                    if predicate(event):
                        found.append((rec.key, event, dict(rec.headers)))
        # Linger briefly to catch duplicates beyond the expected count.
        batch = await consumer.getmany(timeout_ms=1000)
        for records in batch.values():
            for rec in records:
                event = orjson.loads(rec.value)
                if predicate(event):
                    found.append((rec.key, event, dict(rec.headers)))
    finally:
        await consumer.stop()
    return found


Event = tuple[bytes, dict[str, Any], dict[str, bytes]]


async def read_events(
    bootstrap: str, topic: str, predicate: Callable[[dict[str, Any]], bool], wait_seconds: float = 30
) -> list[Event]:
    """Every event on ``topic`` matching ``predicate``, from the start to the current end of each partition.

    Unlike ``read_topic`` it does not wait for a count: whatever was on the topic when it was called
    is read exactly (so duplicates and unexpected extras are seen), in offset order per partition.
    """
    consumer = kafka.consumer(bootstrap, None)
    await consumer.start()
    found: list[Event] = []
    try:
        parts = [TopicPartition(topic, p) for p in range(await kafka.partition_count(bootstrap, topic))]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        remaining = {tp for tp in parts if ends[tp] > 0}
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while remaining:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"could not read {topic} to its end")
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batch.items():
                for rec in records:
                    if rec.offset >= ends[tp]:
                        continue
                    event = orjson.loads(rec.value)
                    if predicate(event):
                        found.append((rec.key, event, dict(rec.headers)))
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return found


async def outbox_backlog(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        events = func.coalesce(func.sum(tables.outbox.c.events), 0)
        return int((await conn.execute(select(events))).scalar_one())


async def wait_outbox_empty(engine: AsyncEngine, wait_seconds: float = 20) -> None:
    """Wait until the relay has published (and Kafka acknowledged) everything committed so far."""
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while (left := await outbox_backlog(engine)) > 0:
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{left} outbox rows still unpublished after {wait_seconds}s")
        await asyncio.sleep(0.05)


async def published_events(
    engine: AsyncEngine, bootstrap: str, topic: str, predicate: Callable[[dict[str, Any]], bool]
) -> list[Event]:
    """The matching events on ``topic`` once the service's outbox has drained: exactly what was published."""
    await wait_outbox_empty(engine)
    return await read_events(bootstrap, topic, predicate)
