"""Rules benchmarks (issues 3 and 8): mark-to-signal latency, recomputing the borough's year,
consumption rate, attendance reads under load and the service's memory.

* **mark → signal**: ingest and rules under uvicorn with real Kafka; one absence mark at a time
  is POSTed for a looked-after pupil and timed until its ``signal.first_day_absence`` is read
  from ``rollcall.signals.v1`` (closed loop, at rest).
* **recompute from the database**: the rules service's recompute (load registry and register
  from its database, assess, store assessments and episodes, write signals to the outbox) over
  every pupil, 1,000 pupils a transaction, twice: first with nothing computed yet (every episode
  new, every signal raised), then again with nothing changed (the diff only). The database is a
  borough loaded straight into a fresh one (``--db-scale``), or a copy of an existing rules
  database (``--db``, e.g. the dashboard benchmark's whole borough) with its computed tables
  emptied. ``--workers N`` assesses in N worker processes (on SQLite they read their pupils
  too). With ``--postgres`` it is a fresh PostgreSQL database of the ``--db-scale`` borough
  instead (``ROLLCALL_BENCH_POSTGRES_URL``).
* **attendance reads**: ``GET /v1/pupils/{upn}/attendance`` at ``--get-rate`` requests/s, open
  loop from ``bench.load --mode attendance`` in its own process, against rules under uvicorn on
  that recomputed database; then the rules process's resident memory (current and peak). With
  ``--postgres`` the reads are against the PostgreSQL database (the production database), which is
  dropped afterwards.
* **consumption**: ingest takes ``--consume-days`` school days of marks for
  ``--consume-pupils`` pupils and publishes them; rules then starts on a fresh consumer group
  and is timed from its first committed batch to the last (marks/s it can take).
* **engine, whole borough**: the pure engine assessing every enrolment of the synthetic borough's
  whole year (≈ 38,000 pupils × 380 sessions), registers built by the generator in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, select, text

from bench import summary
from bench.ingest import drop_postgres, fresh_postgres
from bench.stack import free_port, register_school, school_days, start_processes, start_service
from borough.generate import Borough
from deploy.kafka import Broker
from services.rules import engine, recompute
from services.rules import tables as t
from shared import kafka
from shared.auth import mint_token
from shared.calendar import AcademicYear, Calendars
from shared.codes import lookup
from shared.collector import tune_collector
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
        if db.dialect.name == "postgresql":  # planner statistics, as autovacuum keeps them in service
            async with db.connect() as conn:
                auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await auto.execute(text("ANALYZE"))
    finally:
        await db.dispose()
    return sorted(set(upns)), n_marks


async def reuse_rules_db(source: Path, target: Path) -> tuple[list[str], int]:
    """A copy of an existing rules database (e.g. the dashboard benchmark's whole borough), migrated,
    with everything the rules compute emptied, so the recompute starts from the registry and
    register alone, as after a fresh load."""
    await asyncio.to_thread(shutil.copyfile, source, target)
    url = f"sqlite+aiosqlite:///{target}"
    await asyncio.to_thread(upgrade, "rules", url)
    db = create_engine(url)
    try:
        async with db.begin() as conn:
            for table in (t.assessments, t.episodes, t.signals, t.outbox, t.inbox):
                await conn.execute(table.delete())
        async with db.connect() as conn:
            upns = sorted((await conn.execute(select(t.pupils.c.upn))).scalars())
            n_marks = (await conn.execute(select(func.count()).select_from(t.register))).scalar_one()
    finally:
        await db.dispose()
    return upns, n_marks


async def bench_recompute(
    url: str, seed: int, scale: float, reuse: Path | None = None, workers: int = 0
) -> dict[str, float]:
    """Every pupil recomputed twice, 1,000 a transaction: first from the registry and register
    alone (every episode new, every signal raised), then again (nothing changed: only the diff)."""
    t0 = time.perf_counter()
    if reuse is not None:
        upns, n_marks = await reuse_rules_db(reuse, Path(url.split(":///", 1)[1]))
    else:
        upns, n_marks = await fill_rules_db(url, seed, scale)
    fill_s = time.perf_counter() - t0
    tune_collector()  # the collector as the rules service runs it
    policy = load_policy()
    today, now = dt.date(2025, 7, 22), dt.datetime(2025, 7, 22, 16, tzinfo=dt.UTC)
    db = create_engine(url)
    cache = recompute.CalendarCache()
    pool = recompute.assessor_processes(workers) if workers > 0 else None
    if pool is not None:  # started (and their imports done) before the clock, as in a running service
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(pool, time.sleep, 0.2) for _ in range(workers)))
    out: dict[str, float] = {"pupils": len(upns), "marks": n_marks, "fill_s": fill_s}
    try:
        for seconds, signals in (("recompute_s", "signals"), ("again_s", "again_signals")):
            out[signals] = 0
            t0 = time.perf_counter()
            for i in range(0, len(upns), 1000):
                async with db.begin() as conn:
                    outcome = await recompute.recompute(
                        conn, upns[i : i + 1000], policy, cache, today, now, pool=pool
                    )
                    out[signals] += outcome.signals
            out[seconds] = time.perf_counter() - t0
    finally:
        await db.dispose()
        if pool is not None:
            pool.shutdown()
    return out


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


async def _group_progress(bootstrap: str, group: str, topic: str) -> tuple[int, int]:
    """(offsets the group has committed, end offsets) summed over ``topic``'s partitions."""
    tps = [TopicPartition(topic, p) for p in range(await kafka.partition_count(bootstrap, topic))]
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        ends = await probe.end_offsets(tps)
        committed = [await probe.committed(tp) or 0 for tp in tps]
        return sum(committed), sum(ends.values())
    finally:
        await probe.stop()


async def bench_consume(bootstrap: str, work: Path, pupils: int, days: int) -> dict[str, float]:
    """How fast rules consumes marks: ingest takes ``days`` school days of marks for ``pupils``
    pupils (schools of up to 1,000) and publishes them; ingest stops; rules then starts with a fresh group
    and is timed from its first committed batch until it has consumed everything."""
    ingest, ingest_url = await start_service(
        "ingest", f"sqlite+aiosqlite:///{work / 'consume-ingest.db'}", bootstrap
    )
    marks = 0
    try:
        async with httpx.AsyncClient(base_url=ingest_url, timeout=300) as client:
            n_schools = -(-pupils // 1000)  # at most 1,000 UPN serials per school
            schools = [
                (urn, *(await register_school(client, urn, 6100 + k, pupils // n_schools)))
                for k, urn in enumerate(str(160101 + k) for k in range(n_schools))
            ]
            for d in school_days(days):
                for urn, headers, upns in schools:
                    body = [
                        {"upn": u, "date": d.isoformat(), "session": s, "code": "N" if k % 17 == 0 else "/"}
                        for s in ("AM", "PM")
                        for k, u in enumerate(upns)
                    ]
                    r = await client.post(
                        f"/v1/schools/{urn}/marks", content=orjson.dumps({"marks": body}), headers=headers
                    )
                    r.raise_for_status()
                    marks += r.json()["accepted"]
        for _ in range(600):  # every mark on Kafka
            _, end = await _group_progress(bootstrap, "bench-none", Topic.MARKS)
            if end >= marks:
                break
            await asyncio.sleep(0.5)
    finally:
        ingest.terminate()
        ingest.wait(timeout=30)
    group = f"bench-consume-{uuid.uuid4().hex[:6]}"
    rules, _ = await start_service(
        "rules",
        f"sqlite+aiosqlite:///{work / 'consume-rules.db'}",
        bootstrap,
        ROLLCALL_CONSUMER_GROUP=group,
        ROLLCALL_SCHEDULER_SECONDS="3600",
    )
    try:
        first_done, first_at = 0, 0.0
        while True:
            done, end = await _group_progress(bootstrap, group, Topic.MARKS)
            now = time.perf_counter()
            if done and not first_at:
                first_done, first_at = done, now
            if done >= end:
                break
            await asyncio.sleep(0.2)
    finally:
        rules.terminate()
        rules.wait(timeout=30)
    seconds = now - first_at
    return {"marks": marks, "measured": done - first_done, "seconds": seconds,
            "rate": (done - first_done) / seconds if seconds > 0 else 0.0}  # fmt: skip


def _rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size in MiB of process ``pid`` and its children (uvicorn's
    worker processes, when there are several; Linux /proc)."""
    rss = peak = 0.0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:  # the process ended meanwhile
            continue
        ours = status.parent.name == str(pid) or fields.get("PPid", "").strip() == str(pid)
        if ours and "VmRSS" in fields:  # (a zombie has none)
            rss += int(fields["VmRSS"].split()[0]) / 1024
            peak += int(fields["VmHWM"].split()[0]) / 1024
    return rss, peak


async def bench_attendance(
    db_url: str,
    bootstrap: str,
    work: Path,
    rate: float,
    duration: float,
    warmup: float,
    processes: int = 1,
) -> dict[str, Any]:
    """GET /v1/pupils/{upn}/attendance at ``rate`` requests/s (open loop, ``bench.load`` in its own
    process) against rules under uvicorn (``processes`` worker processes) on the recomputed
    database, the first ``warmup`` seconds unrecorded; then the service's RSS (all its processes)."""
    db = create_engine(db_url)
    try:
        async with db.connect() as conn:
            upns = list((await conn.execute(select(t.enrolments.c.upn).order_by(func.random()))).scalars())
    finally:
        await db.dispose()
    upns_file = work / "upns.txt"
    upns_file.write_text("\n".join(upns[:20_000]) + "\n", encoding="ascii")
    env = {
        "ROLLCALL_CONSUMER_GROUP": f"bench-get-{uuid.uuid4().hex[:6]}",
        "ROLLCALL_SCHEDULER_SECONDS": "3600",
        "ROLLCALL_TODAY": "2025-07-22",
    }
    rules, base = await start_processes("rules", db_url, bootstrap, processes, env)
    try:
        loaded_rss = _rss_mib(rules.pid)[0]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.load", "--url", base, "--json", "--mode", "attendance",
            "--upns-file", str(upns_file), "--rate", str(rate), "--duration", str(duration),
            "--warmup", str(warmup), stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"bench.load --mode attendance failed ({proc.returncode})")
        summary: dict[str, Any] = orjson.loads(out.splitlines()[-1])
        rss, peak = _rss_mib(rules.pid)
    finally:
        rules.terminate()
        rules.wait(timeout=30)
    rss_fields = {"rss_loaded_mib": loaded_rss, "rss_mib": rss, "rss_peak_mib": peak}
    return {**summary, "pupils": len(upns), "warmup_s": warmup, **rss_fields}


WHOLE_BOROUGH = 38_025  # pupils of the synthetic borough at scale 1.0


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
    parser.add_argument(
        "--db",
        type=Path,
        help="reuse this rules SQLite database (copied) for the recompute and the reads, e.g. the "
        "dashboard benchmark's whole borough; --db-scale is then ignored",
    )
    parser.add_argument("--samples", type=int, default=300, help="marks timed to their signal")
    parser.add_argument("--consume-pupils", type=int, default=3000, help="pupils whose marks rules consumes")
    parser.add_argument("--consume-days", type=int, default=30, help="school days of their marks")
    parser.add_argument("--get-rate", type=float, default=200, help="attendance reads per second")
    parser.add_argument("--get-duration", type=float, default=30, help="seconds of attendance reads")
    parser.add_argument(
        "--get-warmup", type=float, default=5, help="seconds of reads at the same rate first, unrecorded"
    )
    parser.add_argument(
        "--get-processes", type=int, default=1, help="rules' uvicorn worker processes for the reads"
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="the recompute and the attendance reads against PostgreSQL (a fresh database of --db-scale) "
        "instead of SQLite",
    )
    parser.add_argument("--skip-engine", action="store_true", help="skip the pure-engine benchmark")
    parser.add_argument(
        "--workers", type=int, default=0, help="assessor processes for the recompute (0: none)"
    )
    parser.add_argument(
        "--only",
        default="latency,recompute,get,consume,engine",
        help="comma-separated phases to run (get needs recompute)",
    )
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    base = os.environ.get("ROLLCALL_BENCH_POSTGRES_URL")
    if args.postgres and not base:
        parser.error("--postgres needs ROLLCALL_BENCH_POSTGRES_URL (`make bench` sets it)")
    work = Path(tempfile.mkdtemp(prefix="rollcall-bench-rules-"))
    broker = Broker(work / "kafka", free_port(), free_port())
    broker.start()
    asyncio.run(kafka.ensure_topics(broker.bootstrap))
    rules_url = f"sqlite+aiosqlite:///{work / 'rules.db'}"
    pg_url = asyncio.run(fresh_postgres(base)) if args.postgres and base else None
    try:
        print(f"\nrules — {os.cpu_count()} cores", flush=True)
        if "latency" in only:
            lat = asyncio.run(bench_latency(broker.bootstrap, work, args.samples))
            print(
                f"mark → signal on Kafka (at rest, {lat['samples']:.0f} marks): "
                f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms",
                flush=True,
            )
        if "recompute" in only:
            url = pg_url or rules_url
            reuse = None if pg_url else args.db
            rec = asyncio.run(bench_recompute(url, args.seed, args.db_scale, reuse, args.workers))
            source = f"{args.db.name}" if reuse else f"scale {args.db_scale}"
            report_recompute(rec, source, args.workers, "PostgreSQL" if pg_url else "SQLite")
        if "get" in only and "recompute" not in only:  # a database, not assessments
            if pg_url is not None or args.db is None:
                asyncio.run(fill_rules_db(pg_url or rules_url, args.seed, args.db_scale))
            else:
                asyncio.run(reuse_rules_db(args.db, work / "rules.db"))
        if "get" in only:
            get = asyncio.run(
                bench_attendance(
                    pg_url or rules_url,
                    broker.bootstrap,
                    work,
                    args.get_rate,
                    args.get_duration,
                    args.get_warmup,
                    args.get_processes,
                )
            )
            report_attendance(get, args.get_rate, "PostgreSQL" if pg_url else "SQLite", args.get_processes)
        if "consume" in only:
            con = asyncio.run(bench_consume(broker.bootstrap, work, args.consume_pupils, args.consume_days))
            print(
                f"rules consumption: {con['measured']:.0f} marks in {con['seconds']:.1f} s = "
                f"{con['rate']:.0f} marks/s ({args.consume_pupils} pupils, {args.consume_days} school days)",
                flush=True,
            )
            summary.add("rules consumption", "keeps up with ingest", f"{con['rate']:,.0f} marks/s")
        if "engine" in only and not args.skip_engine:
            eng = bench_engine(args.seed, args.scale)
            print(
                f"engine, whole borough year (scale {args.scale}): {eng['pupils']:.0f} pupils, "
                f"{eng['marks']:.0f} marks "
                f"assessed in {eng['engine_s']:.1f} s ({eng['pupils'] / eng['engine_s']:.0f} pupils/s); "
                f"with generation {eng['total_s']:.1f} s"
            )
    finally:
        if pg_url is not None and base:
            asyncio.run(drop_postgres(base, pg_url))
        broker.kill()
        shutil.rmtree(work, ignore_errors=True)


def report_recompute(rec: dict[str, float], source: str, workers: int, backend: str) -> None:
    how = {0: "one process", 1: "1 worker process"}.get(workers, f"{workers} worker processes")
    for label, key, signals in (("first", "recompute_s", "signals"), ("again", "again_s", "again_signals")):
        per_s = rec["pupils"] / rec[key]
        print(
            f"recompute from {backend} ({source}, {how}), {label}: {rec['pupils']:.0f} pupils, "
            f"{rec['marks']:.0f} marks in {rec[key]:.1f} s ({per_s:.0f} pupils/s, "
            f"{rec[signals]:.0f} signals)",
            flush=True,
        )
        whole = rec[key] if rec["pupils"] >= WHOLE_BOROUGH else WHOLE_BOROUGH / per_s
        scaled = "" if rec["pupils"] >= WHOLE_BOROUGH else f", extrapolated from {rec['pupils']:.0f} pupils"
        figure = f"{whole:.1f} s ({backend}, {how}{scaled})"
        summary.add(f"recompute a borough's whole year ({label})", "< 30 s", figure)
    print(f"  (database prepared in {rec['fill_s']:.1f} s)", flush=True)


def report_attendance(get: dict[str, Any], rate: float, backend: str, processes: int = 1) -> None:
    lat_ms = get["latency_ms"]
    how = "" if processes == 1 else f", {processes} rules processes"
    print(
        f"GET /v1/pupils/{{upn}}/attendance at {rate:g}/s over {get['pupils']} enrolments ({backend}{how}, "
        f"after {get['warmup_s']:g} s of warm-up): {get['requests']} ok, {get['errors']} errors, "
        f"p50 {lat_ms['p50']:.1f} ms, p99 {lat_ms['p99']:.1f} ms, max {lat_ms['max']:.1f} ms",
        flush=True,
    )
    print(
        f"rules RSS{'' if processes == 1 else ' (all its processes)'} with the database loaded: "
        f"{get['rss_loaded_mib']:.0f} MiB at start, "
        f"{get['rss_mib']:.0f} MiB after the reads (peak {get['rss_peak_mib']:.0f} MiB)",
        flush=True,
    )
    summary.add(
        f"GET /v1/pupils/{{upn}}/attendance at {rate:g}/s",
        "p99 < 20 ms",
        f"p50 {lat_ms['p50']:.1f} ms, p99 {lat_ms['p99']:.1f} ms "
        f"({get['pupils']} enrolments, {backend}{how}, after {get['warmup_s']:g} s warm-up)",
    )
    each = "" if processes == 1 else f" (the sum of {processes} processes)"
    summary.add("rules RSS, borough loaded", "< 1 GiB", f"{get['rss_peak_mib']:.0f} MiB peak{each}")
