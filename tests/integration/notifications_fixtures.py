"""Test helpers for the notifications service: its app against a real database and the test
broker, real HTTP webhook receivers and an SMTP server on loopback, and event builders.

The receivers verify nothing themselves: tests check each request's Standard Webhooks signature
with ``hmac``/``hashlib`` directly (``verify_webhook``), independently of the service's code.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import itertools
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
from aiosmtpd.controller import Controller
from sqlalchemy import select

from services.notifications import tables
from services.notifications.app import create_app
from services.notifications.settings import NotificationSettings
from shared import kafka
from shared.events import CareData, PupilData, SchoolData, Topic, new_event
from shared.migrate import upgrade
from shared.service import Runtime
from shared.upn import make_upn
from tests.conftest import token

ROOT = Path(__file__).resolve().parents[2]
LONDON = ZoneInfo("Europe/London")
TODAY = dt.date(2025, 3, 3)  # a Monday in term (tests/integration/ingest_fixtures.TERMS_2024_25)
_serials = itertools.count(1)


class Clock:
    """The services' clock: TODAY at 08:30 London when made, running in real time, and movable."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._start = start or dt.datetime.combine(TODAY, dt.time(8, 30), LONDON).astimezone(dt.UTC)
        self._t0 = time.monotonic()
        self.offset = 0.0

    def __call__(self) -> dt.datetime:
        return self._start + dt.timedelta(seconds=time.monotonic() - self._t0 + self.offset)

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_upn() -> str:
    """A UPN no other test of this run uses (the topics are shared by every test of a run)."""
    return make_upn(343, 4000 + os.getpid() % 5000, 19, next(_serials))


def headers_for(sub: str, scopes: str, **kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(scopes, sub=sub, **kw)}"}


ADMIN = headers_for("admin", "admin")


