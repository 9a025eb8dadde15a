"""Rules benchmarks (issue 3): mark-to-signal latency, and recomputing the borough's year.

* **mark → signal**: ingest and rules under uvicorn with real Kafka; one absence mark at a time
  is POSTed for a looked-after pupil and timed until its ``signal.first_day_absence`` is read
  from ``rollcall.signals.v1`` (closed loop, at rest).
* **engine, whole borough**: the pure engine assessing every enrolment of the synthetic borough's
  whole year (≈ 38,000 pupils × 380 sessions), registers built by the generator in memory.
* **recompute from the database**: the rules service's recompute (load registry and register
  from its database, assess, store assessments and episodes, write signals to the outbox) over
  every pupil of a borough loaded straight into a fresh database, 1,000 pupils a transaction.
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
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.stack import free_port, register_school, school_days, start_service
from borough.generate import Borough
from deploy.kafka import Broker
from services.rules import engine, recompute
from services.rules import tables as t
from shared import kafka
from shared.auth import mint_token
from shared.calendar import AcademicYear, Calendars
from shared.codes import lookup
from shared.db import create_engine
from shared.events import Topic
from shared.migrate import upgrade
from shared.policy import load_policy
from shared.settings import DEV_JWT_SECRET

YEAR = AcademicYear(2024)


def calendars_of(body: dict[str, Any]) -> Calendars:
    return Calendars([recompute.calendar_from_row(YEAR.label, body["terms"], body["closed"])])


def borough_inputs(seed: int, scale: float) -> Any:
    """(school, pupils' engine inputs, marks) for every school of the borough, one at a time."""
    borough = Borough(seed, scale)
    for year in borough.school_years():
        calendars = calendars_of(year.calendar.body())
        marks: dict[str, dict[tuple[dt.date, str], str]] = {}
        for m in year.marks():
            marks.setdefault(m.upn, {})[(m.date, m.session)] = m.code
        pupils = []
        for e in year.enrolments:
            p = e.pupil
            care = engine.Care(p.care.cin, p.care.cp, p.care.cla, p.care.early_help, p.care.etac, None, None)
            reg = engine.EnrolmentRegister(
                year.school.urn, e.admission_date, e.leaving_date, calendars, marks.get(p.upn, {})
            )
            pupils.append(engine.PupilInput(p.upn, p.date_of_birth, care, (reg,)))
        yield year, pupils, sum(len(v) for v in marks.values())


def bench_engine(seed: int, scale: float) -> dict[str, float]:
    policy = load_policy()
    today, now = dt.date(2025, 7, 22), dt.datetime(2025, 7, 22, 16, tzinfo=dt.UTC)
    pupils = marks = 0
    engine_s = 0.0
    start = time.perf_counter()
    for _year, inputs, n_marks in borough_inputs(seed, scale):
        t0 = time.perf_counter()
        for pupil in inputs:
            engine.assess(pupil, policy, today, now)
        engine_s += time.perf_counter() - t0
        pupils += len(inputs)
        marks += n_marks
    return {"pupils": pupils, "marks": marks, "engine_s": engine_s, "total_s": time.perf_counter() - start}


async def fill_rules_db(url: str, seed: int, scale: float) -> tuple[list[str], int]:
    """A rules database holding the borough's registry and whole-year register, written directly."""
    await asyncio.to_thread(upgrade, "rules", url)
    db = create_engine(url)
    upns: list[str] = []
    n_marks = 0
    borough = Borough(seed, scale)
    try:
        for year in borough.school_years():
            s = year.school
            async with db.begin() as conn:
                await conn.execute(
                    t.schools.insert(),
                    [
                        {
                            "urn": s.urn,
                            "name": s.name,
                            "la_code": "343",
                            "phase": s.phase,
                            "type": s.type,
                            "locality": s.locality,
                            "ward": s.ward,
                        }
                    ],
                )
                body = year.calendar.body()
                await conn.execute(
                    t.calendars.insert(),
                    [
                        {
                            "school_urn": s.urn,
                            "year": YEAR.label,
                            "terms": body["terms"],
                            "closed": body["closed"],
                        }
                    ],
                )
                pupils, enrolments, care = [], [], []
                for e in year.enrolments:
                    p = e.pupil
                    pupils.append(
                        {
                            "upn": p.upn,
                            "date_of_birth": p.date_of_birth,
                            "sex": p.sex,
                            "home_la_code": "343",
                            "ward": p.ward,
                            "fsm": p.fsm,
                            "sen": p.sen,
                            "ehcp_la_code": None,
                        }
                    )
                    enrolments.append(
                        {
                            "upn": p.upn,
                            "school_urn": s.urn,
                            "year_group": p.year_group,
                            "admission_date": e.admission_date,
                            "leaving_date": e.leaving_date,
                        }
                    )
                    c = p.care
                    care.append(
                        {
                            "upn": p.upn,
                            "cin": c.cin,
                            "cp": c.cp,
                            "cla": c.cla,
                            "early_help": c.early_help,
                            "etac": c.etac,
                            "part_time_start": None,
                            "part_time_end": None,
                        }
                    )
                    upns.append(p.upn)
                from shared.db import upsert

                await upsert(conn, t.pupils, pupils, ["upn"])
                await conn.execute(t.enrolments.insert(), enrolments)
                await upsert(conn, t.care, care, ["upn"])
                final: dict[tuple[str, dt.date, str], str] = {}
                for m in year.marks():
                    final[(m.upn, m.date, m.session)] = m.code
                rows = [
                    {
                        "upn": u,
                        "school_urn": s.urn,
                        "date": d,
                        "session": ses,
                        "code": code,
                        "category": lookup(code, d).category.value,
                    }
                    for (u, d, ses), code in final.items()
                ]
                for i in range(0, len(rows), 5000):
                    await conn.execute(t.register.insert(), rows[i : i + 5000])
                n_marks += len(rows)
    finally:
        await db.dispose()
    return sorted(set(upns)), n_marks


async def bench_recompute(url: str, seed: int, scale: float) -> dict[str, float]:
    t0 = time.perf_counter()
    upns, n_marks = await fill_rules_db(url, seed, scale)
    fill_s = time.perf_counter() - t0
    policy = load_policy()
    today, now = dt.date(2025, 7, 22), dt.datetime(2025, 7, 22, 16, tzinfo=dt.UTC)
    db = create_engine(url)
    cache = recompute.CalendarCache()
    signals = 0
    t0 = time.perf_counter()
    try:
        for i in range(0, len(upns), 1000):
            async with db.begin() as conn:
                outcome = await recompute.recompute(conn, upns[i : i + 1000], policy, cache, today, now)
                signals += outcome.signals
    finally:
        await db.dispose()
    return {
        "pupils": len(upns),
        "marks": n_marks,
        "fill_s": fill_s,
        "recompute_s": time.perf_counter() - t0,
        "signals": signals,
    }


async def bench_latency(bootstrap: str, work: Path, samples: int) -> dict[str, float]:
    ingest, ingest_url = await start_service(
        "ingest", f"sqlite+aiosqlite:///{work / 'lat-ingest.db'}", bootstrap
    )
    rules, _ = await start_service(
        "rules",
        f"sqlite+aiosqlite:///{work / 'lat-rules.db'}",
        bootstrap,
        ROLLCALL_CONSUMER_GROUP=f"bench-{uuid.uuid4().hex[:6]}",
        ROLLCALL_SCHEDULER_SECONDS="3600",
    )
    arrived: dict[str, float] = {}
    waiting: dict[str, asyncio.Event] = {}
    consumer = kafka.consumer(bootstrap, None, Topic.SIGNALS, from_beginning=False)
    await consumer.start()

    async def listen() -> None:
        async for rec in consumer:
            data = orjson.loads(rec.value)["data"]
            arrived.setdefault(data["episode"], time.perf_counter())
            if data["episode"] in waiting:
                waiting[data["episode"]].set()

    listener = asyncio.create_task(listen())
    latencies: list[float] = []
    try:
        async with httpx.AsyncClient(base_url=ingest_url, timeout=60) as client:
            urn = "160001"
            headers, upns = await register_school(client, urn, 6001, 200)
            care = {"Authorization": f"Bearer {mint_token(DEV_JWT_SECRET, 'sc', ['care:write'])}"}
            for upn in upns:
                body = {"cin": False, "cp": False, "cla": True, "early_help": False, "etac": False}
                (await client.put(f"/v1/pupils/{upn}/care", json=body, headers=care)).raise_for_status()
            await asyncio.sleep(3)  # rules consumes the registry
            slots = [(d, s) for d in school_days(samples // len(upns) + 2) for s in ("AM", "PM")]
            for i in range(samples):
                upn = upns[i % len(upns)]
                d, s = slots[i // len(upns)]
                key = f"first_day_absence:{urn}:{d.isoformat()}:{s}"
                episode_event = waiting.setdefault(f"{key}", asyncio.Event())
                mark = {"marks": [{"upn": upn, "date": d.isoformat(), "session": s, "code": "N"}]}
                t0 = time.perf_counter()
                r = await client.post(f"/v1/schools/{urn}/marks", content=orjson.dumps(mark), headers=headers)
                r.raise_for_status()
                # Episodes are per pupil; the key names school, date and session, so wait for this pupil's.
                while True:
                    await asyncio.wait_for(episode_event.wait(), timeout=30)
                    if key in arrived:
                        break
                latencies.append(arrived.pop(key) - t0)
                waiting.pop(key, None)
    finally:
        listener.cancel()
        await consumer.stop()
        for proc in (ingest, rules):
            proc.terminate()
            proc.wait(timeout=30)
    lat = sorted(latencies)
    return {
        "samples": len(lat),
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench rules",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--scale", type=float, default=1.0, help="borough scale for the engine benchmark")
    parser.add_argument(
        "--db-scale", type=float, default=0.1, help="borough scale for the database recompute"
    )
    parser.add_argument("--samples", type=int, default=300, help="marks timed to their signal")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rollcall-bench-rules-"))
    broker = Broker(work / "kafka", free_port(), free_port())
    broker.start()
    asyncio.run(kafka.ensure_topics(broker.bootstrap))
    try:
        lat = asyncio.run(bench_latency(broker.bootstrap, work, args.samples))
        rec = asyncio.run(
            bench_recompute(f"sqlite+aiosqlite:///{work / 'rules.db'}", args.seed, args.db_scale)
        )
        eng = bench_engine(args.seed, args.scale)
    finally:
        broker.kill()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nrules — {os.cpu_count()} cores")
    print(
        f"mark → signal on Kafka (at rest, {lat['samples']:.0f} marks): p50 {lat['p50_ms']:.1f} ms, "
        f"p99 {lat['p99_ms']:.1f} ms"
    )
    print(
        f"engine, whole borough year (scale {args.scale}): {eng['pupils']:.0f} pupils, "
        f"{eng['marks']:.0f} marks "
        f"assessed in {eng['engine_s']:.1f} s ({eng['pupils'] / eng['engine_s']:.0f} pupils/s); "
        f"with generation {eng['total_s']:.1f} s"
    )
    print(
        f"recompute from SQLite (scale {args.db_scale}): {rec['pupils']:.0f} pupils, "
        f"{rec['marks']:.0f} marks "
        f"in {rec['recompute_s']:.1f} s ({rec['pupils'] / rec['recompute_s']:.0f} pupils/s, "
        f"{rec['signals']:.0f} signals); database filled in {rec['fill_s']:.1f} s"
    )
