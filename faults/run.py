"""``python -m faults``: replay a term of the synthetic borough through ingest while injecting
faults, then check every effect against an independent recomputation.

Fault model (each at a random moment, in turn, ``--rounds`` times): SIGKILL of each service
process (ingest, rules, legal, notifications; each runs its outbox relay and consumers, so a kill
lands mid-request, mid-transaction, mid-publish or mid-consume), a SIGKILL of the Kafka broker
followed by a restart, an immediate (crash) restart of PostgreSQL, and — once today's marks have
raised first-day alerts — a SIGKILL of notifications while a webhook delivery is in flight. A
supervisor restarts killed services; the loader (the schools' MIS) retries any request that
fails, re-sending the batch (idempotent by contract).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx

from borough.generate import Borough
from borough.load import ADMIN_SCOPES, Loader, first_error
from borough.registers import SchoolRegisters
from deploy.kafka import Broker
from faults.infra import SERVICES, Postgres, Receiver, Service, Supervisor, free_port, migrate
from faults.verify import PARTITIONS, Expected, Report, drain, verify
from shared.auth import mint_token
from shared.kafka import ensure_topics
from shared.settings import DEV_JWT_SECRET

KINDS = ("kill-ingest", "kill-rules", "kill-legal", "kill-notifications", "restart-kafka", "restart-postgres")
RETRYABLE = {500, 502, 503, 504}


class RetryingLoader(Loader):
    """The borough loader as a real MIS behaves: a request that fails for want of ingest (refused,
    reset, timed out, 5xx) is sent again until ``deadline``; re-sending a batch is idempotent."""

    deadline: float = 0.0
    retries: int = 0

    async def _send(self, method: str, url: str, body: object, token: str, what: str) -> Any:
        delay = 0.2
        while True:
            try:
                return await super()._send(method, url, body, token, what)
            except httpx.TransportError:
                pass
            except Exception as exc:
                status = getattr(exc, "status", None)
                if status not in RETRYABLE:
                    raise
            if time.monotonic() > self.deadline:
                raise TimeoutError(f"{method} {url}: ingest did not come back")
            self.retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


@dataclass
class Faults:
    """The fault injector: one fault at a time, at random moments, each kind in turn."""

    services: dict[str, Service]
    broker: Broker
    postgres: Postgres
    receiver: Receiver
    rng: random.Random
    gap: tuple[float, float]
    done: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def inject(self, kind: str) -> None:
        with self.lock:
            if kind.startswith("kill-"):
                self.services[kind.removeprefix("kill-")].kill()
            elif kind == "restart-kafka":
                self.broker.kill()
                time.sleep(self.rng.uniform(0.5, 3))
                self.broker.start()
            elif kind == "restart-postgres":
                self.postgres.restart()
            self.done[kind] += 1

    def kill_mid_webhook(self, seconds: float = 60) -> bool:
        """Hold the receiver's answers; once a delivery is in flight, SIGKILL notifications."""
        rx = self.receiver
        rx.release.clear()
        rx.hold.set()
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if rx.in_flight > 0:
                    self.inject("kill-notifications")
                    with self.lock:
                        self.done["kill-notifications"] -= 1
                        self.done["kill-notifications-mid-webhook"] += 1
                    return True
                time.sleep(0.05)
            return False
        finally:
            rx.hold.clear()
            rx.release.set()

    async def run(self, rounds: int, until: asyncio.Event) -> None:
        """``rounds`` of every kind (shuffled per round), spaced by a random gap."""
        for _ in range(rounds):
            kinds = list(KINDS)
            self.rng.shuffle(kinds)
            for kind in kinds:
                await asyncio.sleep(self.rng.uniform(*self.gap))
                await asyncio.to_thread(self.inject, kind)
        until.set()


def expected_marks(
    registers: dict[str, SchoolRegisters], start: date, end: date
) -> dict[tuple[str, str, date, str], str]:
    """The register as the generator's MIS left it: first marks, then corrections, in order."""
    final: dict[tuple[str, str, date, str], str] = {}
    for urn, school in registers.items():
        for d in school.day_range(start, end):
            for m in [*school.day_marks(d), *school.corrections(d)]:
                final[(urn, m.upn, m.date, m.session)] = m.code
    return final


async def setup_notifications(base: str, receiver: Receiver) -> None:
    """The LA's attendance-officer team inbox and SAST duty inbox, and an all-alerts webhook."""
    admin = mint_token(DEV_JWT_SECRET, "faults-admin", ADMIN_SCOPES, ttl_seconds=3600)
    headers = {"authorization": f"Bearer {admin}"}
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=headers) as c:
        for rid, role in (("ao-team", "attendance_officer"), ("sast", "sast_duty")):
            r = await c.put(f"/v1/recipients/{rid}", json={"name": rid, "role": role, "la_code": "343"})
            r.raise_for_status()
        r = await c.post(
            "/v1/subscriptions",
            json={"url": receiver.url, "secret": "whsec_" + base64.b64encode(os.urandom(24)).decode()},
        )
        r.raise_for_status()


