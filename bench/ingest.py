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
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.stack import free_port, register_school, school_days, start_service
from deploy.kafka import Broker
from shared import kafka
from shared.events import Topic


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


async def run_backend(name: str, db_url: str, bootstrap: str, args: argparse.Namespace) -> dict[str, float]:
    proc, base = await start_service("ingest", db_url, bootstrap)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            sessions_per_batch = max(1, 10_000 // args.pupils)
            days = school_days((args.batches * sessions_per_batch + 1) // 2 + 1)
            slots = [(d, s) for d in days for s in ("AM", "PM")]
            schools = [str(150000 + i) for i in range(args.schools)]
            headers: dict[str, dict[str, str]] = {}
            upns: dict[str, list[str]] = {}
            for i, urn in enumerate(schools):
                headers[urn], upns[urn] = await register_school(client, urn, 4000 + i, args.pupils)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--schools", type=int, default=4)
    parser.add_argument("--pupils", type=int, default=1000, help="pupils per school (batch = 10,000 marks)")
    parser.add_argument("--batches", type=int, default=5, help="batches per school")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args(argv)
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
