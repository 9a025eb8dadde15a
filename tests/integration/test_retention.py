"""Retention (issue 7): the purge deletes exactly what is past retention, at the boundary, on
SQLite and PostgreSQL, in batches; ``--dry-run`` counts the same rows and deletes none.

The register boundary (shared/retention.py): a session is kept for 6 whole years after the end of
its academic year. On 31 Aug 2025 a mark of 31 Aug 2019 (exactly 6 years old, the last day of
2018-19) is kept; on 1 Sep 2025 it goes, while a mark of 1 Sep 2019 (exactly 6 years old that day,
2019-20) stays, and so does a 2018-19 mark entered (received) in September 2019.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest import tables as ingest_t
from services.notifications import tables as notif_t
from services.rules import tables as rules_t
from shared.db import create_engine
from shared.migrate import upgrade
from shared.retention import purge, purge_worker, rules_of
from shared.service import fixed_day_clock
from shared.settings import Settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2025, 9, 1, 12, 0, tzinfo=dt.UTC)
SEPT_1, AUG_31 = dt.date(2025, 9, 1), dt.date(2025, 8, 31)
UPN = "A343200018001"


def at(day: str, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(hour), dt.UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def urls(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    names = ("ingest", "rules", "notifications")
    if request.param == "sqlite":
        out = {s: f"sqlite+aiosqlite:///{tmp_path / f'{s}.db'}" for s in names}
    else:
        make = request.getfixturevalue("postgres_databases")
        out = {s: await make() for s in names}
    for service, url in out.items():
        await asyncio.to_thread(upgrade, service, url)
    return out


@pytest.fixture
async def engines(urls: dict[str, str]) -> AsyncIterator[dict[str, AsyncEngine]]:
    engines = {s: create_engine(u) for s, u in urls.items()}
    yield engines
    for engine in engines.values():
        await engine.dispose()


def settings(service: str, **kw: Any) -> Settings:
    return Settings(service=service, env="test", purge_batch=2, **kw)  # small batches: the loop is exercised


async def keys(engine: AsyncEngine, table: Any, *columns: str) -> set[Any]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(*(table.c[c] for c in columns)))).all()
    return {r[0] if len(columns) == 1 else tuple(r) for r in rows}


async def test_register_kept_six_years_after_its_academic_year(engines: dict[str, AsyncEngine]) -> None:
    ingest, rules = engines["ingest"], engines["rules"]
    marks = {  # session date -> when the entry was made (received)
        "2018-08-31": at("2018-08-31"),  # 2017-18: long past
        "2019-07-01": at("2019-09-05"),  # 2018-19, but entered in 2019-20: kept a year longer
        "2019-08-30": at("2019-08-30"),
        "2019-08-31": at("2019-08-31", 22),  # the last day of 2018-19
        "2019-09-01": at("2019-09-01"),  # the first day of 2019-20
        "2024-09-03": at("2024-09-03"),
    }
    async with ingest.begin() as conn:
        await conn.execute(
            ingest_t.marks.insert(),
            [
                {
                    "school_urn": "104001",
                    "upn": UPN,
                    "date": dt.date.fromisoformat(d),
                    "session": "AM",
                    "code": "/",
                    "minutes_late": None,
                    "recorded_at": received,
                    "received_at": received,
                }
                for d, received in marks.items()
            ],
        )
        await conn.execute(
            ingest_t.mark_history.insert(),
            [
                {
                    "school_urn": "104001",
                    "upn": UPN,
                    "date": dt.date.fromisoformat(d),
                    "session": "AM",
                    "code": "N",
                    "minutes_late": None,
                    "recorded_at": received,
                    "received_at": received,
                    "replaced_at": received + dt.timedelta(days=1),
                    "replaced_by": "/",
                }
                for d, received in marks.items()
            ],
        )
    async with rules.begin() as conn:
        await conn.execute(
            rules_t.register.insert(),
            [
                {
                    "upn": UPN,
                    "school_urn": "104001",
                    "date": dt.date.fromisoformat(d),
                    "session": "AM",
                    "code": "/",
                    "category": "present",
                }
                for d in marks
            ],
        )
        await conn.execute(
            rules_t.register_weeks.insert(),
            [
                {
                    "school_urn": "104001",
                    "week": dt.date.fromisoformat(w),
                    "upn": UPN,
                    "present": 1,
                    "aea": 0,
                    "authorised": 0,
                    "unauthorised": 0,
                    "not_counted": 0,
                }
                for w in ("2019-08-19", "2019-08-26", "2019-09-02")  # 26 Aug's week ends on Sunday 1 Sep 2019
            ],
        )
        await conn.execute(
            rules_t.episodes.insert(),
            [
                {
                    "upn": UPN,
                    "key": key,
                    "school_urn": "104001",
                    "type": "band_changed",
                    "started_on": dt.date(2019, 3, 1),
                    "ended_on": ended,
                    "detail": {},
                }
                for key, ended in (("ended", dt.date(2019, 5, 1)), ("open", None))
            ],
        )

    def dates(rows: set[Any]) -> list[str]:
        return sorted(d.isoformat() for d in rows)

    # 31 Aug 2025: only 2017-18 is past; the mark of 31 Aug 2019 is exactly 6 years old and kept.
    counts = await purge(ingest, rules_of("ingest"), settings("ingest"), AUG_31, NOW)
    assert counts == {"marks": 1, "mark_history": 1, "audit_log": 0}
    assert dates(await keys(ingest, ingest_t.marks, "date")) == sorted(set(marks) - {"2018-08-31"})

    # 1 Sep 2025: 2018-19 goes, except the mark entered in 2019-20; dry run first.
    dry = await purge(ingest, rules_of("ingest"), settings("ingest"), SEPT_1, NOW, dry_run=True)
    assert dry == {"marks": 2, "mark_history": 2, "audit_log": 0}
    assert len(await keys(ingest, ingest_t.marks, "date")) == 5  # nothing deleted by a dry run
    assert await purge(ingest, rules_of("ingest"), settings("ingest"), SEPT_1, NOW) == dry
    kept = ["2019-07-01", "2019-09-01", "2024-09-03"]
    assert dates(await keys(ingest, ingest_t.marks, "date")) == kept
    assert dates(await keys(ingest, ingest_t.mark_history, "date")) == kept

    # The rules service's copy goes by the session date alone (it has no entry date), weeks whole.
    counts = await purge(rules, rules_of("rules"), settings("rules"), SEPT_1, NOW)
    assert (counts["register"], counts["register_weeks"], counts["episodes"]) == (4, 1, 1)
    assert dates(await keys(rules, rules_t.register, "date")) == ["2019-09-01", "2024-09-03"]
    assert dates(await keys(rules, rules_t.register_weeks, "week")) == ["2019-08-26", "2019-09-02"]
    assert await keys(rules, rules_t.episodes, "key") == {"open"}
    assert await purge(
        rules, rules_of("rules"), settings("rules"), SEPT_1, NOW, dry_run=True
    ) == dict.fromkeys(counts, 0)


async def test_alerts_audit_and_inbox_by_their_own_periods(engines: dict[str, AsyncEngine]) -> None:
    notifications = engines["notifications"]
    s = settings(
        "notifications", retention_alerts_days=730, retention_audit_days=2196, retention_bookkeeping_days=30
    )
    alert_cut, audit_cut, inbox_cut = (NOW - dt.timedelta(days=n) for n in (730, 2196, 30))
    second = dt.timedelta(seconds=1)

    def alert(id_: str, raised: dt.datetime) -> dict[str, Any]:
        return {
            "id": id_,
            "signal": "first_day_absence",
            "upn": UPN,
            "school_urn": "104001",
            "recipient": "ao-1",
            "reason": "attendance_officer",
            "episode": id_,
            "source_event": id_,
            "occurred_on": raised.date(),
            "raised_at": raised,
            "status": "delivered",
            "first_day": True,
            "evidence_url": "http://x",
            "detail": {},
        }

    def delivery(alert_id: str, created: dt.datetime) -> dict[str, Any]:
        return {
            "alert_id": alert_id,
            "channel": "webhook",
            "target": "s1",
            "address": "http://x",
            "payload": b"{}",
            "status": "delivered",
            "attempts": 1,
            "next_attempt_at": created,
            "created_at": created,
        }

    async with notifications.begin() as conn:
        await conn.execute(
            notif_t.alerts.insert(), [alert("old", alert_cut - second), alert("kept", alert_cut)]
        )
        # The old alert's delivery was re-queued recently: it still goes with its alert.
        await conn.execute(
            notif_t.deliveries.insert(),
            [delivery("old", NOW - dt.timedelta(days=1)), delivery("kept", alert_cut)],
        )
        await conn.execute(
            notif_t.inbox.insert(),
            [
                {"event_id": "e-old", "processed_at": inbox_cut - second},
                {"event_id": "e-kept", "processed_at": inbox_cut},
            ],
        )
        for audit_at, upn in ((audit_cut - second, "A343200018001"), (audit_cut, "B343200018002")):
            row = {
                "at": audit_at,
                "sub": "x",
                "schools": None,
                "la": None,
                "service": "notifications",
                "method": "GET",
                "route": "/v1/alerts",
                "purpose": "unspecified",
                "status": 200,
                "resources": [],
            }
            audit_id = (await conn.execute(notif_t.audit.log.insert().values(**row))).inserted_primary_key[0]
            await conn.execute(notif_t.audit.subjects.insert().values(audit_id=audit_id, upn=upn))

    counts = await purge(notifications, rules_of("notifications"), s, SEPT_1, NOW)
    assert counts == {"deliveries": 1, "alerts": 1, "inbox": 1, "audit_log": 1}
    assert await keys(notifications, notif_t.alerts, "id") == {"kept"}
    assert await keys(notifications, notif_t.deliveries, "alert_id") == {"kept"}
    assert await keys(notifications, notif_t.inbox, "event_id") == {"e-kept"}
    assert await keys(notifications, notif_t.audit.subjects, "upn") == {"B343200018002"}  # cascaded


async def test_the_purge_worker_reads_the_services_clock(engines: dict[str, AsyncEngine]) -> None:
    """With ``ROLLCALL_TODAY`` (the e2e stack, a demo) rows are stamped by the service's clock, that
    day at the real time of day: an alert raised just now is kept, however long ago that day is,
    and one raised 731 days before it is purged (the worker once used the real date: it deleted
    every alert of a 2024 stack within 15 s of its raising)."""
    notifications = engines["notifications"]
    clock = fixed_day_clock(dt.date(2024, 10, 25), ZoneInfo("Europe/London"))
    rt = SimpleNamespace(
        settings=settings("notifications", purge_interval_seconds=0.05),
        engine=notifications,
        now=clock,
        today=lambda: clock().astimezone(ZoneInfo("Europe/London")).date(),
    )
    rows = [("now", clock()), ("old", clock() - dt.timedelta(days=731))]
    async with notifications.begin() as conn:
        await conn.execute(
            notif_t.alerts.insert(),
            [
                {
                    "id": i,
                    "signal": "first_day_absence",
                    "upn": UPN,
                    "school_urn": "104001",
                    "recipient": "ao-1",
                    "reason": "attendance_officer",
                    "episode": i,
                    "source_event": i,
                    "occurred_on": raised.date(),
                    "raised_at": raised,
                    "status": "raised",
                    "first_day": True,
                    "evidence_url": "http://x",
                    "detail": {},
                }
                for i, raised in rows
            ],
        )
    worker = asyncio.create_task(purge_worker(rules_of("notifications"))(rt))
    try:
        async with asyncio.timeout(20):
            while await keys(notifications, notif_t.alerts, "id") != {"now"}:  # noqa: ASYNC110 - polling
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # several more turns of the worker
        assert await keys(notifications, notif_t.alerts, "id") == {"now"}
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)


async def test_the_purge_command(urls: dict[str, str]) -> None:
    env = dict(os.environ, ROLLCALL_DATABASE_URL=urls["rules"], ROLLCALL_TODAY="2025-09-01")
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "shared.retention", "rules", "--dry-run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert '"dry_run":true' in out.stdout
    assert '"register":0' in out.stdout