def last_school_day(borough: Borough, start: date, end: date) -> date:
    cal = borough.calendar(borough.schools[0])
    day = end
    while day >= start:
        if day.weekday() < 5 and any(s <= day <= e for s, e in cal.terms):
            return day
        day -= timedelta(days=1)
    raise SystemExit("no school day in the range")


async def run(args: argparse.Namespace) -> Report:
    began = time.monotonic()
    rng = random.Random(args.fault_seed)
    home = Path(tempfile.mkdtemp(prefix="rollcall-faults-"))
    borough = Borough(args.seed, args.scale)
    today = last_school_day(borough, args.start, args.end)
    postgres = Postgres(home / "pg", free_port(5500, 5600))
    broker = Broker(home / "kafka", free_port(), free_port(29450), heap="384m")
    receiver = Receiver()
    services: dict[str, Service] = {}
    supervisor: Supervisor | None = None
    try:
        postgres.start()
        broker.start()
        await ensure_topics(broker.bootstrap, partitions=PARTITIONS)
        ports = {s: free_port(29300, 29399) for s in SERVICES}
        common = {
            "ROLLCALL_ENV": "dev",
            "ROLLCALL_KAFKA_BOOTSTRAP": broker.bootstrap,
            "ROLLCALL_TODAY": today.isoformat(),
            "ROLLCALL_SCHEDULER_SECONDS": "5",
            "ROLLCALL_DELIVERY_TIMEOUT_SECONDS": "2",
            "ROLLCALL_DELIVERY_POLL_SECONDS": "0.2",
            "ROLLCALL_ESCALATION_SECONDS": "86400",
            "ROLLCALL_LEGAL_URL": f"http://127.0.0.1:{ports['legal']}",
            "ROLLCALL_NOTIFICATIONS_URL": f"http://127.0.0.1:{ports['notifications']}",
        }
        for name in SERVICES:
            db = f"faults_{name}"
            postgres.create(db)
            url = postgres.url(db)
            await asyncio.to_thread(migrate, name, url)
            env = {**common, "ROLLCALL_CONSUMER_GROUP": f"faults-{name}"}
            services[name] = Service(name, ports[name], url, home / f"{name}.log", env)
        for s in services.values():
            s.start()
        for s in services.values():
            await asyncio.to_thread(s.wait_ready)
        await setup_notifications(services["notifications"].base, receiver)
        supervisor = Supervisor(services)
        supervisor.start()
        faults = Faults(services, broker, postgres, receiver, rng, (args.gap_min, args.gap_max))

        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        async with httpx.AsyncClient(
            base_url=services["ingest"].base, timeout=httpx.Timeout(60.0), limits=limits
        ) as client:
            loader = RetryingLoader(client, borough, batch=args.batch, concurrency=args.concurrency,
                                    period="day", progress=False)  # fmt: skip
            loader.deadline = time.monotonic() + args.timeout
            faults_done = asyncio.Event()
            injector = asyncio.create_task(faults.run(args.rounds, faults_done))
            try:
                registers = await loader.register()
                await loader.send_marks(registers, args.start, today - timedelta(days=1))
                await faults_done.wait()  # every fault lands while marks or their effects flow
                # Today's marks raise the first-day alerts; kill notifications mid-webhook.
                sender = asyncio.create_task(loader.send_marks(registers, today, today))
                for _ in range(args.rounds):
                    await asyncio.to_thread(faults.kill_mid_webhook)
                    await asyncio.to_thread(services["notifications"].wait_ready)
                await sender
            except BaseExceptionGroup as group:
                raise first_error(group) from None
            finally:
                injector.cancel()
        for s in services.values():
            await asyncio.to_thread(s.wait_ready)
        urls = {name: s.db_url for name, s in services.items()}
        expected = Expected(marks=expected_marks(registers, args.start, today), today=today)
        await drain(urls, broker.bootstrap, seconds=args.timeout)
        report = await verify(urls, broker.bootstrap, receiver, expected)
        report.faults = dict(faults.done)
        report.restarts = supervisor.restarts
        report.retries = loader.retries
        report.seconds = time.monotonic() - began
        return report
    finally:
        if supervisor is not None:
            supervisor.stop()
        receiver.close()
        broker.kill()
        with contextlib.suppress(subprocess.CalledProcessError):
            postgres.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"kept {home}")


def _date(text: str) -> date:
    return date.fromisoformat(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=2024, help="borough generator seed")
    p.add_argument("--scale", type=float, default=0.01, help="share of the borough (default 0.01)")
    p.add_argument("--from", dest="start", type=_date, default=date(2024, 9, 2), help="first day of marks")
    p.add_argument("--to", dest="end", type=_date, default=date(2024, 10, 25), help="last day (= today)")
    p.add_argument("--rounds", type=int, default=2, help="faults of each kind (default 2)")
    p.add_argument("--gap-min", type=float, default=2.0, help="least seconds between faults")
    p.add_argument("--gap-max", type=float, default=8.0, help="most seconds between faults")
    p.add_argument("--fault-seed", type=int, default=None, help="seed of the fault schedule")
    p.add_argument("--batch", type=int, default=2000, help="marks per request")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    p.add_argument("--timeout", type=float, default=900, help="seconds before giving up")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, data)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    report = asyncio.run(run(args))
    print(report.table())
    return 0 if report.ok else 1
