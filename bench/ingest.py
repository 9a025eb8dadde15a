"""Ingest: durable and published marks/s, outbox backlog, single-mark latency (``python -m bench ingest``).

For each database (SQLite, then PostgreSQL with ``synchronous_commit=on``) it starts a real Kafka
broker (its own port), a fresh database and the ingest service under uvicorn, then drives it over
HTTP with the load generator (``bench.load``) in a separate process:

1. **single** — one mark per POST on an open-loop clock at ``--single-rate`` requests/s for
   ``--single-duration`` seconds: achieved rate and latency percentiles from an HDR histogram.
   It runs first, on a quiet machine (see ``run_backend``: after the batch load the kernel's
   write-back of it stalls every COMMIT for a moment), after 3 s of the same load on other
   schools, unrecorded (as the attendance reads have 5 s).
2. **batch** — ``--schools`` schools post ``--batch-size``-mark batches of new marks for
   ``--duration`` seconds, each school's batches one after another and the schools at once
   (closed loop: the most the server takes). Printed: durable marks/s (answered 200, so
   committed with their outbox events), published marks/s (until the last of them is on
   ``rollcall.marks.v1``, by Kafka end offsets), the largest outbox backlog seen (sampled every
   0.25 s), batch latency, and the ingest process's CPU seconds per 100,000 marks (less noisy
   than rates on a shared machine) and PostgreSQL's (*DB CPU*: the server and every backend and
   autovacuum worker of the run, when the server runs on this machine).

``--sustained`` makes the batch phase 5 minutes (8 schools of 5,000 pupils, so every mark is
still new); the default is 20 s so that ``make bench`` stays short.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import summary
from bench.stack import ROOT, free_port, start_processes
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


def cpu_seconds(pid: int, reaped: bool = False) -> float:
    """User + system CPU time so far of a process and its children (uvicorn's worker processes;
    Linux /proc). ``reaped``: with the children that have already exited, as their parent counts
    them (PostgreSQL's postmaster: a backend per connection, and autovacuum workers, come and go)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if stat.parent.name == str(pid):
            ticks += int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if reaped else 0)
        elif fields[1] == str(pid):
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


async def postmaster_pid(db_url: str) -> int | None:
    """The PostgreSQL server's process, if it runs on this machine (its CPU is measured too)."""
    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:  # read while the backend lives: it exits with the connection
        return parent_pid(int(await conn.fetchval("SELECT pg_backend_pid()")))
    finally:
        await conn.close()


def parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:  # not a process of this machine
        return None


_BACKLOG = "SELECT coalesce(sum(events), 0) FROM outbox"


