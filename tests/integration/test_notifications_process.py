"""The notifications service as its own process (uvicorn), over real HTTP: the Server-Sent Events
stream, and a SIGKILL in the middle of a webhook delivery that loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import uuid
from typing import Any

import httpx
import orjson
import pytest

from shared.events import Topic
from shared.migrate import upgrade
from tests.integration.notifications_fixtures import (
    ADMIN,
    TODAY,
    free_port,
    headers_for,
    new_secret,
    new_upn,
    publish,
    publish_registry,
    receiver,
    registry_events,
    signal_event,
    start_uvicorn,
    verify_webhook,
    wait_ready,
)

pytestmark = pytest.mark.integration


async def read_stream(
    base: str, headers: dict[str, str], out: list[dict[str, str]], opened: asyncio.Event, want: int, upn: str
) -> None:
    """Collect ``upn``'s ``alert`` events from GET /v1/alerts/stream until ``want`` have arrived
    (other tests' signals share the topics, so other pupils' alerts may be streamed too)."""
    async with (
        httpx.AsyncClient(base_url=base, timeout=30) as client,
        client.stream("GET", "/v1/alerts/stream", headers=headers) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        event: dict[str, str] = {}
        async for line in r.aiter_lines():
            if line.startswith("retry:"):
                opened.set()
            elif line == "":
                if event.get("event") == "alert" and orjson.loads(event["data"])["pupil"]["upn"] == upn:
                    out.append(event)
                    if len(out) >= want:
                        return
                event = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(":")
                event[key] = value.lstrip()


def stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait(timeout=30)


async def test_stream_and_sigkill_mid_delivery(tmp_path: Any, kafka_bootstrap: str) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'notifications.db'}"
    await asyncio.to_thread(upgrade, "notifications", db)
    env = {
        "ROLLCALL_TODAY": TODAY.isoformat(),
        "ROLLCALL_CONSUMER_GROUP": f"test-notifications-{uuid.uuid4().hex[:8]}",
        "ROLLCALL_DELIVERY_TIMEOUT_SECONDS": "1",  # so the lease of a killed attempt ends 6 s later
        "ROLLCALL_DELIVERY_POLL_SECONDS": "0.2",
        "ROLLCALL_ESCALATION_SECONDS": "3600",
    }
    upn, urn = new_upn(), "150001"
    procs: list[subprocess.Popen[bytes]] = []
    with receiver() as rx:
        rx.hang["/sw"] = 20  # the first attempt is never answered
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        procs.append(start_uvicorn(db, kafka_bootstrap, port, tmp_path / "n1.log", **env))
        try:
            await wait_ready(base)
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                for rid, role in (("sw-1", "social_worker"), ("ao-1", "attendance_officer")):
                    r = await client.put(
                        f"/v1/recipients/{rid}", json={"name": rid, "role": role}, headers=ADMIN
                    )
                    assert r.status_code == 200
                await client.put(
                    f"/v1/allocations/schools/{urn}", json={"attendance_officer": "ao-1"}, headers=ADMIN
                )
                await client.put(
                    f"/v1/allocations/pupils/{upn}", json={"social_worker": "sw-1"}, headers=ADMIN
                )
                secret = new_secret()
                body = {"url": rx.url("sw"), "secret": secret, "recipient": "sw-1"}
                assert (await client.post("/v1/subscriptions", json=body, headers=ADMIN)).status_code == 201
            await publish_registry(kafka_bootstrap, registry_events(upn, urn, cin=True))

            # The social worker's stream shows their new alert, and only theirs.
            streamed: list[dict[str, str]] = []
            opened = asyncio.Event()
            sw = headers_for("sw-1", "alerts:read")
            reader = asyncio.create_task(read_stream(base, sw, streamed, opened, 1, upn))
            await asyncio.wait_for(opened.wait(), 20)
            await publish(kafka_bootstrap, Topic.SIGNALS, [signal_event("first_day_absence", upn, urn)])
            await asyncio.wait_for(reader, 30)
            (event,) = streamed
            alert: dict[str, Any] = orjson.loads(event["data"])
            assert alert["recipient"] == "sw-1"
            assert alert["pupil"] == {"upn": upn, "school_urn": urn}

            # SIGKILL while the webhook request is in flight.
            for _ in range(1000):
                if rx.at("sw", upn, ok_only=False):
                    break
                await asyncio.sleep(0.02)
            assert rx.at("sw", upn, ok_only=False), "the delivery never started"
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(timeout=10)
            rx.hang.pop("/sw")

            procs.append(start_uvicorn(db, kafka_bootstrap, port, tmp_path / "n2.log", **env))
            await wait_ready(base)
            (delivered,) = await rx.wait("sw", upn, seconds=30)
            assert verify_webhook(secret, delivered)["id"] == alert["id"]
            await asyncio.sleep(1)
            assert len(rx.at("sw", upn)) == 1  # once by id (the receiver also saw the unanswered try)
            assert {r.headers["webhook-id"] for r in rx.at("sw", upn, ok_only=False)} == {alert["id"]}
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                r = await client.get(f"/v1/alerts/{alert['id']}", headers=sw)
                assert r.json()["status"] == "delivered"
                r = await client.get("/v1/deliveries", params={"alert": alert["id"]}, headers=ADMIN)
                (row,) = r.json()["items"]
                assert row["status"] == "delivered"
                assert row["attempts"] == 1  # the killed attempt was never recorded

            # Resuming with Last-Event-ID replays from the database, whichever process raised them.
            replay: list[dict[str, str]] = []
            resumed = {**ADMIN, "Last-Event-ID": "0"}
            await asyncio.wait_for(read_stream(base, resumed, replay, asyncio.Event(), 2, upn), 20)
            mine = [orjson.loads(e["data"]) for e in replay]
            assert sorted((a["recipient"], a["pupil"]["upn"]) for a in mine) == [("ao-1", upn), ("sw-1", upn)]
            assert [int(e["id"]) for e in replay] == sorted(int(e["id"]) for e in replay)
        finally:
            for proc in procs:
                stop(proc)
