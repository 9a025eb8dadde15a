"""The delivery queue's worker: signed webhooks and email, retried with exponential backoff.

Each row of ``deliveries`` (one per alert × channel target) is *claimed* by setting its
``next_attempt_at`` a lease ahead (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several
processes can share the queue; up to ``delivery_concurrency`` attempts in flight), attempted,
and its outcome recorded (many to a transaction when they finish together): ``delivered``, or
retried after ``retry_base × 2^(attempts-1)`` seconds (at most ``retry_max`` apart, less up to
20 % jitter so a recovered receiver is not hit by every retry at once), or ``dead`` once the next
attempt would fall more than ``dead_letter_seconds`` (24 h) after the row was queued. A process
killed mid-attempt loses nothing: the lease runs out and the row is attempted again (at least
once; receivers de-duplicate by ``webhook-id``). Dead rows stay visible
(``GET /v1/deliveries?status=dead``) and can be queued again (``POST /v1/deliveries/{id}/retry``).

Webhooks: ``POST`` of the stored CloudEvent with the Standard Webhooks headers, signed afresh on
each attempt (``webhook-timestamp`` is the wall clock, which is what receivers check freshness
against, while alert times follow the service clock). ``Content-Type`` is
``application/cloudevents+json`` (CloudEvents HTTP binding, structured mode); any 2xx is success,
redirects are not followed. Email: the stored message, sent through the configured SMTP server
with the standard library's ``smtplib`` in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import smtplib
import ssl
import time
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifications import signing
from services.notifications import tables as t
from services.notifications.alerts import alert_event, aware
from services.notifications.settings import NotificationSettings
from shared.events import Topic
from shared.observability import error_fields
from shared.outbox import enqueue, outbox_records

log = structlog.get_logger()
ATTEMPTS = Counter("rollcall_deliveries_attempted_total", "Delivery attempts", ["channel", "outcome"])
DURATION = Histogram(
    "rollcall_delivery_seconds",
    "Delivery attempt duration",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
USER_AGENT = "Rollcall-Webhooks/1.0"


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: base × 2^(attempts-1), at most cap."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


@dataclass(frozen=True, slots=True)
class Claimed:
    seq: int
    alert_id: str
    channel: str
    target: str
    address: str
    payload: bytes
    attempts: int
    created_at: dt.datetime
    url: str | None
    secret: str | None


@dataclass(frozen=True, slots=True)
class Result:
    ok: bool
    status: int | None = None
    error: str | None = None
    permanent: bool = False  # no point retrying (the subscription is gone)


class Deliverer:
    """Works the delivery queue; ``wake()`` after queueing rows for low latency, it also polls."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: NotificationSettings,
        clock: Any,
        on_delivered: Any = lambda: None,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._on_delivered = on_delivered
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._results: asyncio.Queue[tuple[Claimed, Result]] = asyncio.Queue()
        self._lease = dt.timedelta(seconds=settings.delivery_timeout_seconds + 5)
        self._http = httpx.AsyncClient(
            timeout=settings.delivery_timeout_seconds,
            follow_redirects=False,
            headers={"user-agent": USER_AGENT},
            limits=httpx.Limits(max_connections=settings.delivery_concurrency),
        )

    def wake(self) -> None:
        self._wake.set()

    def now(self) -> dt.datetime:
        value: dt.datetime = self._clock()
        return value.astimezone(dt.UTC)

    async def run(self) -> None:
        recorder = asyncio.create_task(self._recorder())
        try:
            while True:
                self._wake.clear()
                free = self._settings.delivery_concurrency - len(self._inflight)
                if self._inflight and free < max(1, self._settings.delivery_concurrency // 4):
                    # Busy: claim again once a quarter of the slots are free, not one row at a time.
                    await asyncio.wait(
                        list(self._inflight),
                        timeout=self._settings.delivery_poll_seconds,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    continue
                claimed: list[Claimed] = []
                try:
                    claimed = await self.claim(free)
                except Exception as exc:  # noqa: BLE001 - the database may be busy: retry soon
                    log.warning("delivery_claim_retry", **error_fields(exc))
                    await asyncio.sleep(self._settings.delivery_poll_seconds)
                    continue
                for row in claimed:
                    task = asyncio.create_task(self._attempt(row))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
                if len(claimed) == free:
                    continue  # there may be more due right now
                woken = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait([woken], timeout=self._settings.delivery_poll_seconds)
                woken.cancel()
        finally:
            for task in list(self._inflight):
                task.cancel()
            recorder.cancel()
            # What was attempted but not yet recorded is recorded now, so a clean stop does not
            # send it again (a crash would: at least once).
            left = []
            while not self._results.empty():
                left.append(self._results.get_nowait())
            if left:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.record(left), 5)
            await self._http.aclose()

    async def claim(self, limit: int) -> list[Claimed]:
        """Lease up to ``limit`` due rows to this process."""
        d, s = t.deliveries.c, t.subscriptions.c
        now = self.now()
        async with self._engine.begin() as conn:
            q = (
                select(
                    d.seq,
                    d.alert_id,
                    d.channel,
                    d.target,
                    d.address,
                    d.payload,
                    d.attempts,
                    d.created_at,
                    s.url,
                    s.secret,
                )
                .select_from(
                    t.deliveries.outerjoin(t.subscriptions, (d.channel == "webhook") & (s.id == d.target))
                )
                .where(d.status == "pending", d.next_attempt_at <= now)
                .order_by(d.next_attempt_at, d.seq)
                .limit(limit)
            )
            if conn.dialect.name == "postgresql":
                q = q.with_for_update(of=t.deliveries, skip_locked=True)
            rows = (await conn.execute(q)).all()
            if rows:
                await conn.execute(
                    update(t.deliveries)
                    .where(d.seq.in_([r.seq for r in rows]))
                    .values(next_attempt_at=now + self._lease)
                )
        return [
            Claimed(
                r.seq,
                r.alert_id,
                r.channel,
                r.target,
                r.address,
                r.payload,
                r.attempts,
                aware(r.created_at),
                r.url,
                r.secret,
            )
            for r in rows
        ]

    async def _attempt(self, row: Claimed) -> None:
        started = time.perf_counter()
        try:
            result = await (self._webhook(row) if row.channel == "webhook" else self._email(row))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of one attempt is retried
            result = Result(False, error=type(exc).__name__)
        DURATION.labels(row.channel).observe(time.perf_counter() - started)
        ATTEMPTS.labels(row.channel, "ok" if result.ok else "failed").inc()
        self._results.put_nowait((row, result))

    async def _webhook(self, row: Claimed) -> Result:
        if row.url is None or row.secret is None:
            return Result(False, error="subscription deleted", permanent=True)
        key = signing.secret_key(row.secret)
        headers = signing.headers(key, row.alert_id, int(time.time()), row.payload)
        headers["content-type"] = "application/cloudevents+json; charset=utf-8"
        try:
            response = await self._http.post(row.url, content=row.payload, headers=headers)
        except httpx.HTTPError as exc:
            return Result(False, error=type(exc).__name__)
        if 200 <= response.status_code < 300:
            return Result(True, status=response.status_code)
        return Result(False, status=response.status_code, error=f"HTTP {response.status_code}")

    async def _email(self, row: Claimed) -> Result:
        s = self._settings
        if not s.smtp_host:
            return Result(False, error="SMTP not configured")
        host = s.smtp_host
        password = s.smtp_password.get_secret_value() if s.smtp_password else None

        def send() -> None:
            with smtplib.SMTP(host, s.smtp_port, timeout=s.delivery_timeout_seconds) as smtp:
                if s.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if s.smtp_username and password is not None:
                    smtp.login(s.smtp_username, password)
                smtp.sendmail(s.smtp_from, [row.address], row.payload)

        try:
            await asyncio.to_thread(send)
        except (smtplib.SMTPException, OSError) as exc:
            return Result(False, error=type(exc).__name__)
        return Result(True, status=250)

    async def record(self, outcomes: list[tuple[Claimed, Result]]) -> None:
        """Store a batch of attempts' outcomes in one transaction: a success moves its alert to
        ``delivered`` and publishes ``alert.delivered``; a failure schedules the next attempt or
        dead-letters the row."""
        d, a = t.deliveries.c, t.alerts.c
        s = self._settings
        now = self.now()
        ok = [(row, result) for row, result in outcomes if result.ok]
        failed = [(row, result) for row, result in outcomes if not result.ok]
        async with self._engine.begin() as conn:
            if ok:
                await conn.execute(
                    update(t.deliveries)
                    .where(d.seq == bindparam("b_seq"))
                    .values(
                        status="delivered",
                        delivered_at=now,
                        attempts=bindparam("b_attempts"),
                        last_status=bindparam("b_status"),
                        last_error=None,
                    ),
                    [{"b_seq": r.seq, "b_attempts": r.attempts + 1, "b_status": res.status} for r, res in ok],
                )
                ids = sorted({row.alert_id for row, _ in ok})
                await conn.execute(
                    update(t.alerts).where(a.id.in_(ids), a.delivered_at.is_(None)).values(delivered_at=now)
                )
                await conn.execute(
                    update(t.alerts).where(a.id.in_(ids), a.status == "raised").values(status="delivered")
                )
                alerts = {x.id: x for x in await conn.execute(select(t.alerts).where(a.id.in_(ids)))}
                events = [
                    alert_event(
                        "delivered",
                        alerts[row.alert_id],
                        status=alerts[row.alert_id].status,
                        channel=row.channel,
                        delivery_id=row.seq,
                        attempts=row.attempts + 1,
                        delivered_at=now.isoformat(),
                    )
                    for row, _ in ok
                    if row.alert_id in alerts
                ]
                await enqueue(conn, t.outbox, outbox_records(Topic.ALERTS, events))
            if failed:
                params = []
                for row, result in failed:
                    attempts = row.attempts + 1
                    delay = backoff(attempts, s.retry_base_seconds, s.retry_max_seconds)
                    next_at = now + dt.timedelta(seconds=delay * random.uniform(0.8, 1.0))
                    give_up = row.created_at + dt.timedelta(seconds=s.dead_letter_seconds)
                    dead = result.permanent or next_at > give_up
                    if dead:
                        log.warning("delivery_dead_lettered", channel=row.channel, delivery=row.seq,
                                    error=result.error)  # fmt: skip
                    params.append(
                        {
                            "b_seq": row.seq,
                            "b_state": "dead" if dead else "pending",
                            "b_attempts": attempts,
                            "b_next": next_at,
                            "b_status": result.status,
                            "b_error": (result.error or "failed")[:200],
                        }
                    )
                await conn.execute(
                    update(t.deliveries)
                    .where(d.seq == bindparam("b_seq"))
                    .values(
                        status=bindparam("b_state"),
                        attempts=bindparam("b_attempts"),
                        next_attempt_at=bindparam("b_next"),
                        last_status=bindparam("b_status"),
                        last_error=bindparam("b_error"),
                    ),
                    params,
                )
        if ok:
            self._on_delivered()

    async def _recorder(self) -> None:
        """Record outcomes as they come, many to a transaction when attempts finish together."""
        while True:
            batch = [await self._results.get()]
            while len(batch) < 500 and not self._results.empty():
                batch.append(self._results.get_nowait())
            await self._record_retrying(batch)

    async def _record_retrying(self, batch: list[tuple[Claimed, Result]]) -> None:
        for delay in (0.2, 0.5, 1.0, 2.0, 5.0, None):
            try:
                await self.record(batch)
                return
            except Exception as exc:  # noqa: BLE001 - the database may be busy; retry
                if delay is None:
                    # The rows stay leased to no one: they are attempted again when the lease ends.
                    log.error("delivery_record_failed", **error_fields(exc), rows=len(batch))
                    return
                log.warning("delivery_record_retry", **error_fields(exc))
                await asyncio.sleep(delay)
