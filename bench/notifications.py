"""Notifications benchmark (issue 4): mark-to-webhook latency of first-day alerts.

ingest, rules and notifications run under uvicorn with real Kafka (every service's today is
the same school day); a real webhook receiver listens on loopback. A school of looked-after
pupils, each with an allocated social worker, has its registers marked present; then, one
pupil at a time, the AM mark is amended to ``N`` and timed from the POST to ingest until the
signed ``uk.rollcall.alert.first_day_absence`` webhook reaches the social worker's receiver (and
until all three recipients — social worker, Virtual School, attendance officer — have theirs).
Then a burst: every pupil's PM mark is amended to ``N`` in one batch, timed until every webhook
has arrived.

``--background-rate 5000`` measures the same under load (issue 8: mark → signal p99 < 500 ms and
mark → webhook p99 < 1 s while ingest takes 5,000 marks/s): five other schools' registers
(1,000 pupils each, term days from September, ~6 % absence) are POSTed in 500-mark batches at that rate,
open loop (a batch is sent on schedule whether or not the previous one was answered), while the
marks are timed. Every service is on SQLite, the embedded default, or with ``--postgres`` on
PostgreSQL (``ROLLCALL_BENCH_POSTGRES_URL``; ``make bench`` sets it); the load generator runs on
the same two cores. ``--rules-processes 2`` runs rules as two processes on its one database
(README "Scaling out"): one with the first-day fast path and the outbox relay, one with the bulk
consumer, the scheduler and the API.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import summary
from bench.ingest import drop_postgres, fresh_postgres
from bench.stack import ADMIN, free_port, register_school, school_days, start_service
from deploy.kafka import Broker
from services.notifications import signing
from shared import kafka
from shared.auth import mint_token
from shared.events import Topic
from shared.settings import DEV_JWT_SECRET

DAY = "2025-03-03"  # a Monday in term: every service's "today"
SERVICES = ("ingest", "rules", "notifications")
ROLES = {"vs": "virtual_school", "ao": "attendance_officer"}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the socketserver default of 5 refuses bursts of parallel deliveries


class Receiver:
    """A webhook receiver on 127.0.0.1: records when each (path, pupil) first arrived."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.arrived: dict[tuple[str, str], float] = {}
        self.count = 0
        self.bad_signatures = 0
        self.secrets: dict[str, str] = {}
        self.changed = asyncio.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a production receiver would

            def do_POST(self) -> None:
                at = time.perf_counter()
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                path = self.path.strip("/").split("-")[0]
                secret = receiver.secrets.get(self.path.strip("/"))
                h = self.headers
                if secret is None or not signing.verify(
                    secret, h["webhook-id"], h["webhook-timestamp"], body, h["webhook-signature"]
                ):
                    receiver.bad_signatures += 1
                upn = orjson.loads(body)["data"]["pupil"]["upn"]
                receiver.arrived.setdefault((path, upn), at)
                receiver.count += 1
                loop.call_soon_threadsafe(receiver.changed.set)
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{path}"

    async def wait_for(self, keys: list[tuple[str, str]], seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not all(k in self.arrived for k in keys):
            self.changed.clear()
            if all(k in self.arrived for k in keys):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                missing = [k for k in keys if k not in self.arrived]
                raise TimeoutError(f"{len(missing)} webhooks never arrived, e.g. {missing[:3]}")
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                continue


async def setup(
    ingest: httpx.AsyncClient, notifications: httpx.AsyncClient, rx: Receiver, pupils: int, workers: int
) -> tuple[str, dict[str, str], list[str]]:
    urn = "170001"
    headers, upns = await register_school(ingest, urn, 7001, pupils)
    # Present at both sessions first, then looked after: no register is ever missing.
    for start in range(0, len(upns), 5000):
        marks = [{"upn": u, "date": DAY, "session": s, "code": "/"} for u in upns[start : start + 5000]
                 for s in ("AM", "PM")]  # fmt: skip
        r = await ingest.post(
            f"/v1/schools/{urn}/marks", content=orjson.dumps({"marks": marks}), headers=headers
        )
        r.raise_for_status()
    care_token = mint_token(DEV_JWT_SECRET, "social-care", ["care:write"], ttl_seconds=86400)
    care = {"Authorization": f"Bearer {care_token}"}
    body = {"cin": False, "cp": False, "cla": True, "early_help": False, "etac": False}
    for upn in upns:
        (await ingest.put(f"/v1/pupils/{upn}/care", json=body, headers=care)).raise_for_status()

    async def recipient(rid: str, role: str, path: str) -> None:
        r = await notifications.put(f"/v1/recipients/{rid}", json={"name": rid, "role": role}, headers=ADMIN)
        r.raise_for_status()
        rx.secrets[path] = signing.new_secret()
        sub = {"url": rx.url(path), "secret": rx.secrets[path], "recipient": rid}
        (await notifications.post("/v1/subscriptions", json=sub, headers=ADMIN)).raise_for_status()

    for path, role in ROLES.items():
        await recipient(path, role, path)
    for n in range(workers):
        await recipient(f"sw-{n}", "social_worker", f"sw-{n}")
    r = await notifications.put(
        f"/v1/allocations/schools/{urn}", json={"attendance_officer": "ao"}, headers=ADMIN
    )
    r.raise_for_status()
    for i, upn in enumerate(upns):
        r = await notifications.put(
            f"/v1/allocations/pupils/{upn}", json={"social_worker": f"sw-{i % workers}"}, headers=care
        )
        r.raise_for_status()
    return urn, headers, upns


class Background:
    """Open-loop register load on other schools: ``rate`` marks/s in batches every 100 ms, the
    schools in turn."""

    def __init__(self, client: httpx.AsyncClient, schools: list[tuple[str, dict[str, str], list[str]]]):
        self.client = client
        self._schools = [(urn, headers, self._register(upns)) for urn, headers, upns in schools]
        self.sent = self.stored = self.failed = 0
        self.late = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def _register(upns: list[str]) -> Iterator[dict[str, str]]:
        codes = ["/"] * 47 + ["N", "I", "U"]  # ~6 % absent
        n = 0
        for day in school_days(100):
            if day.isoformat() >= DAY:
                break
            for session in ("AM", "PM"):
                for upn in upns:
                    n += 1
                    code = codes[n * 7919 % 50]
                    yield {"upn": upn, "date": day.isoformat(), "session": session, "code": code}

    async def _post(self, urn: str, headers: dict[str, str], marks: list[dict[str, str]]) -> None:
        try:
            body = orjson.dumps({"marks": marks})
            r = await self.client.post(f"/v1/schools/{urn}/marks", content=body, headers=headers)
            if r.status_code == 200:
                self.stored += len(marks)
            else:
                self.failed += len(marks)
        except httpx.HTTPError:
            self.failed += len(marks)

    async def run(self, rate: float, stop: asyncio.Event) -> None:
        interval = 0.1
        per = max(1, round(rate * interval))
        due = time.perf_counter()
        turn = 0
        while not stop.is_set():
            urn, headers, marks = self._schools[turn % len(self._schools)]
            turn += 1
            batch = list(itertools.islice(marks, per))
            if not batch:
                break
            task = asyncio.create_task(self._post(urn, headers, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            self.sent += len(batch)
            due += interval
            wait = due - time.perf_counter()
            if wait < 0:
                self.late += 1
            await asyncio.sleep(max(0.0, wait))
        await asyncio.gather(*self._tasks)


FIRST_DAY_PROCESS = {"ROLLCALL_WORKERS": "consume_first_day,consume_directory"}
BULK_PROCESS = {"ROLLCALL_WORKERS": "-consume_first_day", "ROLLCALL_RELAY_ENABLED": "false"}
"""Rules as two processes on one database: the fast path with the outbox relay (so its signals are
published by an idle process), and everything else, whose events that relay publishes too."""


async def bench_latency(
    bootstrap: str,
    work: Path,
    samples: int,
    workers: int,
    background_rate: float = 0,
    databases: dict[str, str] | None = None,
    rules_processes: int = 1,
) -> dict[str, float]:
    env = {"ROLLCALL_TODAY": DAY}
    group = f"bench-{uuid.uuid4().hex[:6]}"
    db = databases or {s: f"sqlite+aiosqlite:///{work / f'{s}.db'}" for s in SERVICES}
    procs: list[subprocess.Popen[bytes]] = []
    rx = Receiver(asyncio.get_running_loop())
    try:
        ingest, ingest_url = await start_service("ingest", db["ingest"], bootstrap, **env)
        procs.append(ingest)
        rules_env = dict(env, ROLLCALL_CONSUMER_GROUP=f"{group}-rules", ROLLCALL_SCHEDULER_SECONDS="3600")
        for extra in [FIRST_DAY_PROCESS, BULK_PROCESS] if rules_processes == 2 else [{}]:
            rules, _ = await start_service("rules", db["rules"], bootstrap, **rules_env, **extra)
            procs.append(rules)
        notifications, notifications_url = await start_service(
            "notifications", db["notifications"], bootstrap, **env,
            ROLLCALL_CONSUMER_GROUP=f"{group}-notifications", ROLLCALL_ESCALATION_SECONDS="86400",
        )  # fmt: skip
        procs.append(notifications)
        async with (
            httpx.AsyncClient(base_url=ingest_url, timeout=120) as ingest_client,
            httpx.AsyncClient(base_url=notifications_url, timeout=120) as notif_client,
        ):
            urn, headers, upns = await setup(ingest_client, notif_client, rx, samples, workers)
            load: Background | None = None
            if background_rate:
                schools = []
                for n in range(5):
                    bg_urn = str(170010 + n)
                    bg_headers, bg_upns = await register_school(ingest_client, bg_urn, 7010 + n, 1000)
                    schools.append((bg_urn, bg_headers, bg_upns))
                load = Background(ingest_client, schools)
            await asyncio.sleep(5)  # let rules and notifications consume the registry
            signalled: dict[str, float] = {}  # when each pupil's AM signal reached Kafka
            published: dict[str, float] = {}  # when each timed mark reached Kafka (ingest's part)
            timed = {u.encode() for u in upns}
            consumer = kafka.consumer(bootstrap, None, Topic.SIGNALS, Topic.MARKS, from_beginning=False)
            await consumer.start()

            async def listen() -> None:
                async for rec in consumer:
                    if rec.topic == Topic.MARKS:
                        if rec.key in timed:  # the background's marks are passed over undecoded
                            published.setdefault(rec.key.decode(), time.perf_counter())
                        continue
                    data = orjson.loads(rec.value)["data"]
                    if data["signal"] == "first_day_absence" and data["episode"].endswith(":AM"):
                        signalled.setdefault(data["upn"], time.perf_counter())

            listener = asyncio.create_task(listen())
            stop_load = asyncio.Event()
            loader = asyncio.create_task(load.run(background_rate, stop_load)) if load else None
            await asyncio.sleep(5 if load else 1)  # under load: let the consumers reach a steady state
            load_t0 = time.perf_counter()
            to_signal: list[float] = []
            to_answer: list[float] = []
            to_published: list[float] = []
            to_sw: list[float] = []
            to_all: list[float] = []
            timed_out = 0
            for i, upn in enumerate(upns):
                mark = {"marks": [{"upn": upn, "date": DAY, "session": "AM", "code": "N"}]}
                t0 = time.perf_counter()
                r = await ingest_client.post(
                    f"/v1/schools/{urn}/marks", content=orjson.dumps(mark), headers=headers
                )
                r.raise_for_status()
                to_answer.append(time.perf_counter() - t0)
                keys = [("sw", upn), ("vs", upn), ("ao", upn)]
                try:
                    await rx.wait_for(keys, seconds=20)
                except TimeoutError:
                    # Under load the pipeline may fall behind without bound: count it and stop
                    # after a few, rather than report percentiles of a queue that only grows.
                    timed_out += 1
                    if timed_out >= 3:
                        print(f"  gave up after {i + 1} marks: {timed_out} alerts took over 20 s", flush=True)
                        break
                    continue
                to_sw.append(rx.arrived[("sw", upn)] - t0)
                if upn in signalled:
                    to_signal.append(signalled[upn] - t0)
                if upn in published:
                    to_published.append(published[upn] - t0)
                to_all.append(max(rx.arrived[k] for k in keys) - t0)
                if i and i % 250 == 0:
                    print(f"  {i} marks timed", flush=True)
            load_s = time.perf_counter() - load_t0
            stop_load.set()
            if loader is not None:
                await loader
            listener.cancel()
            await consumer.stop()
            burst_s, burst_webhooks = float("nan"), 0
            if load is None:  # at rest only: under load it would time the load's backlog
                # The burst: every pupil's PM mark amended in one batch.
                before = rx.count
                marks = [{"upn": u, "date": DAY, "session": "PM", "code": "N"} for u in upns]
                t0 = time.perf_counter()
                body = orjson.dumps({"marks": marks})
                r = await ingest_client.post(f"/v1/schools/{urn}/marks", content=body, headers=headers)
                r.raise_for_status()
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    rx.changed.clear()
                    if rx.count - before >= 3 * len(upns):
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(rx.changed.wait(), 5)
                burst_s = time.perf_counter() - t0
                burst_webhooks = rx.count - before
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        rx.server.shutdown()

    def ms(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000 if ordered else float("nan")

    return {
        "signal_p50_ms": ms(to_signal, 0.5),
        "signal_p99_ms": ms(to_signal, 0.99),
        "answer_p50_ms": ms(to_answer, 0.5),
        "answer_p99_ms": ms(to_answer, 0.99),
        "published_p50_ms": ms(to_published, 0.5),
        "published_p99_ms": ms(to_published, 0.99),
        "background_offered": load.sent / load_s if load else 0.0,
        "background_stored": load.stored / load_s if load else 0.0,
        "background_failed": float(load.failed) if load else 0.0,
        "background_late": float(load.late) if load else 0.0,
        "samples": len(to_sw),
        "p50_ms": ms(to_sw, 0.5),
        "p99_ms": ms(to_sw, 0.99),
        "all_p50_ms": ms(to_all, 0.5),
        "all_p99_ms": ms(to_all, 0.99),
        "burst_alerts": len(upns),
        "burst_webhooks": burst_webhooks,
        "burst_s": burst_s,
        "bad_signatures": rx.bad_signatures,
        "timed_out": timed_out,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench notifications",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--samples", type=int, default=1000, help="first-day alerts timed one at a time")
    parser.add_argument("--social-workers", type=int, default=20, help="social workers the pupils share")
    parser.add_argument("--background-rate", type=float, default=0, help="marks/s of register load meanwhile")
    parser.add_argument("--postgres", action="store_true", help="every service on PostgreSQL, not SQLite")
    parser.add_argument(
        "--rules-processes", type=int, choices=(1, 2), default=1,
        help="2: the first-day fast path (and the relay) in a rules process of its own",
    )  # fmt: skip
    args = parser.parse_args(argv)
    base = os.environ.get("ROLLCALL_BENCH_POSTGRES_URL")
    if args.postgres and not base:
        parser.error("--postgres needs ROLLCALL_BENCH_POSTGRES_URL (`make bench` sets it)")
    work = Path(tempfile.mkdtemp(prefix="rollcall-bench-notifications-"))
    broker = Broker(work / "kafka", free_port(), free_port())
    broker.start()
    asyncio.run(kafka.ensure_topics(broker.bootstrap))
    databases: dict[str, str] = {}
    try:
        if base and args.postgres:
            databases = {s: asyncio.run(fresh_postgres(base)) for s in SERVICES}
        lat = asyncio.run(
            bench_latency(
                broker.bootstrap, work, args.samples, args.social_workers, args.background_rate,
                databases, args.rules_processes,
            )
        )  # fmt: skip
    finally:
        broker.kill()
        shutil.rmtree(work, ignore_errors=True)
        for url in databases.values():
            asyncio.run(drop_postgres(base or "", url))
    where = f"{'PostgreSQL' if args.postgres else 'SQLite'}, rules in {args.rules_processes} process(es)"
    print(f"\nnotifications — {os.cpu_count()} cores, {where}")
    if args.background_rate:
        print(
            f"under load: {lat['background_offered']:.0f} marks/s offered, {lat['background_stored']:.0f}/s "
            f"stored, {lat['background_failed']:.0f} refused, {lat['background_late']:.0f} late batches; "
            f"{lat['timed_out']:.0f} alerts not delivered within 20 s"
        )
    print(
        f"mark → social worker's webhook (first-day alert, {lat['samples']:.0f} marks one at a time): "
        f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms; all three recipients: "
        f"p50 {lat['all_p50_ms']:.1f} ms, p99 {lat['all_p99_ms']:.1f} ms "
        f"(of which mark → signal on Kafka p50 {lat['signal_p50_ms']:.1f} ms, "
        f"p99 {lat['signal_p99_ms']:.1f} ms; mark answered by ingest p50 {lat['answer_p50_ms']:.1f} ms, "
        f"p99 {lat['answer_p99_ms']:.1f} ms; mark on Kafka p50 {lat['published_p50_ms']:.1f} ms, "
        f"p99 {lat['published_p99_ms']:.1f} ms)"
    )
    load = f" under {args.background_rate:,.0f} marks/s" if args.background_rate else " at rest"
    target = ("< 500 ms", "< 1 s") if args.background_rate else ("< 100 ms", "< 250 ms")
    late = f", {lat['timed_out']:.0f} over 20 s" if lat["timed_out"] else ""
    summary.add(f"mark → signal p99{load}", target[0], f"{lat['signal_p99_ms']:,.1f} ms{late}")
    summary.add(f"mark → first-day webhook p99{load}", target[1], f"{lat['p99_ms']:,.1f} ms{late}")
    if not args.background_rate:
        print(
            f"burst: {lat['burst_alerts']:.0f} marks in one batch → "
            f"{lat['burst_webhooks']:.0f} signed webhooks "
            f"in {lat['burst_s']:.1f} s ({lat['burst_webhooks'] / lat['burst_s']:.0f} webhooks/s); "
            f"bad signatures: {lat['bad_signatures']:.0f}"
        )


if __name__ == "__main__":
    main()
