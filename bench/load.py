"""Open-loop HTTP load generator for ingest: ``python -m bench.load --rate 1000 --duration 60``.

Requests are scheduled on a clock — request *i* is due at ``start + i / rate`` — and sent when
due whether or not earlier ones have been answered, so a slow server shows up as latency (each
request's latency is measured from the moment it was *due*, not from when it was sent: no
coordinated omission). Latencies go into an HDR histogram (``hdrhistogram``); the summary gives
p50/p90/p99/p99.9/max, the achieved request and mark rates, and errors.

``--mode attendance`` reads instead: ``GET /v1/pupils/{upn}/attendance`` at ``--rate`` requests/s
against the rules service, UPNs taken in turn from ``--upns-file`` (one a line), with an LA-wide
``attendance:read`` token minted from the development secret (nothing is registered first).
``--warmup`` seconds of the same reads at the same rate go first, unrecorded: a freshly started
service fills its caches (a school's calendars, its LA code) and SQLite's page cache on its
first reads, and the figure asked for is the latency of a service under sustained load.

``--mode single`` posts one mark per request (a small MIS); ``--mode batch`` posts
``--batch-size`` marks per request. ``--rate 0`` is closed loop instead: each school posts its
batches one after another, all schools at once (an MIS sends a school's batches in order), which
measures the most the server can take. Every mark is new (a later session or another pupil), so
each one is a durable insert with its outbox event.

Run on its own against a running ingest service (it registers its schools and pupils first with
an admin token minted from the development secret), or from ``python -m bench ingest``, which
runs it as a separate process and reads the ``--json`` line it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from hdrh.histogram import HdrHistogram

from bench.stack import register_school, school_days
from shared.auth import mint_token
from shared.settings import DEV_JWT_SECRET

IDLE_SECONDS = 4.0
MAX_DAYS = 185  # school days in bench.stack.TERMS (2024-25), all in the past
CODES = ("/", "/", "/", "/", "/", "/", "/", "/", "N", "I")


@dataclass
class Report:
    mode: str
    target_rate: float
    requests: int = 0
    marks: int = 0
    errors: int = 0
    rejected: int = 0
    seconds: float = 0.0
    histogram: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 600_000_000, 3))
    first_error: str = ""
    started_at: float = field(default_factory=time.time)  # wall clock, for the caller's samples

    def summary(self) -> dict[str, Any]:
        h = self.histogram
        ms = {f"p{q}": h.get_value_at_percentile(q) / 1000 for q in (50, 90, 99, 99.9)}
        return {
            "mode": self.mode,
            "target_rate": self.target_rate,
            "requests": self.requests,
            "marks": self.marks,
            "errors": self.errors,
            "rejected": self.rejected,
            "seconds": self.seconds,
            "request_rate": self.requests / self.seconds if self.seconds else 0.0,
            "mark_rate": self.marks / self.seconds if self.seconds else 0.0,
            "latency_ms": {**ms, "max": h.get_max_value() / 1000},
            "first_error": self.first_error,
            "started_at": self.started_at,
        }


class Connections:
    """A pool of keep-alive HTTP/1.1 connections speaking just enough of the protocol.

    httpx costs the client about as much CPU per request as the server spends; on a shared
    2-core machine that would slow the server under test, so requests are pre-framed bytes.

    ``keep_alive=False`` sends each request on a new connection (``Connection: close``), as an
    MIS posting a register does. With several uvicorn processes on one listening socket, the
    process whose loop wakes first accepts every connection waiting: connections opened at once
    and then kept would all go to one process, whereas one opened per request goes to a process
    that is free to accept it.
    """

    def __init__(self, url: str, size: int, keep_alive: bool = True) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.keep_alive = keep_alive
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._slots = asyncio.Semaphore(size)

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        async with self._slots:
            reused = False
            while self._idle:
                reader, writer, since = self._idle.pop()
                # uvicorn closes a keep-alive connection idle for 5 s: do not send on one so old.
                if time.monotonic() - since < IDLE_SECONDS:
                    reused = True
                    break
                writer.close()
            if not reused:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            try:
                return await self._exchange(reader, writer, head, body)
            except (asyncio.IncompleteReadError, ConnectionError):
                if not reused:
                    raise
            # The server closed the reused connection just as it was taken: once more, on a new one.
            reader, writer = await asyncio.open_connection(self.host, self.port)
            return await self._exchange(reader, writer, head, body)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes
    ) -> tuple[int, bytes]:
        try:
            close = b"" if self.keep_alive else b"Connection: close\r\n"
            writer.write(head + close + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            status_line = await reader.readuntil(b"\r\n")
            length = 0
            keep = True
            while True:
                line = await reader.readuntil(b"\r\n")
                if line == b"\r\n":
                    break
                name, _, value = line.partition(b":")
                lowered = name.strip().lower()
                if lowered == b"content-length":
                    length = int(value)
                elif lowered == b"connection" and value.strip().lower() == b"close":
                    keep = False
            payload = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if keep and self.keep_alive:
            self._idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()
        return int(status_line.split(b" ", 2)[1]), payload

    def close(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()


@dataclass
class School:
    urn: str
    head: bytes
    upns: list[str]


def mark_stream(school: School, days: list[dt.date]) -> Iterator[tuple[str, str, str, str]]:
    """Every (upn, date, session, code) of ``school``: session by session, all pupils each."""
    for d in days:
        day = d.isoformat()
        for session in ("AM", "PM"):
            for k, upn in enumerate(school.upns):
                yield upn, day, session, CODES[(k + d.toordinal()) % 10]


def body_of(marks: list[tuple[str, str, str, str]]) -> bytes:
    return orjson.dumps({"marks": [{"upn": u, "date": d, "session": s, "code": c} for u, d, s, c in marks]})


async def setup(url: str, schools: int, pupils: int, urn_base: int) -> list[School]:
    made: list[School] = []
    host = urlsplit(url).netloc
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        for i in range(schools):
            urn = str(urn_base + i)
            headers, upns = await register_school(client, urn, 4000 + (urn_base + i) % 6000, pupils)
            head = (
                f"POST /v1/schools/{urn}/marks HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: {headers['Authorization']}\r\nContent-Type: application/json\r\n"
            ).encode()
            made.append(School(urn, head, upns))
    return made


async def _get(pool: Connections, report: Report, head: bytes, due: float) -> None:
    try:
        status, payload = await pool.request(head, b"")
    except (OSError, asyncio.IncompleteReadError) as exc:
        report.errors += 1
        report.first_error = report.first_error or type(exc).__name__
        return
    report.histogram.record_value(max(1, int((time.perf_counter() - due) * 1_000_000)))
    if status != 200:
        report.errors += 1
        report.first_error = report.first_error or f"HTTP {status}: {payload[:200].decode(errors='replace')}"
        return
    report.requests += 1


async def attendance_loop(url: str, args: argparse.Namespace) -> Report:
    """Open loop of attendance reads: request *i* due at ``start + i / rate``, for pupil *i* mod n."""
    upns: list[str] = args.upns
    token = mint_token(DEV_JWT_SECRET, "bench-reader", ["attendance:read"], la="343", ttl_seconds=86400)
    host = urlsplit(url).netloc
    auth = f"Authorization: Bearer {token}\r\n"
    heads = [f"GET /v1/pupils/{u}/attendance HTTP/1.1\r\nHost: {host}\r\n{auth}".encode() for u in upns]
    pool = Connections(url, args.connections)
    report = Report("attendance", args.rate)
    warmup = Report("warm-up", args.rate)  # the same schedule, not recorded
    warm = int(args.rate * args.warmup)
    tasks: set[asyncio.Task[None]] = set()
    clock = time.perf_counter()
    start = clock + args.warmup
    try:
        for i in range(warm + int(args.rate * args.duration)):
            due = clock + i / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if i == warm:
                report.started_at = time.time()
            task = asyncio.create_task(_get(pool, warmup if i < warm else report, heads[i % len(heads)], due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)
    finally:
        pool.close()
    report.seconds = time.perf_counter() - start
    report.errors += warmup.errors  # an error is an error, warm or not
    report.first_error = report.first_error or warmup.first_error
    return report


async def _one(pool: Connections, report: Report, school: School, body: bytes, due: float) -> None:
    try:
        status, payload = await pool.request(school.head, body)
    except (OSError, asyncio.IncompleteReadError) as exc:
        report.errors += 1
        report.first_error = report.first_error or type(exc).__name__
        return
    report.histogram.record_value(max(1, int((time.perf_counter() - due) * 1_000_000)))
    if status != 200:
        report.errors += 1
        report.first_error = report.first_error or f"HTTP {status}: {payload[:200].decode(errors='replace')}"
        return
    result = orjson.loads(payload)
    report.requests += 1
    report.marks += result["accepted"] + result["amended"] + result["unchanged"]
    report.rejected += len(result["rejected"])


async def open_loop(
    pool: Connections, schools: list[School], days: list[dt.date], args: argparse.Namespace
) -> Report:
    """Requests due at ``start + i / rate``, sent when due, never waiting for answers."""
    size = 1 if args.mode == "single" else args.batch_size
    report = Report(args.mode, args.rate)
    streams = [mark_stream(s, days) for s in schools]
    order = itertools.cycle(range(len(schools)))
    total = int(args.rate * args.duration)
    tasks: set[asyncio.Task[None]] = set()
    report.started_at = time.time()
    start = time.perf_counter()
    for i in range(total):
        due = start + i / args.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        which = next(order)
        marks = list(itertools.islice(streams[which], size))
        if not marks:
            raise SystemExit("out of new marks: use more --pupils or --schools")
        task = asyncio.create_task(_one(pool, report, schools[which], body_of(marks), due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)
    report.seconds = time.perf_counter() - start
    return report


async def closed_loop(
    pool: Connections, schools: list[School], days: list[dt.date], args: argparse.Namespace
) -> Report:
    """Each school posts its batches back to back (all schools at once) for ``duration`` s."""
    report = Report(args.mode, 0)
    report.started_at = time.time()
    start = time.perf_counter()
    stop = start + args.duration

    async def school_loop(school: School) -> None:
        stream = mark_stream(school, days)
        nxt = body_of(list(itertools.islice(stream, args.batch_size)))
        while time.perf_counter() < stop:
            body = nxt
            pending = asyncio.ensure_future(_one(pool, report, school, body, time.perf_counter()))
            # Build the next batch while this one is in flight (the client's CPU is not the server's).
            more = list(itertools.islice(stream, args.batch_size))
            await pending
            if not more:
                print(f"school {school.urn}: out of new marks (use more --pupils)", file=sys.stderr)
                return
            nxt = body_of(more)

    await asyncio.gather(*(school_loop(s) for s in schools))
    report.seconds = time.perf_counter() - start
    return report


def needed_days(args: argparse.Namespace) -> int:
    marks_per_school_day = 2 * args.pupils
    if args.rate > 0:
        size = 1 if args.mode == "single" else args.batch_size
        total = args.rate * args.duration * size / args.schools
    else:
        total = 120_000 * args.duration / args.schools  # more than the server can take
    return min(MAX_DAYS, int(total / marks_per_school_day) + 2)


async def run(args: argparse.Namespace) -> Report:
    if args.mode == "attendance":
        return await attendance_loop(args.url, args)
    schools = await setup(args.url, args.schools, args.pupils, args.urn_base)
    days = school_days(needed_days(args))
    # Batches closed loop: each on a new connection, as each school's MIS would post (see Connections).
    pool = Connections(args.url, args.connections, keep_alive=args.rate > 0)
    try:
        if args.rate > 0:
            return await open_loop(pool, schools, days, args)
        return await closed_loop(pool, schools, days, args)
    finally:
        pool.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--url", default="http://127.0.0.1:8001")
    p.add_argument("--mode", choices=("single", "batch", "attendance"), default="single")
    p.add_argument("--upns-file", help="--mode attendance: the UPNs to read, one a line")
    p.add_argument("--rate", type=float, default=1000, help="requests per second; 0 = closed loop")
    p.add_argument("--duration", type=float, default=30, help="seconds")
    p.add_argument("--warmup", type=float, default=0, help="--mode attendance: unrecorded seconds first")
    p.add_argument("--batch-size", type=int, default=10_000)
    p.add_argument("--schools", type=int, default=4)
    p.add_argument("--pupils", type=int, default=1000, help="pupils per school")
    p.add_argument("--urn-base", type=int, default=150000)
    p.add_argument("--connections", type=int, default=256, help="most requests in flight")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.mode == "attendance":
        text = Path(args.upns_file).read_text(encoding="ascii")
        args.upns = [line.strip() for line in text.splitlines() if line.strip()]
    summary = asyncio.run(run(args)).summary()
    if args.json:
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
        return
    lat = summary["latency_ms"]
    print(
        f"{summary['mode']}: {summary['requests']} requests, {summary['marks']} marks in "
        f"{summary['seconds']:.1f} s = {summary['request_rate']:.0f} req/s, "
        f"{summary['mark_rate']:.0f} marks/s "
        f"(target {args.rate:g} req/s); errors {summary['errors']}, rejected marks {summary['rejected']}"
    )
    print("latency ms  " + "  ".join(f"{k} {v:.1f}" for k, v in lat.items()))
    if summary["first_error"]:
        print(f"first error: {summary['first_error']}")


if __name__ == "__main__":
    main()
