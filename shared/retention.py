"""Retention: what each service deletes once it is past its retention period, and the purge job.

**What "kept 6 years" means here.** The School Attendance (Pupil Registration) (England)
Regulations 2024 keep every register entry for 6 years from the date of entry. Rollcall keeps a
session's register entry for ``ROLLCALL_RETENTION_REGISTER_YEARS`` (at least 6; less refuses to
start) **whole years after the end of the academic year of the session** (31 August), and deletes
it from the 1 September after that: a mark of any day of 2018-19 (1 Sep 2018 – 31 Aug 2019) is
kept up to and including 31 Aug 2025 and purged from 1 Sep 2025, so a mark is never deleted less
than 6 years after its date. Where the service stores when the entry was *made* (ingest's
``received_at``, of a mark and of a replaced code in ``mark_history``), that must also lie in an
academic year that ended that long ago, so a late amendment keeps its entry 6 years from when it was made. The
same boundary applies to everything derived per session (rules' and legal's copies of the
register, the daily and weekly sums, rules' signals by the day they occurred). "Today" is the
service's today in the LA's time zone (``ROLLCALL_TODAY`` included).

The other periods are in days from the row's own timestamp, against the service's clock (the real
clock; with ``ROLLCALL_TODAY``, that day at the real time of day, as the rows were stamped): alerts and
their deliveries (``ROLLCALL_RETENTION_ALERTS_DAYS``, 730), the audit log
(``ROLLCALL_RETENTION_AUDIT_DAYS``, 2196 ≈ 6 years, as long as the register it reports reads of),
inbox ids kept to de-duplicate redelivered events (``ROLLCALL_RETENTION_BOOKKEEPING_DAYS``, 30, at
least 8: longer than Kafka keeps a record, 7 days by default, so no redelivery can outlive its
id). Outbox rows need no retention: the relay deletes each once Kafka has it. Not purged (their
retention is not the register's and is the LA's records-management decision): legal case files
(cases, notices, offences, evidence snapshots, the signals behind them), the registry of pupils
and schools, recipients and allocations.

**The job.** Each service runs ``purge_worker`` (every ``ROLLCALL_PURGE_INTERVAL_SECONDS``, a day;
the first run 5 minutes after start; with several processes on PostgreSQL one takes each turn);
``python -m shared.retention SERVICE [--dry-run]`` runs it once and prints the counts. Rows are
deleted in transactions of at most ``ROLLCALL_PURGE_BATCH`` rows, so a first purge of years of
data never holds a long lock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import structlog
from sqlalchemy import ColumnElement, Table, delete, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.calendar import AcademicYear
from shared.db import create_engine, try_lock
from shared.observability import error_fields
from shared.policy import load_policy
from shared.settings import Settings

log = structlog.get_logger()

Category = Literal["register", "alerts", "audit", "bookkeeping"]


@dataclass(frozen=True)
class Cutoff:
    """Rows older than this go: ``day`` for date columns, ``at`` (UTC) for timestamps."""

    day: dt.date
    at: dt.datetime


@dataclass(frozen=True)
class Rule:
    """One table's retention: rows matching ``where(cutoff)`` are past it."""

    table: Table
    category: Category
    where: Callable[[Cutoff], ColumnElement[bool]]


def register_cutoff(today: dt.date, years: int) -> dt.date:
    """The first session date still kept: the register of academic year Y goes once ``years``
    whole years have passed since Y ended (31 August), i.e. from the 1 September after.

    >>> register_cutoff(dt.date(2025, 8, 31), 6), register_cutoff(dt.date(2025, 9, 1), 6)
    (datetime.date(2018, 9, 1), datetime.date(2019, 9, 1))
    """
    return dt.date(AcademicYear.of(today).start_year - years, 9, 1)


def cutoffs(settings: Settings, today: dt.date, now: dt.datetime) -> dict[Category, Cutoff]:
    def days(n: int) -> Cutoff:
        at = now - dt.timedelta(days=n)
        return Cutoff(at.date(), at)

    first_kept = register_cutoff(today, settings.retention_register_years)
    return {
        "register": Cutoff(first_kept, dt.datetime.combine(first_kept, dt.time(), dt.UTC)),
        "alerts": days(settings.retention_alerts_days),
        "audit": days(settings.retention_audit_days),
        "bookkeeping": days(settings.retention_bookkeeping_days),
    }


