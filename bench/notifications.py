"""Notifications benchmark (issue 4): mark-to-webhook latency of first-day alerts.

ingest, rules and notifications run under uvicorn with real Kafka (every service's today is
the same school day); a real webhook receiver listens on loopback. A school of looked-after
pupils, each with an allocated social worker, has its registers marked present; then, one
pupil at a time, the AM mark is amended to ``N`` and timed from the POST to ingest until the
signed ``uk.rollcall.alert.first_day_absence`` webhook reaches the social worker's receiver (and
until all three recipients — social worker, Virtual School, attendance officer — have theirs).
Then a burst: every pupil's PM mark is amended to ``N`` in one batch, timed until every webhook
has arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.stack import ADMIN, free_port, register_school, start_service
from deploy.kafka import Broker
from services.notifications import signing
from shared import kafka
from shared.auth import mint_token
from shared.events import Topic
from shared.settings import DEV_JWT_SECRET

DAY = "2025-03-03"  # a Monday in term: every service's "today"
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


async def bench_latency(bootstrap: str, work: Path, samples: int, workers: int) -> dict[str, float]:
    env = {"ROLLCALL_TODAY": DAY}
    group = f"bench-{uuid.uuid4().hex[:6]}"
    procs: list[subprocess.Popen[bytes]] = []
    rx = Receiver(asyncio.get_running_loop())
    try:
        ingest, ingest_url = await start_service(
            "ingest", f"sqlite+aiosqlite:///{work / 'ingest.db'}", bootstrap, **env
        )
        procs.append(ingest)
        rules, _ = await start_service(
            "rules", f"sqlite+aiosqlite:///{work / 'rules.db'}", bootstrap, **env,
            ROLLCALL_CONSUMER_GROUP=f"{group}-rules", ROLLCALL_SCHEDULER_SECONDS="3600",
        )  # fmt: skip
        procs.append(rules)
        notifications, notifications_url = await start_service(
            "notifications", f"sqlite+aiosqlite:///{work / 'notifications.db'}", bootstrap, **env,
            ROLLCALL_CONSUMER_GROUP=f"{group}-notifications", ROLLCALL_ESCALATION_SECONDS="86400",
        )  # fmt: skip
        procs.append(notifications)
        async with (
            httpx.AsyncClient(base_url=ingest_url, timeout=120) as ingest_client,
            httpx.AsyncClient(base_url=notifications_url, timeout=120) as notif_client,
        ):
            urn, headers, upns = await setup(ingest_client, notif_client, rx, samples, workers)
            await asyncio.sleep(5)  # let rules and notifications consume the registry
            signalled: dict[str, float] = {}  # when each pupil's AM signal reached Kafka
            consumer = kafka.consumer(bootstrap, None, Topic.SIGNALS, from_beginning=False)
            await consumer.start()

            async def listen() -> None:
                async for rec in consumer:
                    data = orjson.loads(rec.value)["data"]
                    if data["signal"] == "first_day_absence" and data["episode"].endswith(":AM"):
                        signalled.setdefault(data["upn"], time.perf_counter())

            listener = asyncio.create_task(listen())
            await asyncio.sleep(1)
            to_signal: list[float] = []
            to_sw: list[float] = []
            to_all: list[float] = []
            for i, upn in enumerate(upns):
                mark = {"marks": [{"upn": upn, "date": DAY, "session": "AM", "code": "N"}]}
                t0 = time.perf_counter()
                r = await ingest_client.post(
                    f"/v1/schools/{urn}/marks", content=orjson.dumps(mark), headers=headers
                )
                r.raise_for_status()
                keys = [("sw", upn), ("vs", upn), ("ao", upn)]
                await rx.wait_for(keys)
                to_sw.append(rx.arrived[("sw", upn)] - t0)
                if upn in signalled:
                    to_signal.append(signalled[upn] - t0)
                to_all.append(max(rx.arrived[k] for k in keys) - t0)
                if i and i % 250 == 0:
                    print(f"  {i} marks timed", flush=True)
            listener.cancel()
            await consumer.stop()
            # The burst: every pupil's PM mark amended in one batch.
            before = rx.count
            marks = [{"upn": u, "date": DAY, "session": "PM", "code": "N"} for u in upns]
            t0 = time.perf_counter()
            r = await ingest_client.post(f"/v1/schools/{urn}/marks", content=orjson.dumps({"marks": marks}),
                                         headers=headers)  # fmt: skip
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
    sw, everyone, sig = sorted(to_sw), sorted(to_all), sorted(to_signal)
    return {
        "signal_p50_ms": statistics.median(sig) * 1000 if sig else float("nan"),
        "samples": len(sw),
        "p50_ms": statistics.median(sw) * 1000,
        "p99_ms": sw[min(len(sw) - 1, int(len(sw) * 0.99))] * 1000,
        "all_p50_ms": statistics.median(everyone) * 1000,
        "all_p99_ms": everyone[min(len(everyone) - 1, int(len(everyone) * 0.99))] * 1000,
        "burst_alerts": len(upns),
        "burst_webhooks": burst_webhooks,
        "burst_s": burst_s,
        "bad_signatures": rx.bad_signatures,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench notifications",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--samples", type=int, default=1000, help="first-day alerts timed one at a time")
    parser.add_argument("--social-workers", type=int, default=20, help="social workers the pupils share")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rollcall-bench-notifications-"))
    broker = Broker(work / "kafka", free_port(), free_port())
    broker.start()
    asyncio.run(kafka.ensure_topics(broker.bootstrap))
    try:
        lat = asyncio.run(bench_latency(broker.bootstrap, work, args.samples, args.social_workers))
    finally:
        broker.kill()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nnotifications — {os.cpu_count()} cores")
    print(
        f"mark → social worker's webhook (first-day alert, {lat['samples']:.0f} marks one at a time): "
        f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms; all three recipients: "
        f"p50 {lat['all_p50_ms']:.1f} ms, p99 {lat['all_p99_ms']:.1f} ms "
        f"(of which mark → signal on Kafka p50 {lat['signal_p50_ms']:.1f} ms)"
    )
    print(
        f"burst: {lat['burst_alerts']:.0f} marks in one batch → {lat['burst_webhooks']:.0f} signed webhooks "
        f"in {lat['burst_s']:.1f} s ({lat['burst_webhooks'] / lat['burst_s']:.0f} webhooks/s); "
        f"bad signatures: {lat['bad_signatures']:.0f}"
    )


if __name__ == "__main__":
    main()
