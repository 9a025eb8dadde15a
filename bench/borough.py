"""The synthetic borough's whole year through the public ingest API (issue 8: < 10 minutes).

A real Kafka broker and the ingest service under uvicorn on a fresh database (PostgreSQL from
``ROLLCALL_BENCH_POSTGRES_URL`` when set — ``make bench`` sets it — else SQLite); then
``borough.load`` sends the borough exactly as ``python -m borough load`` does, as the schools'
MIS would: every school, calendar, roll and care record, then the year's marks week by week,
each school's batches (≤ 10,000 marks) one after another, ``--concurrency`` requests in flight.
The clock stops when every mark is durable (answered) and again when the last one is on
``rollcall.marks.v1`` (published). The generator runs in this process, on the same two cores as
ingest, its database and Kafka; only ingest is timed (rules, consuming the same year, is
measured by ``python -m bench rules``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench import summary
from bench.ingest import cpu_seconds, drop_postgres, end_offsets, fresh_postgres
from bench.stack import free_port, start_processes
from borough.load import load
from deploy.kafka import Broker
from shared import kafka

TARGET_SECONDS = 600


async def run(
    db_url: str, bootstrap: str, scale: float, concurrency: int, processes: int
) -> dict[str, float]:
    proc, base = await start_processes("ingest", db_url, bootstrap, processes, {})
    try:
        cpu0 = cpu_seconds(proc.pid)
        before = await end_offsets(bootstrap)
        t0 = time.perf_counter()
        stats = await load(base, scale=scale, concurrency=concurrency, progress=False)
        durable_s = time.perf_counter() - t0
        events = stats.accepted + stats.amended  # an unchanged mark publishes nothing
        deadline = time.monotonic() + 900
        while await end_offsets(bootstrap) - before < events:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "the relay did not publish every mark within 15 minutes of the last answer"
                )
            await asyncio.sleep(0.2)
        published_s = time.perf_counter() - t0
        cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return {
        "pupils": stats.pupils,
        "marks": stats.marks,
        "registry_s": stats.seconds - stats.marks_seconds,
        "marks_s": stats.marks_seconds,
        "marks_per_s": stats.marks_per_second,
        "durable_s": durable_s,
        "published_s": published_s,
        "ingest_cpu_s": cpu,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench borough",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="fraction of the borough (1.0: ~38,000 pupils)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    parser.add_argument("--processes", type=int, default=1, help="ingest's uvicorn worker processes")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rollcall-bench-borough-"))
    broker = Broker(work / "kafka", free_port(), free_port())
    broker.start()
    asyncio.run(kafka.ensure_topics(broker.bootstrap))
    base = os.environ.get("ROLLCALL_BENCH_POSTGRES_URL")
    url = asyncio.run(fresh_postgres(base)) if base else f"sqlite+aiosqlite:///{work / 'ingest.db'}"
    try:
        r = asyncio.run(run(url, broker.bootstrap, args.scale, args.concurrency, args.processes))
        report(r, args, "PostgreSQL" if base else "SQLite")
    finally:
        broker.kill()
        shutil.rmtree(work, ignore_errors=True)
        if base:
            asyncio.run(drop_postgres(base, url))


def report(r: dict[str, float], args: argparse.Namespace, database: str) -> None:
    print(
        f"\nborough through the ingest API — {os.cpu_count()} cores, {database}, scale {args.scale:g}, "
        f"{args.processes} ingest process(es), {args.concurrency} requests in flight: "
        f"{r['pupils']:,.0f} pupils, {r['marks']:,.0f} marks; registry {r['registry_s']:.0f} s, marks "
        f"{r['marks_s']:.0f} s ({r['marks_per_s']:,.0f} marks/s); every mark durable after "
        f"{r['durable_s']:.0f} s, on Kafka after {r['published_s']:.0f} s; "
        f"ingest CPU {r['ingest_cpu_s']:.0f} s"
    )
    whole = r["published_s"] / args.scale
    extrapolated = "" if args.scale == 1 else f" (scale {args.scale:g} × {1 / args.scale:g})"
    summary.add(
        "borough's whole year through the ingest API",
        "< 10 min",
        f"{whole / 60:.1f} min{extrapolated}, {r['marks_per_s']:,.0f} marks/s, {database}, "
        f"{args.processes} process(es)",
    )
