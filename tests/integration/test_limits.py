"""Per-client rate limits (429 + Retry-After) and request size limits (413), over ASGI and real HTTP.

The ingest app runs against a migrated SQLite database and the session's Kafka broker with small
limits, so a handful of requests proves the behaviour; every service gets the same middleware
from ``shared.service.service_app`` (the last test checks all four).
"""

from __future__ import annotations

import asyncio
import importlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from sqlalchemy import func, select

from services.ingest import tables as t
from shared.db import create_engine
from shared.settings import Settings
from shared.upn import make_upn
from tests.conftest import bearer, token
from tests.integration.ingest_fixtures import ADMIN, pupil, school_body, service_client, setup_school

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
URN = "7390001"
ESTAB = 7390


def assert_problem(r: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["type"] == f"urn:rollcall:problem:{slug}"
    assert body["title"]
    assert body["detail"]
    return body


def as_client(client: httpx.AsyncClient, address: str) -> httpx.AsyncClient:
    """Another client of the same app, arriving from ``address``."""
    transport = httpx.ASGITransport(app=client.app, client=(address, 50000))  # type: ignore[attr-defined]
    return httpx.AsyncClient(transport=transport, base_url="http://ingest")


async def test_rate_limit_per_token_subject_answers_429_with_retry_after(
    sqlite_url: str, kafka_bootstrap: str
) -> None:
    async with service_client(
        "ingest", sqlite_url, kafka_bootstrap, rate_limit="3/minute", rate_limit_anonymous="2/minute"
    ) as client:
        alice = {"Authorization": f"Bearer {token('admin', sub='alice')}"}
        bob = {"Authorization": f"Bearer {token('admin', sub='bob')}"}
        for _ in range(3):
            r = await client.put(f"/v1/schools/{URN}", json=school_body(), headers=alice)
            assert r.status_code == 200, r.text
        refused = await client.put(f"/v1/schools/{URN}", json=school_body(), headers=alice)
        body = assert_problem(refused, 429, "rate-limited")
        retry_after = int(refused.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        assert body["retry_after"] == retry_after
        # Another subject (same address) has its own budget; probes are never limited.
        assert (await client.put(f"/v1/schools/{URN}", json=school_body(), headers=bob)).status_code == 200
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(path, headers=alice)).status_code == 200
        # A token for the same subject minted again (new iat/exp) is still the same client.
        again = {"Authorization": f"Bearer {token('admin', sub='alice')}"}
        assert_problem(await client.get("/v1/nothing-here", headers=again), 429, "rate-limited")

        # Without a valid token the client is its address, with the anonymous limit; a junk token
        # does not buy a fresh budget.
        other = as_client(client, "192.0.2.7")
        async with other:
            assert (await other.get("/v1/nothing-here")).status_code == 404
            junk = {"Authorization": "Bearer not-a-jwt"}
            r = await other.put(f"/v1/schools/{URN}", json=school_body(), headers=junk)
            assert r.status_code == 401
            assert_problem(await other.get("/v1/nothing-here"), 429, "rate-limited")
            # A valid token from that address is counted by its subject, not the address.
            carol = {"Authorization": f"Bearer {token('admin', sub='carol')}"}
            r = await other.put(f"/v1/schools/{URN}", json=school_body(), headers=carol)
            assert r.status_code == 200, r.text
        third = as_client(client, "192.0.2.8")
        async with third:
            assert (await third.get("/v1/nothing-here")).status_code == 404


async def test_size_limits_per_route_413_early_and_for_streamed_bodies(
    sqlite_url: str, kafka_bootstrap: str
) -> None:
    async with service_client(
        "ingest", sqlite_url, kafka_bootstrap, max_request_bytes=2_000, max_body_bytes=60_000
    ) as client:
        await setup_school(client, URN, [pupil(1, ESTAB)])
        admin = bearer(ADMIN)
        # A small route: a declared Content-Length over the limit is refused before the body is read.
        big_school = {**school_body(), "name": "x" * 150, "ward": "w" * 90, "locality": "l" * 90}
        padded = orjson.dumps(big_school) + b" " * 2_000
        assert_problem(
            await client.put(f"/v1/schools/{URN}", content=padded, headers={**admin, **JSON}),
            413,
            "payload-too-large",
        )
        # The same body streamed (chunked, no Content-Length) is cut off as it passes the limit.
        assert_problem(
            await client.put(f"/v1/schools/{URN}", content=chunks(padded, 500), headers={**admin, **JSON}),
            413,
            "payload-too-large",
        )

        # The bulk route (marks) takes up to max_body_bytes: 20 KB passes where 2 KB would not.
        mis = bearer("marks:write", [URN])
        upn = make_upn(343, ESTAB, 18, 1)
        rows = "".join(f"{upn},2024-09-{d:02d},AM,/\n" for d in (3, 4, 5, 6)) + "\n" * 20_000
        csv = ("upn,date,session,code\n" + rows).encode()
        r = await client.post(f"/v1/schools/{URN}/marks", content=csv, headers={**mis, **CSV})
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 4

        # Over the bulk limit, declared or streamed: 413, and nothing of it is written.
        more = "".join(f"{upn},2024-09-{d:02d},PM,/\n" for d in (3, 4, 5, 6)) + "\n" * 60_000
        oversize = ("upn,date,session,code\n" + more).encode()
        path = f"/v1/schools/{URN}/marks"
        assert_problem(
            await client.post(path, content=oversize, headers={**mis, **CSV}), 413, "payload-too-large"
        )
        assert_problem(
            await client.post(path, content=chunks(oversize, 8_192), headers={**mis, **CSV}),
            413,
            "payload-too-large",
        )
        engine = create_engine(sqlite_url)
        try:
            async with engine.connect() as conn:
                stored = (await conn.execute(select(func.count()).select_from(t.marks))).scalar_one()
        finally:
            await engine.dispose()
        assert stored == 4  # only the first batch's AM marks


JSON = {"Content-Type": "application/json"}
CSV = {"Content-Type": "text/csv"}


async def chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_limits_over_real_http(sqlite_url: str, kafka_bootstrap: str, tmp_path: Path) -> None:
    """The same answers through uvicorn on loopback: Content-Length checked early, chunked bodies
    capped, and the 429 carries Retry-After."""
    from shared.migrate import upgrade

    await asyncio.to_thread(upgrade, "ingest", sqlite_url)
    from services.ingest.app import create_app

    settings = Settings(
        service="ingest",
        env="test",
        database_url=sqlite_url,
        kafka_bootstrap=kafka_bootstrap,
        max_request_bytes=1_000,
        rate_limit="3/hour",  # the two 413s count too; an hour, so no window boundary in the run
        rate_limit_anonymous="3/hour",
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.05)
        admin = {"Authorization": f"Bearer {token('admin', sub='http-admin')}", **JSON}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            body = orjson.dumps(school_body()) + b" " * 1_000
            r = await http.put(f"/v1/schools/{URN}", content=body, headers=admin)
            assert_problem(r, 413, "payload-too-large")
            assert_problem(
                await http.put(f"/v1/schools/{URN}", content=chunks(body, 300), headers=admin),
                413,
                "payload-too-large",
            )
            ok = await http.put(f"/v1/schools/{URN}", json=school_body(), headers=admin)
            assert ok.status_code == 200, ok.text
            r = await http.put(f"/v1/schools/{URN}", json=school_body(), headers=admin)
            assert_problem(r, 429, "rate-limited")
            assert int(r.headers["retry-after"]) >= 1
            for _ in range(3):
                assert (await http.get("/healthz")).status_code == 200
            for _ in range(3):
                assert (await http.get("/v1/nothing")).status_code == 404
            assert_problem(await http.get("/v1/nothing"), 429, "rate-limited")
    finally:
        server.should_exit = True
        await serving


@pytest.mark.parametrize("service", ["ingest", "rules", "legal", "notifications"])
def test_every_service_has_the_limits_and_documents_them(service: str) -> None:
    module = importlib.import_module(f"services.{service}.app")
    app = module.create_app(Settings(service=service, env="test", rate_limit_anonymous="2/minute"))
    doc = app.openapi()
    operations = [(p, m, op) for p, item in doc["paths"].items() for m, op in item.items()]
    api = [(p, m, op) for p, m, op in operations if p.startswith("/v1/")]
    assert api
    for path, method, op in api:
        assert "429" in op["responses"], (path, method)
        assert "Retry-After" in op["responses"]["429"]["headers"]
        if "requestBody" in op:
            assert "413" in op["responses"], (path, method)

    async def probe() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            return [await client.get("/v1/no-such-route") for _ in range(3)]

    answers = asyncio.run(probe())
    assert [r.status_code for r in answers] == [404, 404, 429]
    assert "Retry-After" in answers[2].headers