class Backlog:
    """Samples the outbox backlog while the load runs: the events in its bundles (a row holds
    one transaction's events, so a backlog of 100,000 events is a few dozen rows to sum; their
    large columns, compressed out of line, are not read)."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.samples: list[tuple[float, int]] = []
        self._pg: asyncpg.Connection | None = None

    async def count(self) -> int:
        if self.db_url.startswith("sqlite"):
            path = self.db_url.split("///", 1)[1]

            def read() -> int:
                with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as c:
                    return int(c.execute(_BACKLOG).fetchone()[0])

            return await asyncio.to_thread(read)
        if self._pg is None:
            self._pg = await asyncpg.connect(self.db_url.replace("postgresql+asyncpg://", "postgresql://"))
        return int(await self._pg.fetchval(_BACKLOG))

    async def sample_until(self, done: asyncio.Event) -> None:
        while not done.is_set():
            with contextlib.suppress(Exception):
                self.samples.append((time.time(), await self.count()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.25)

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()


async def load(base: str, *argv: str) -> dict[str, Any]:
    """Run ``bench.load`` as its own process (its CPU is not the server's) and read its summary."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.load", "--url", base, "--json", *argv,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bench.load {' '.join(argv)} failed ({proc.returncode})")
    summary: dict[str, Any] = orjson.loads(out.strip().splitlines()[-1])
    return summary


async def run_backend(db_url: str, bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    # --relay-process: an ingest process that takes no requests, started first so that its relay
    # leads (one relay per database) and the processes serving HTTP only follow (and wait for room).
    relay = await start_processes("ingest", db_url, bootstrap, 1, {}) if args.relay_process else None
    proc, base = await start_processes("ingest", db_url, bootstrap, args.processes, {})

    def ingest_cpu() -> float:
        return cpu_seconds(proc.pid) + (cpu_seconds(relay[0].pid) if relay else 0.0)

    backlog = Backlog(db_url)
    server = await postmaster_pid(db_url) if db_url.startswith("postgresql") else None
    try:
        # The one-mark POSTs first, on a quiet machine: right after the batch load, the kernel
        # writes the batch's gigabyte of Kafka log and PostgreSQL pages back (~30 s after they were
        # written, ~485 MB in one second, 44 % I/O wait) and every COMMIT waits for its fsync
        # behind that: a 0.5-0.8 s stall that is the disk's, not the small MIS's (README
        # "Benchmarks: ingest", stop 18).
        await load(  # warm-up, unrecorded (as the attendance reads have): other schools, same rate
            base, "--mode", "single", "--rate", str(args.single_rate), "--duration", "3",
            "--schools", "20", "--pupils", "200", "--urn-base", "165000", "--connections", "512",
        )  # fmt: skip
        cpu1 = ingest_cpu()
        single = await load(
            base, "--mode", "single", "--rate", str(args.single_rate),
            "--duration", str(args.single_duration), "--schools", "20", "--pupils", "200",
            "--urn-base", "160000", "--connections", "512",
        )  # fmt: skip
        single_cpu = ingest_cpu() - cpu1
        before = await end_offsets(bootstrap)
        done = asyncio.Event()
        sampler = asyncio.create_task(backlog.sample_until(done))
        cpu0 = ingest_cpu()
        db_cpu0 = cpu_seconds(server, reaped=True) if server else 0.0
        batch = await load(
            base, "--mode", "batch", "--rate", "0", "--duration", str(args.duration),
            "--batch-size", str(args.batch_size), "--schools", str(args.schools),
            "--pupils", str(args.pupils), "--urn-base", "150000",
        )  # fmt: skip
        cpu = ingest_cpu() - cpu0
        db_cpu = cpu_seconds(server, reaped=True) - db_cpu0 if server else None
        deadline = time.time() + 900
        while await end_offsets(bootstrap) - before < batch["marks"]:
            if time.time() > deadline:
                raise RuntimeError("the relay did not publish every event within 15 minutes")
            await asyncio.sleep(0.05)
        published_at = time.time()
        done.set()
        await sampler
        started = batch["started_at"]
        max_backlog = max((n for t, n in backlog.samples if t >= started), default=0)
    finally:
        await backlog.close()
        for running in (proc, relay[0] if relay else None):
            if running is not None:
                running.terminate()
                running.wait(timeout=60)
    return {
        "batch": batch,
        "single": single,
        "published_per_s": batch["marks"] / (published_at - started),
        "max_backlog": max_backlog,
        "cpu_per_100k": cpu / batch["marks"] * 100_000 if batch["marks"] else 0.0,
        "db_cpu_per_100k": None if db_cpu is None or not batch["marks"] else db_cpu / batch["marks"] * 1e5,
        "single_cpu_ms": single_cpu / single["requests"] * 1000 if single["requests"] else 0.0,
    }


async def fresh_postgres(base: str) -> str:
    name = f"rollcall_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(base.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return base.rsplit("/", 1)[0] + f"/{name}"


async def drop_postgres(base: str, url: str) -> None:
    """Drop a benchmark's database (``url``, as ``fresh_postgres`` made it). ``FORCE`` ends its
    remaining sessions, but not an autovacuum worker's (a superuser's) after a large load: then wait
    for it and try again, and at worst leave the database behind with a warning rather than lose
    the figures still to be printed."""
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(base.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        for attempt in range(10):
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
                await asyncio.sleep(1 + attempt)
        print(f"warning: could not drop the benchmark database {name} (autovacuum still running)")
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench ingest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=20, help="seconds of batch load")
    parser.add_argument("--sustained", action="store_true", help="5 minutes of batch load (issue 8's target)")
    parser.add_argument("--schools", type=int, default=4)
    parser.add_argument("--pupils", type=int, default=1000, help="pupils per school")
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--single-rate", type=float, default=1000, help="single-mark POSTs per second")
    parser.add_argument("--single-duration", type=float, default=20)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--processes", type=int, default=1, help="ingest's uvicorn worker processes")
    parser.add_argument(
        "--relay-process",
        action="store_true",
        help="and one more ingest process, taking no requests, whose relay publishes (it leads)",
    )
    args = parser.parse_args(argv)
    if args.sustained:
        args.duration, args.schools, args.pupils = 300.0, 8, 5000
    work = Path(tempfile.mkdtemp(prefix="rollcall-bench-"))
    broker = Broker(work / "kafka", free_port(), free_port())
    broker.start()
    asyncio.run(kafka.ensure_topics(broker.bootstrap))
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        for backend in args.backends.split(","):
            base: str | None = None  # the PostgreSQL server a fresh database was made on
            if backend == "sqlite":
                url = f"sqlite+aiosqlite:///{work / 'ingest.db'}"
            else:
                base = os.environ.get("ROLLCALL_BENCH_POSTGRES_URL")
                if not base:
                    print("postgresql: skipped (ROLLCALL_BENCH_POSTGRES_URL not set; `make bench` sets it)")
                    continue
                url = asyncio.run(fresh_postgres(base))
            try:
                rows.append((backend, asyncio.run(run_backend(url, broker.bootstrap, args))))
            finally:
                if base:
                    asyncio.run(drop_postgres(base, url))
    finally:
        broker.kill()
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows, args)


def print_table(rows: list[tuple[str, dict[str, Any]]], args: argparse.Namespace) -> None:
    print(
        f"\ningest — {os.cpu_count()} cores (os.cpu_count(), shared with Kafka, the database and the "
        f"load generator); batch: {args.schools} schools × {args.batch_size:,}-mark batches, closed "
        f"loop, {args.duration:g} s{' (sustained)' if args.sustained else ''}; single: one mark per "
        f"POST, open loop at {args.single_rate:g}/s for {args.single_duration:g} s; ingest: "
        f"{args.processes} process{'es' if args.processes > 1 else ''}"
        f"{' + a relay process' if args.relay_process else ''}"
    )
    head = (
        f"{'database':<11}{'durable/s':>10}{'published/s':>12}{'max backlog':>12}{'batch p50':>10}"
        f"{'p99 ms':>8}{'CPU s/100k':>11}{'DB CPU':>7}{'single/s':>9}{'p50':>9}{'p99':>9}{'p99.9':>9}"
        f"{'max ms':>9}{'errors':>7}{'CPU ms/POST':>12}"
    )
    print(head)
    for backend, r in rows:
        b, s = r["batch"], r["single"]
        db_cpu = "—" if r["db_cpu_per_100k"] is None else f"{r['db_cpu_per_100k']:.2f}"
        bl, sl = b["latency_ms"], s["latency_ms"]
        summary.add(
            f"ingest {backend}: durable marks/s ({args.duration:g} s)",
            "≥ 50,000 (PostgreSQL)",
            f"{b['mark_rate']:,.0f} (published {r['published_per_s']:,.0f}/s, "
            f"max backlog {r['max_backlog']:,.0f})",
        )
        summary.add(
            f"ingest {backend}: single-mark POSTs",
            "1,000/s, p99 < 50 ms",
            f"{s['request_rate']:,.0f}/s, p99 {sl['p99']:,.1f} ms",
        )
        print(
            f"{backend:<11}{b['mark_rate']:>10.0f}{r['published_per_s']:>12.0f}{r['max_backlog']:>12.0f}"
            f"{bl['p50']:>10.0f}{bl['p99']:>8.0f}{r['cpu_per_100k']:>11.2f}{db_cpu:>7}{s['request_rate']:>9.0f}"
            f"{sl['p50']:>9.1f}{sl['p99']:>9.1f}{sl['p99.9']:>9.1f}{sl['max']:>9.1f}"
            f"{b['errors'] + s['errors']:>7}{r['single_cpu_ms']:>12.2f}"
        )
        for phase, r_ in (("batch", b), ("single", s)):
            if r_["errors"]:
                print(f"  {phase}: {r_['errors']} errors, the first: {r_['first_error']}")
