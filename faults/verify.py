"""Drain and verify: every effect of the run against an independent recomputation.

* **Marks**: ingest's ``marks`` and rules' ``register`` against the generator's final register.
* **Episodes**: rules' ``episodes`` against the pure engine run afresh over the final register.
* **Signals**: every signal rules recorded is on ``rollcall.signals.v1`` (lost otherwise); after
  de-duplication by id, Kafka holds nothing rules did not record, and no episode was raised twice
  without ending in between (duplicated otherwise).
* **Alerts**: one alert per first-day signal of today (the only ones not suppressed as backfill),
  each delivered to the webhook receiver at least once, and no id there that the service did not
  raise.
* **Stuck**: no row in any outbox, no delivery pending or dead.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.ext.asyncio import create_async_engine

from faults.infra import Receiver
from services.rules import engine
from services.rules.recompute import CalendarCache, load_inputs
from shared.events import Topic
from shared.policy import load_policy
from shared.service import fixed_day_clock

FIRST_DAY = ("first_day_absence", "register_missing")
PARTITIONS = 3  # as the suite creates the topics
PENDING = "SELECT count(*) FROM deliveries WHERE status = 'pending'"
UNDELIVERED = "SELECT count(*) FROM deliveries WHERE status <> 'delivered'"
SIGNALS = "SELECT id, type, upn, episode_key, occurred_on, data FROM signals ORDER BY seq"
CONSUMERS = ("rules", "legal", "notifications")


@dataclass
class Expected:
    marks: dict[tuple[str, str, date, str], str]
    today: date


@dataclass
class Report:
    faults: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    duplicated: dict[str, int] = field(default_factory=dict)
    restarts: int = 0
    retries: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(self.lost.values()) and not any(self.duplicated.values())

    def table(self) -> str:
        rows = [("faults injected", "", "")]
        rows += [(f"  {k}", str(v), "") for k, v in sorted(self.faults.items())]
        rows += [("  service restarts (supervisor)", str(self.restarts), ""),
                 ("  loader requests retried", str(self.retries), "")]  # fmt: skip
        rows.append(("effects", "count", "lost / duplicated"))
        for what, n in self.counts.items():
            rows.append((f"  {what}", f"{n:,}", f"{self.lost.get(what, 0)} / {self.duplicated.get(what, 0)}"))
        rows.append(
            ("total lost / duplicated", "", f"{sum(self.lost.values())} / {sum(self.duplicated.values())}")
        )
        rows.append(("duration", f"{self.seconds:.0f} s", "PASS" if self.ok else "FAIL"))
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{a:<{width}}  {b:>10}  {c}" for a, b, c in rows)


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _pg(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _fetch(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(_pg(url))
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def _lag(bootstrap: str) -> int:
    """Events on the topics not yet committed by the rules, legal and notifications groups."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        lag = 0
        for name in CONSUMERS:
            committed = await admin.list_consumer_group_offsets(f"faults-{name}")
            if not committed:
                return -1
            ends = await consumer.end_offsets(list(committed))
            lag += sum(ends[tp] - max(meta.offset, 0) for tp, meta in committed.items())
        return lag
    finally:
        await consumer.stop()
        await admin.close()


async def _pending(urls: dict[str, str]) -> tuple[int, ...]:
    outboxes = [(await _fetch(u, "SELECT coalesce(sum(events), 0) FROM outbox"))[0][0] for u in urls.values()]
    deliveries = await _fetch(
        urls["notifications"], "SELECT count(*) FROM deliveries WHERE status = 'pending'"
    )
    marks = (await _fetch(urls["ingest"], "SELECT count(*) FROM marks"))[0][0]
    register = (await _fetch(urls["rules"], "SELECT count(*) FROM register"))[0][0]
    return (*outboxes, deliveries[0][0], marks - register)


async def drain(urls: dict[str, str], bootstrap: str, *, seconds: float) -> None:
    """Wait until outboxes, consumer lag and the delivery queue are empty three checks running."""
    deadline = time.monotonic() + seconds
    calm = 0
    while calm < 3:
        if time.monotonic() > deadline:
            return  # verify() reports whatever is still stuck
        try:
            busy = any(await _pending(urls)) or await _lag(bootstrap) != 0
        except (OSError, asyncpg.PostgresError, Exception):  # noqa: BLE001 - a service mid-restart
            busy = True
        calm = 0 if busy else calm + 1
        await asyncio.sleep(2)


