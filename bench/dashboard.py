"""Dashboard benchmark (issue 6): server time of each page for the whole borough.

A rules database is filled with the synthetic borough's registry and whole-year register (written
directly, then every pupil recomputed by the service's own recompute), or reused with ``--db``.
The rules, legal and notifications services run under uvicorn with real Kafka; an LA officer's
session then requests each page ``--requests`` times in turn. Each page reports its own server
time in a ``Server-Timing`` header; the client's round trip on loopback is printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import select

from bench import summary
from bench.rules import fill_rules_db
from bench.stack import free_port, start_service
from deploy.kafka import Broker
from services.rules import figures, recompute, reports
from services.rules import tables as t
from shared import kafka
from shared.auth import mint_token
from shared.calendar import AcademicYear
from shared.db import create_engine
from shared.policy import load_policy
from shared.settings import DEV_JWT_SECRET

TODAY = dt.date(2025, 7, 22)
NOW = dt.datetime(2025, 7, 22, 15, tzinfo=dt.UTC)


async def prepare(url: str, seed: int, scale: float) -> None:
    """The borough's registry and year in a rules database, recomputed as the service would."""
    t0 = time.perf_counter()
    upns, marks = await fill_rules_db(url, seed, scale)
    db = create_engine(url)
    try:
        async with db.begin() as conn:
            await reports.rebuild_sums(conn)
        policy, cache = load_policy(), recompute.CalendarCache()
        for i in range(0, len(upns), 1000):
            async with db.begin() as conn:
                await recompute.recompute(conn, upns[i : i + 1000], policy, cache, TODAY, NOW)
    finally:
        await db.dispose()
    print(f"prepared {len(upns):,} pupils, {marks:,} marks in {time.perf_counter() - t0:.0f} s")


async def build_seconds(url: str) -> float:
    db = create_engine(url)
    try:
        view = figures.View(AcademicYear.of(TODAY), None, "343")
        return (await figures.build(db, load_policy(), view, TODAY, NOW)).build_seconds
    finally:
        await db.dispose()


async def sample_targets(url: str) -> tuple[str, list[str]]:
    """A severely absent pupil and five schools (the pilot group) to put on the pages."""
    db = create_engine(url)
    try:
        async with db.connect() as conn:
            a = t.assessments.c
            upn = (await conn.execute(select(a.upn).where(a.band == "severe").limit(1))).scalar_one()
            schools = list((await conn.execute(select(t.schools.c.urn).limit(5))).scalars())
    finally:
        await db.dispose()
    return upn, schools


async def measure(rules: str, upn: str, schools: list[str], n: int) -> dict[str, list[tuple[float, float]]]:
    token = mint_token(
        DEV_JWT_SECRET, "bench-officer", ["attendance:read", "alerts:read", "legal:read"], la="343"
    )
    compare = "&".join(f"schools={u}" for u in schools)
    compare += "&before_from=2024-09-02&before_to=2024-12-20&after_from=2025-01-06&after_to=2025-07-22"
    pages = {
        "KPIs": "/dashboard",
        "hotspots by school": "/dashboard/hotspots?by=school",
        "hotspots by ward": "/dashboard/hotspots?by=ward&sort=persistent_absence_rate",
        "pupils (lowest 200)": "/dashboard/pupils",
        "pupil page": f"/dashboard/pupils/{upn}",
        "inbox": "/dashboard/inbox",
        "before/after (5 schools)": f"/dashboard/compare?{compare}",
        "annual report": "/dashboard/report?year=2024-25",
    }
    out: dict[str, list[tuple[float, float]]] = {}
    async with httpx.AsyncClient(base_url=rules, cookies={"rollcall_session": token}, timeout=120) as client:
        for name, path in pages.items():
            await client.get(path)  # warm-up: the first request for a view waits for its snapshot
            samples = []
            for _ in range(n):
                t0 = time.perf_counter()
                r = await client.get(path)
                wall = (time.perf_counter() - t0) * 1000
                if r.status_code != 200:
                    raise RuntimeError(f"{path}: {r.status_code}")
                server = float(r.headers["server-timing"].split("dur=")[1])
                samples.append((server, wall))
            out[name] = samples
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench dashboard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--scale", type=float, default=1.0, help="borough scale (1.0 = the whole borough)")
    parser.add_argument("--db", type=Path, help="a rules SQLite database to reuse (filled if missing)")
    parser.add_argument("--requests", type=int, default=30, help="requests per page")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rollcall-bench-dashboard-"))
    db_path = args.db or work / "rules.db"
    url = f"sqlite+aiosqlite:///{db_path.resolve()}"
    if not db_path.exists():
        asyncio.run(prepare(url, args.seed, args.scale))
    build = asyncio.run(build_seconds(url))
    upn, schools = asyncio.run(sample_targets(url))
    broker = Broker(work / "kafka", free_port(), free_port())
    broker.start()
    procs = []
    try:
        asyncio.run(kafka.ensure_topics(broker.bootstrap))
        common = {"ROLLCALL_TODAY": TODAY.isoformat(), "ROLLCALL_SCHEDULER_SECONDS": "100000"}

        async def up() -> str:
            legal_p, legal = await start_service("legal", f"sqlite+aiosqlite:///{work / 'legal.db'}",
                                                 broker.bootstrap, **common)  # fmt: skip
            notes_p, notes = await start_service("notifications", f"sqlite+aiosqlite:///{work / 'n.db'}",
                                                 broker.bootstrap, **common)  # fmt: skip
            rules_p, rules = await start_service("rules", url, broker.bootstrap, ROLLCALL_LEGAL_URL=legal,
                                                 ROLLCALL_NOTIFICATIONS_URL=notes, **common)  # fmt: skip
            procs.extend([legal_p, notes_p, rules_p])
            return rules

        rules = asyncio.run(up())
        results = asyncio.run(measure(rules, upn, schools, args.requests))
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        broker.kill()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\ndashboard — {os.cpu_count()} cores, borough scale {args.scale}, {args.requests} requests a page"
    )
    print(f"LA figures snapshot built (background, every 30 s when data changed) in {build:.2f} s")
    print(f"{'page':28} {'server p50':>11} {'server p95':>11} {'server max':>11} {'round trip p50':>15}")
    for name, samples in results.items():
        server = [s for s, _ in samples]
        wall = [w for _, w in samples]
        print(f"{name:28} {statistics.median(server):9.1f}ms {pct(server, 0.95):9.1f}ms "
              f"{max(server):9.1f}ms {statistics.median(wall):13.1f}ms")  # fmt: skip
    slowest = max(results, key=lambda name: pct([s for s, _ in results[name]], 0.95))
    worst = pct([s for s, _ in results[slowest]], 0.95)
    summary.add(
        f"dashboard pages, scale {args.scale} (server p95)", "< 300 ms", f"slowest {slowest}: {worst:,.1f} ms"
    )


if __name__ == "__main__":
    main()