@asynccontextmanager
async def notifications_client(
    db_url: str, bootstrap: str, *, clock: Callable[[], dt.datetime], **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The notifications app (migrated database, real Kafka, its own consumer group) behind httpx's
    ASGI transport, once ready; ``client.app.state.runtime`` is its runtime."""
    await asyncio.to_thread(upgrade, "notifications", db_url)
    settings.setdefault("consumer_group", f"test-notifications-{uuid.uuid4().hex[:8]}")
    settings.setdefault("scheduler_seconds", 0.2)
    settings.setdefault("delivery_poll_seconds", 0.2)
    config = NotificationSettings(env="test", database_url=db_url, kafka_bootstrap=bootstrap, **settings)
    app = create_app(config)
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        runtime.clock = clock
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://notifications") as client:
            client.app = app  # type: ignore[attr-defined]
            for _ in range(120):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.25)
            yield client


# --- webhook receivers --------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the socketserver default of 5 refuses bursts of parallel deliveries


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 recording every POST; answers ``status[path]`` (default 200)
    after ``hang[path]`` seconds."""

    requests: list[Received] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)
    hang: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                path = self.path
                status = receiver.status.get(path, 200)
                pause = receiver.hang.get(path, 0.0)
                if pause:
                    receiver.requests.append(Received(path, _lower(self.headers), body, 0))
                    time.sleep(pause)
                    return  # never answers: the sender has given up (or died) by now
                receiver.requests.append(Received(path, _lower(self.headers), body, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def at(self, path: str, upn: str | None = None, ok_only: bool = True) -> list[Received]:
        """Requests to ``/path`` (about pupil ``upn``), answered 2xx unless ``ok_only`` is False."""
        out = []
        for r in list(self.requests):
            if r.path != f"/{path}" or (ok_only and not r.ok):
                continue
            if upn is not None and r.event["data"]["pupil"]["upn"] != upn:
                continue
            out.append(r)
        return out

    async def wait(self, path: str, upn: str, count: int = 1, seconds: float = 30) -> list[Received]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            got = self.at(path, upn)
            if len(got) >= count:
                return got
            await asyncio.sleep(0.05)
        raise AssertionError(f"/{path} got {len(self.at(path, upn))} webhooks for {upn}, wanted {count}")


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


@contextmanager
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def verify_webhook(secret: str, r: Received) -> dict[str, Any]:
    """Check a request against CONTRACT "Webhook delivery" by hand; returns its CloudEvent."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, timestamp = r.headers["webhook-id"], r.headers["webhook-timestamp"]
    signed = f"{msg_id}.{timestamp}.".encode() + r.body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert expected in r.headers["webhook-signature"].split(" "), "bad signature"
    assert abs(int(timestamp) - time.time()) < 300
    event = r.event
    assert event["specversion"] == "1.0"
    assert event["id"] == event["subject"] == msg_id == event["data"]["alert_id"]
    assert event["type"] == f"uk.rollcall.alert.{event['data']['signal']}"
    assert set(event["data"]) >= {"alert_id", "signal", "pupil", "raised_at", "evidence_url", "recipient"}
    assert set(event["data"]["pupil"]) == {"upn", "school_urn"}
    return event


# --- SMTP ---------------------------------------------------------------------------------------


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message."""
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


# --- events ---------------------------------------------------------------------------------------


def registry_events(
    upn: str, urn: str, *, cla: bool = False, cin: bool = False, cp: bool = False, early_help: bool = False,
    home_la: str = "343", sen: str = "none", ehcp_la: str | None = None, school_la: str = "343",
) -> list[tuple[str, dict[str, Any]]]:  # fmt: skip
    """Complete ``school.updated``, ``pupil.updated`` and ``care.updated`` events, as ingest sends them."""
    school = SchoolData(urn=urn, name="Test", la_code=school_la, phase="primary", type="maintained")
    pupil = PupilData(
        upn=upn, school_urn=urn, date_of_birth=dt.date(2016, 5, 1), year_group="3", home_la_code=home_la,
        admission_date=dt.date(2022, 9, 1), fsm=False, sen=sen, ehcp_la_code=ehcp_la,  # type: ignore[arg-type]
    )  # fmt: skip
    care = CareData(upn=upn, cin=cin, cp=cp, cla=cla, early_help=early_help, etac=False)
    return [
        (urn, new_event("school.updated", "/rollcall/ingest", school.model_dump(mode="json"), subject=urn)),
        (upn, new_event("pupil.updated", "/rollcall/ingest", pupil.model_dump(mode="json"), subject=upn)),
        (upn, new_event("care.updated", "/rollcall/ingest", care.model_dump(mode="json"), subject=upn)),
    ]


def signal_event(
    name: str, upn: str, urn: str, day: dt.date = TODAY, session: str = "AM", withdrawn: bool = False
) -> tuple[str, dict[str, Any]]:
    """A ``signal.<name>`` event shaped like the rules service's (services/rules/recompute.py)."""
    base = name.removesuffix("_ended").removesuffix("_started")
    per_session = base in ("first_day_absence", "register_missing")
    episode = f"{base}:{urn}:{day.isoformat()}" + (f":{session}" if per_session else "")
    data = {
        "signal": name,
        "upn": upn,
        "school_urn": urn,
        "episode": episode,
        "started_on": day.isoformat(),
        "ended_on": day.isoformat(),
        "occurred_on": day.isoformat(),
        "current": day == TODAY,
        "withdrawn": withdrawn,
        "detail": {"session": session, "code": "N"},
        "evidence": [[day.isoformat(), session, "N"]],
    }
    return upn, new_event(f"signal.{name}", "/rollcall/rules", data, subject=upn)


async def publish(bootstrap: str, topic: str, events: list[tuple[str, dict[str, Any]]]) -> None:
    producer = kafka.producer(bootstrap)
    await producer.start()
    try:
        for key, event in events:
            headers = [("ce_id", event["id"].encode()), ("ce_type", event["type"].encode())]
            await producer.send_and_wait(topic, orjson.dumps(event), key=key.encode(), headers=headers)
    finally:
        await producer.stop()


async def publish_registry(bootstrap: str, events: list[tuple[str, dict[str, Any]]]) -> None:
    await publish(bootstrap, Topic.REGISTRY, events)


# --- polling the API ------------------------------------------------------------------------------


async def alerts_of(client: httpx.AsyncClient, upn: str, **params: str) -> list[dict[str, Any]]:
    r = await client.get("/v1/alerts", params={"upn": upn, "limit": "500", **params}, headers=ADMIN)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def wait_alerts(
    client: httpx.AsyncClient,
    upn: str,
    predicate: Callable[[list[dict[str, Any]]], bool],
    seconds: float = 30,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        items = await alerts_of(client, upn)
        if predicate(items):
            return items
        await asyncio.sleep(0.1)
    raise AssertionError(f"alerts for {upn} never matched: {items}")


async def wait_registry(client: httpx.AsyncClient, upn: str, seconds: float = 20) -> None:
    """Until the service has consumed the pupil's care status (routing reads it)."""
    engine = client.app.state.runtime.engine  # type: ignore[attr-defined]
    for _ in range(int(seconds * 10)):
        async with engine.connect() as conn:
            if (await conn.execute(select(tables.care.c.upn).where(tables.care.c.upn == upn))).first():
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"care status of {upn} never arrived")


# --- the service under uvicorn ---------------------------------------------------------------------


def start_uvicorn(db_url: str, bootstrap: str, port: int, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """The notifications service as its own process (``uvicorn --factory``), as deployed."""
    environ = dict(
        os.environ,
        ROLLCALL_ENV="test",
        ROLLCALL_SERVICE="notifications",
        ROLLCALL_DATABASE_URL=db_url,
        ROLLCALL_KAFKA_BOOTSTRAP=bootstrap,
        **env,
    )
    command = [sys.executable, "-m", "uvicorn", "services.notifications.app:create_app", "--factory",
               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=environ, stdout=log.open("ab"), stderr=subprocess.STDOUT)


async def wait_ready(base: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"{base} did not become ready")