async def _signals_on_kafka(bootstrap: str) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(str(Topic.SIGNALS), p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[dict[str, Any]] = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(*parts, timeout_ms=1000)
            for records in batch.values():
                out += [orjson.loads(r.value) for r in records if r.value is not None]
        return out
    finally:
        await consumer.stop()


async def _recomputed_episodes(rules_url: str, today: date) -> set[tuple[str, str, date | None]]:
    """The engine's episodes over rules' final registry and register (independent of its tables
    of episodes and signals)."""
    policy = load_policy()
    now = fixed_day_clock(today, policy.zone)()
    db = create_async_engine(rules_url)
    try:
        async with db.connect() as conn:
            upns = [r[0] for r in await conn.exec_driver_sql("SELECT DISTINCT upn FROM enrolments")]
            inputs = await load_inputs(conn, upns, CalendarCache())
    finally:
        await db.dispose()
    out: set[tuple[str, str, date | None]] = set()
    for upn, pupil in inputs.items():
        for a in engine.assess(pupil, policy, today, now):
            out |= {(upn, ep.key, ep.ended_on) for ep in a.episodes}
    return out


async def verify(urls: dict[str, str], bootstrap: str, rx: Receiver, expected: Expected) -> Report:
    report = Report()
    lost, dup, counts = report.lost, report.duplicated, report.counts

    # Marks: ingest, then rules' copy, against the generator.
    for name, sql in (
        ("marks in ingest", "SELECT school_urn, upn, date, session, code FROM marks"),
        ("marks in rules", "SELECT school_urn, upn, date, session, code FROM register"),
    ):
        rows = await _fetch(urls["ingest" if "ingest" in name else "rules"], sql)
        stored = Counter((r[0], r[1], r[2], r[3]) for r in rows)
        codes = {(r[0], r[1], r[2], r[3]): r[4] for r in rows}
        counts[name] = len(expected.marks)
        lost[name] = sum(1 for k, c in expected.marks.items() if codes.get(k) != c)
        dup[name] = sum(n - 1 for n in stored.values()) + sum(1 for k in stored if k not in expected.marks)

    # Episodes: recomputed from the final register.
    want = await _recomputed_episodes(urls["rules"], expected.today)
    rows = await _fetch(urls["rules"], "SELECT upn, key, ended_on FROM episodes")
    have = {(r[0], r[1], r[2]) for r in rows}
    counts["episodes"] = len(want)
    lost["episodes"] = len(want - have)
    dup["episodes"] = len(have - want) + (len(rows) - len(have))

    # Signals: recorded by rules, published on Kafka, no episode started twice in a row.
    rows = await _fetch(urls["rules"], SIGNALS)
    recorded = {r[0] for r in rows}
    on_kafka = await _signals_on_kafka(bootstrap)
    kafka_ids = {e["id"] for e in on_kafka}
    counts["signals"] = len(recorded)
    counts["signal events on Kafka (with redeliveries)"] = len(on_kafka)
    lost["signals"] = len(recorded - kafka_ids)
    # A duplicate effect is a signal repeating the one before it for the same episode: nothing
    # changed in between (an inbox message applied twice, a recompute whose diff was not stored).
    # A start after a start is fine when the episode changed (arrived ended, then re-opened).
    last: dict[tuple[str, str], tuple[str, bytes]] = {}
    twice = 0
    for r in rows:
        key = (r[2], r[3])
        content = (r[1], orjson.dumps(_json(r[5]), option=orjson.OPT_SORT_KEYS))
        if last.get(key) == content:
            twice += 1
        last[key] = content
    dup["signals"] = len(kafka_ids - recorded) + twice
    first_day = {(r[2], r[3], r[1]) for r in rows if r[1] in FIRST_DAY and r[4] == expected.today}
    starts = {(r[2], r[3]) for r in rows if not r[1].endswith("_ended")}
    lost["episodes"] += sum(1 for upn, key, _ in want if (upn, key) not in starts)

    # Alerts: one per first-day signal of today, each delivered at least once.
    rows = await _fetch(
        urls["notifications"],
        "SELECT id, upn, episode, signal, recipient, status FROM alerts WHERE status <> 'suppressed'",
    )
    alerts = Counter((r[1], r[2], r[3]) for r in rows if r[3] in FIRST_DAY)
    counts["first-day alerts (today's signals)"] = len(first_day)
    lost["first-day alerts (today's signals)"] = sum(1 for k in first_day if k not in alerts)
    dup["first-day alerts (today's signals)"] = sum(n - 1 for n in alerts.values()) + sum(
        1 for k in alerts if k not in first_day
    )
    counts["alerts raised (every signal, live)"] = len(rows)
    dup["alerts raised (every signal, live)"] = len(rows) - len({r[0] for r in rows})
    webhooks = await _fetch(
        urls["notifications"], "SELECT alert_id, status FROM deliveries WHERE channel = 'webhook'"
    )
    seen = Counter(rx.delivered_ids())
    live = {r[0] for r in rows}
    counts["webhook deliveries (after de-duplication)"] = len(set(seen) & live)
    counts["webhook requests answered (with redeliveries)"] = sum(seen.values())
    lost["webhook deliveries (after de-duplication)"] = sum(1 for r in webhooks if r[0] not in seen) + sum(
        1 for a in live if a not in {w[0] for w in webhooks}
    )
    dup["webhook deliveries (after de-duplication)"] = len(set(seen) - live)

    # Stuck: outboxes and the delivery queue.
    stuck = 0
    for u in urls.values():
        stuck += (await _fetch(u, "SELECT coalesce(sum(events), 0) FROM outbox"))[0][0]
    stuck += (
        await _fetch(urls["notifications"], "SELECT count(*) FROM deliveries WHERE status <> 'delivered'")
    )[0][0]
    counts["stuck in an outbox or the delivery queue"] = stuck
    lost["stuck in an outbox or the delivery queue"] = stuck
    return report