async def purge(
    engine: AsyncEngine,
    rules: Sequence[Rule],
    settings: Settings,
    today: dt.date,
    now: dt.datetime,
    *,
    dry_run: bool = False,
) -> dict[str, int]:
    """Delete (or with ``dry_run`` count) every row past retention; rows per table."""
    limits = cutoffs(settings, today, now)
    counts: dict[str, int] = {}
    for rule in rules:
        criterion = rule.where(limits[rule.category])
        if dry_run:
            async with engine.connect() as conn:
                q = select(func.count()).select_from(rule.table).where(criterion)
                counts[str(rule.table.name)] = int((await conn.execute(q)).scalar_one())
            continue
        pk = list(rule.table.primary_key.columns)
        key = pk[0] if len(pk) == 1 else tuple_(*pk)
        total = 0
        while True:
            async with engine.begin() as conn:
                batch = (await conn.execute(select(*pk).where(criterion).limit(settings.purge_batch))).all()
                if not batch:
                    break
                values = [r[0] for r in batch] if len(pk) == 1 else [tuple(r) for r in batch]
                for start in range(0, len(values), 1000):  # bound parameters per statement
                    await conn.execute(delete(rule.table).where(key.in_(values[start : start + 1000])))
            total += len(batch)
        counts[str(rule.table.name)] = total
    return counts


def purge_worker(rules: Sequence[Rule]) -> Callable[[Any], Coroutine[Any, Any, None]]:
    """The daily purge as a service worker (``service_app(workers=...)``)."""

    async def purge(rt: Any) -> None:
        settings: Settings = rt.settings
        if not settings.purge_enabled:
            return
        await asyncio.sleep(min(300.0, settings.purge_interval_seconds))
        while True:
            try:
                # The service's clock, which stamped the rows: with ``ROLLCALL_TODAY`` (a demo or a
                # test stack) that day at the real time of day, so an alert raised "today" is not
                # taken for one raised years before the real date and purged at once.
                await once(rt.engine, rules, settings, rt.today(), rt.now())
            except Exception as exc:  # noqa: BLE001 - try again next time
                log.error("purge_failed", service=settings.service, **error_fields(exc))
            await asyncio.sleep(settings.purge_interval_seconds)

    return purge


async def once(
    engine: AsyncEngine, rules: Sequence[Rule], settings: Settings, today: dt.date, now: dt.datetime
) -> dict[str, int] | None:
    """One purge; on PostgreSQL skipped (None) while another process of the service purges."""
    if engine.dialect.name != "postgresql":
        counts = await purge(engine, rules, settings, today, now)
    else:
        async with engine.connect() as lock_conn, lock_conn.begin():
            if not await try_lock(lock_conn, f"purge:{settings.service}"):
                return None
            counts = await purge(engine, rules, settings, today, now)
    log.info("purged", service=settings.service, **counts)  # table names and counts only
    return counts


def rules_of(service: str) -> list[Rule]:
    module = importlib.import_module(f"services.{service}.privacy")
    return list(module.RULES)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Delete what is past retention in one service's database (README 'Data protection')."
    )
    parser.add_argument("service", choices=["ingest", "rules", "legal", "notifications"])
    parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    args = parser.parse_args()
    settings = Settings(service=args.service)
    policy = load_policy(settings.policy_file)
    now = dt.datetime.now(dt.UTC)
    today = settings.today or now.astimezone(policy.zone).date()
    if settings.today:  # the service's clock (``shared.service.fixed_day_clock``), as the worker's
        now = dt.datetime.combine(settings.today, now.astimezone(policy.zone).timetz()).astimezone(dt.UTC)

    async def go() -> dict[str, int]:
        engine = create_engine(settings.db_url)
        try:
            return await purge(engine, rules_of(args.service), settings, today, now, dry_run=args.dry_run)
        finally:
            with contextlib.suppress(Exception):
                await engine.dispose()

    counts = asyncio.run(go())
    print(
        orjson.dumps(
            {"service": args.service, "dry_run": args.dry_run, "today": today, "rows": counts}
        ).decode()
    )


if __name__ == "__main__":
    main()
