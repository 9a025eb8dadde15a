"""Ingest throughput: 10,000-mark batches through real HTTP, into SQLite and PostgreSQL, onto Kafka.

For each database it starts a real Kafka broker (its own port), a fresh database, and the ingest
service under uvicorn; registers ``--schools`` schools of ``--pupils`` pupils through the API;
then every school posts ``--batches`` batches of 10,000 new marks (``pupils`` × sessions), the
schools in parallel and each school's batches one after another, as MIS systems do. It prints:

* durable marks/s — marks answered 200 (committed with their outbox events) per second;
* published marks/s — the same marks counted on ``rollcall.marks.v1`` (Kafka end offsets) per
  second of the whole run, i.e. until the relay has caught up;
* batch latency p50/p99 and the outbox backlog when the last 200 arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from deploy.kafka import Broker
from shared import kafka
from shared.auth import mint_token
from shared.events import Topic
from shared.migrate import upgrade
from shared.settings import DEV_JWT_SECRET
from shared.upn import make_upn

ROOT = Path(__file__).resolve().parent.parent
TERMS = [
    {"start": "2024-09-03", "end": "2024-10-25"},
    {"start": "2024-11-04", "end": "2024-12-20"},
    {"start": "2025-01-06", "end": "2025-02-14"},
    {"start": "2025-02-24", "end": "2025-04-04"},
    {"start": "2025-04-22", "end": "2025-05-23"},
    {"start": "2025-06-02", "end": "2025-07-22"},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def school_days(n: int) -> list[dt.date]:
    days: list[dt.date] = []
    d = dt.date(2024, 9, 3)
    while len(days) < n:
        if d.weekday() < 5 and not (dt.date(2024, 10, 26) <= d <= dt.date(2024, 11, 3)):
            days.append(d)
        d += dt.timedelta(days=1)
    return days


async def end_offsets(bootstrap: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = [
            TopicPartition(Topic.MARKS, p) for p in range(await kafka.partition_count(bootstrap, Topic.MARKS))
        ]
        offsets = await consumer.end_offsets(parts)
        return int(sum(offsets.values()))
    finally:
        await consumer.stop()


def start_ingest(db_url: str, bootstrap: str, port: int) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        ROLLCALL_ENV="test",
        ROLLCALL_SERVICE="ingest",
        ROLLCALL_DATABASE_URL=db_url,
        ROLLCALL_KAFKA_BOOTSTRAP=bootstrap,
        ROLLCALL_LOG_LEVEL="WARNING",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "services.ingest.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def run_backend(name: str, db_url: str, bootstrap: str, args: argparse.Namespace) -> dict[str, float]:
    await asyncio.to_thread(upgrade, "ingest", db_url)
    port = free_port()
    proc = await asyncio.to_thread(start_ingest, db_url, bootstrap, port)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            for _ in range(200):
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.25)
            admin = {"Authorization": f"Bearer {mint_token(DEV_JWT_SECRET, 'bench', ['admin'])}"}
            sessions_per_batch = max(1, 10_000 // args.pupils)
            days = school_days((args.batches * sessions_per_batch + 1) // 2 + 1)
            slots = [(d, s) for d in days for s in ("AM", "PM")]
            schools = [str(150000 + i) for i in range(args.schools)]
            headers: dict[str, dict[str, str]] = {}
            upns: dict[str, list[str]] = {}
            for i, urn in enumerate(schools):
                mis = mint_token(DEV_JWT_SECRET, "mis", ["marks:write", "pupils:write"], [urn])
                headers[urn] = {"Authorization": f"Bearer {mis}", "Content-Type": "application/json"}
                body = {"name": f"Bench {urn}", "la_code": "343", "phase": "secondary", "type": "academy"}
                (await client.put(f"/v1/schools/{urn}", json=body, headers=admin)).raise_for_status()
                (
                    await client.put(
                        f"/v1/schools/{urn}/calendar/2024-25",
                        json={"terms": TERMS, "closed": []},
                        headers=headers[urn],
                    )
                ).raise_for_status()
                upns[urn] = [make_upn(343, 4000 + i, 20, n) for n in range(args.pupils)]
                roster = [
                    {
                        "upn": u,
                        "given_name": "A",
                        "family_name": "B",
                        "date_of_birth": "2011-01-01",
                        "year_group": "9",
                        "home_la_code": "343",
                        "admission_date": "2020-09-01",
                        "fsm": False,
                        "sen": "none",
                    }
                    for u in upns[urn]
                ]
                (
                    await client.put(
                        f"/v1/schools/{urn}/pupils",
                        content=orjson.dumps({"pupils": roster}),
                        headers=headers[urn],
                    )
                ).raise_for_status()
            await asyncio.sleep(1)
            before = await end_offsets(bootstrap)
            latencies: list[float] = []
            codes = ["/", "/", "/", "/", "/", "/", "/", "/", "N", "I"]

            async def post_school(urn: str) -> int:
                sent = 0
                for b in range(args.batches):
                    batch_slots = slots[b * sessions_per_batch : (b + 1) * sessions_per_batch]
                    marks = [
                        {"upn": u, "date": d.isoformat(), "session": s, "code": codes[(k + j) % 10]}
                        for j, (d, s) in enumerate(batch_slots)
                        for k, u in enumerate(upns[urn])
                    ]
                    body = orjson.dumps({"marks": marks})
                    t0 = time.perf_counter()
                    r = await client.post(f"/v1/schools/{urn}/marks", content=body, headers=headers[urn])
                    latencies.append(time.perf_counter() - t0)
                    r.raise_for_status()
                    result = r.json()
                    assert not result["rejected"], result["rejected"][:3]
                    sent += result["accepted"]
                return sent

            start = time.perf_counter()
            total = sum(await asyncio.gather(*(post_school(u) for u in schools)))
            durable_s = time.perf_counter() - start
            backlog = total - (await end_offsets(bootstrap) - before)
            while await end_offsets(bootstrap) - before < total:
                await asyncio.sleep(0.05)
                if time.perf_counter() - start > 600:
                    raise RuntimeError("the relay did not publish every event within 10 minutes")
            published_s = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lat = sorted(latencies)
    return {
        "marks": total,
        "durable_per_s": total / durable_s,
        "published_per_s": total / published_s,
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        "backlog_at_last_200": backlog,
    }


async def fresh_postgres(base: str) -> str:
    name = f"rollcall_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(base.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return base.rsplit("/", 1)[0] + f"/{name}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--schools", type=int, default=4)
    parser.add_argument("--pupils", type=int, default=1000, help="pupils per school (batch = 10,000 marks)")
    parser.add_argument("--batches", type=int, default=5, help="batches per school")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rollcall-bench-"))
    kafka_port = free_port()
    broker = Broker(work / "kafka", kafka_port, free_port())
    broker.start()
    asyncio.run(kafka.ensure_topics(broker.bootstrap))
    rows: list[tuple[str, dict[str, float]]] = []
    try:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                url = f"sqlite+aiosqlite:///{work / 'ingest.db'}"
            else:
                base = os.environ.get("ROLLCALL_BENCH_POSTGRES_URL")
                if not base:
                    print("postgresql: skipped (ROLLCALL_BENCH_POSTGRES_URL not set; `make bench` sets it)")
                    continue
                url = asyncio.run(fresh_postgres(base))
            rows.append((backend, asyncio.run(run_backend(backend, url, broker.bootstrap, args))))
    finally:
        broker.kill()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\ningest throughput — {os.cpu_count()} cores, {args.schools} schools × {args.batches} batches "
        f"of {min(10_000, args.pupils * max(1, 10_000 // args.pupils))} marks"
    )
    columns = ("marks", "durable/s", "published/s", "p50 ms", "p99 ms", "backlog")
    print(f"{'database':<11}" + "".join(f"{c:>12}" for c in columns))
    for backend, r in rows:
        print(
            f"{backend:<11}{r['marks']:>9.0f}{r['durable_per_s']:>12.0f}{r['published_per_s']:>14.0f}"
            f"{r['p50_ms']:>9.0f}{r['p99_ms']:>9.0f}{r['backlog_at_last_200']:>9.0f}"
        )


if __name__ == "__main__":
    main()
