"""Alerts: raised from signals and legal deadlines, queued for delivery, acknowledged, escalated.

Everything here runs inside the caller's transaction, and every change of an alert writes its
``rollcall.alerts.v1`` event to the outbox in that same transaction (durable first, then tell).

Decisions where SPEC/CONTRACT are silent:

* **One alert per (signal episode, recipient)**, its id ``uuid5(upn, episode, signal, recipient)``:
  a signal replayed, republished or re-raised for the same episode (an amendment that re-opens
  it) finds the alert already there and raises nothing. The id is the webhook's ``webhook-id``
  and the CloudEvent's ``id`` and ``subject``, so receivers de-duplicate by it.
* **Least data.** An alert carries the pupil's UPN and school URN, the signal, when, why this
  recipient, and ``evidence_url`` (the pupil's record at the rules service, or the case at the
  legal service): no names, dates of birth, codes or addresses. Deadline alerts add the case id,
  the deadline's kind and due date.
* **Backfills page nobody.** With the policy's ``first_day_alerts_current_day_only``, a
  ``first_day_absence`` or ``register_missing`` whose ``occurred_on`` is not this service's
  current school day (``Runtime.today()``) is stored with status ``suppressed``: routed and
  visible (``GET /v1/alerts?status=suppressed``) but never delivered, streamed, published or
  escalated. Its deterministic id keeps it suppressed if the signal comes again.
* **Statuses.** ``raised`` → ``delivered`` (the first channel target that answered 2xx) →
  ``acknowledged``; ``escalated``; ``suppressed``; ``withdrawn`` (the school corrected the mark:
  rules withdrew the first-day episode before anyone acknowledged it, so it no longer escalates;
  published as ``alert.withdrawn``, an addition to the contract's four types). An alert in any
  status may be acknowledged; acknowledging twice is a no-op.
* **Escalation is per episode and happens once.** A live first-day alert carries ``escalate_at``
  = raised + the policy's ``escalation_minutes``. Acknowledging *any* alert of the episode (the
  social worker, the Virtual School or the attendance officer has picked it up) clears it for
  all of them. When it passes with no acknowledgement, the scheduler raises one new alert to
  the School LA's SAST duty inbox (reason ``escalation``, ``escalated_from`` = the alert ids) and
  moves every unacknowledged alert of the episode to ``escalated`` (``alert.escalated`` each).
  The duty alert is never escalated itself. With no duty inbox configured the alerts are still
  marked escalated (``escalated_to`` empty) and a warning is logged.
* **Channels.** Each live alert queues one delivery per matching webhook subscription (the
  recipient's, plus every all-alerts subscription; ``types`` filters by signal) and one email
  when the recipient has an address and SMTP is configured. ``alert.delivered`` is published for
  each delivery that succeeds (its ``channel`` says which). A subscription gets the alerts raised
  after it was made (the others are in ``GET /v1/alerts``, the stream's replay and Kafka).
* **Legal deadlines** go to the recipient id named as the case's ``lead_officer``; an officer not
  (yet) registered here still gets the alert stored and published, just no webhook or email.
* **Routing reads this service's copy of the registry**, fed from rollcall.registry.v1 and
  applied before the signals of the same batch. A signal that overtakes its pupil's care status
  (possible only while catching up a backlog) is routed on what is known: the allocated social
  worker and the school's officer are still told; only the inboxes found through care status or
  an EHCP (Virtual School, Home LA teams, EHCP LA) could be missed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import orjson
import structlog
from prometheus_client import Counter
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.notifications import routing
from services.notifications import tables as t
from services.notifications.settings import NotificationSettings
from shared.db import upsert
from shared.events import CloudEvent, EventType, Topic, new_event
from shared.outbox import enqueue, outbox_records
from shared.policy import Policy

log = structlog.get_logger()
SOURCE = "/rollcall/notifications"
WEBHOOK_TYPE_PREFIX = "uk.rollcall.alert."
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:rollcall:alert")
LIVE = ("raised", "delivered")
STATUSES = ("raised", "delivered", "acknowledged", "escalated", "suppressed", "withdrawn")
DEADLINE_EVENT = "deadline.approaching"
_CHUNK = 500

RAISED = Counter("rollcall_alerts_raised_total", "Alerts raised", ["signal", "status"])
ESCALATED = Counter("rollcall_alerts_escalated_total", "Alerts escalated to the SAST duty inbox")


def alert_id(*parts: str) -> str:
    """The deterministic id of an alert (uuid5 of its identifying parts)."""
    return str(uuid.uuid5(NAMESPACE, "\x1f".join(parts)))


@dataclass(frozen=True, slots=True)
class Context:
    """What raising and escalating need from the service: settings, policy and the clock's readings."""

    settings: NotificationSettings
    policy: Policy
    now: dt.datetime
    today: dt.date

    @property
    def escalation_delay(self) -> dt.timedelta:
        seconds = self.settings.escalation_seconds
        return dt.timedelta(seconds=seconds if seconds is not None else self.policy.escalation_minutes * 60)


@dataclass
class Outcome:
    raised: int = 0  # live alerts (delivered to someone)
    suppressed: int = 0
    deliveries: int = 0
    events: int = 0
    escalated: int = 0


# --- event payloads ---------------------------------------------------------------------------


class SignalData(BaseModel):
    """The part of a ``signal.*`` event notifications reads (rules' ``_signal``)."""

    model_config = ConfigDict(extra="ignore")

    signal: str
    upn: str = Field(min_length=1, max_length=13)
    school_urn: str = Field(min_length=1, max_length=10)
    episode: str = Field(min_length=1, max_length=200)
    occurred_on: dt.date
    withdrawn: bool = False


class DeadlineData(BaseModel):
    """``deadline.approaching`` on ``rollcall.legal.v1``: a statutory deadline of a case is near."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    case_id: str = Field(validation_alias=AliasChoices("case_id", "case"), min_length=1, max_length=64)
    upn: str = Field(min_length=1, max_length=13)
    school_urn: str = Field(min_length=1, max_length=10)
    lead_officer: str = Field(min_length=1, max_length=100)
    kind: str = Field(validation_alias=AliasChoices("kind", "deadline_kind", "deadline"), max_length=60)
    due_on: dt.date = Field(validation_alias=AliasChoices("due_on", "due", "date", "due_date"))


# --- registry projection ----------------------------------------------------------------------


async def apply_registry(conn: AsyncConnection, events: Iterable[CloudEvent]) -> None:
    """Keep the registry facts routing needs: a pupil's home and EHCP LA, care flags, school LA."""
    pupils: dict[str, dict[str, Any]] = {}
    care: dict[str, dict[str, Any]] = {}
    schools: dict[str, dict[str, Any]] = {}
    for event in events:
        d = event.data
        try:
            if event.type == EventType.PUPIL_UPDATED:
                pupils[d["upn"]] = {
                    "upn": d["upn"],
                    "home_la_code": d["home_la_code"],
                    "sen": d["sen"],
                    "ehcp_la_code": d.get("ehcp_la_code"),
                }
            elif event.type == EventType.CARE_UPDATED:
                care[d["upn"]] = {"upn": d["upn"]} | {
                    k: bool(d[k]) for k in ("cin", "cp", "cla", "early_help", "etac")
                }
            elif event.type == EventType.SCHOOL_UPDATED:
                schools[d["urn"]] = {"urn": d["urn"], "la_code": d["la_code"]}
        except (KeyError, TypeError):
            log.error("registry_event_unreadable", event_type=event.type)
    await upsert(conn, t.pupils, list(pupils.values()), ["upn"])
    await upsert(conn, t.care, list(care.values()), ["upn"])
    await upsert(conn, t.schools, list(schools.values()), ["urn"])


# --- routing facts ----------------------------------------------------------------------------


async def load_directory(conn: AsyncConnection, our_la: str) -> routing.Directory:
    """The recipients routing looks up by LA: the inbox roles, and team inboxes (with an la_code)."""
    r = t.recipients.c
    rows = await conn.execute(
        select(r.id, r.role, r.la_code).where(
            or_(r.role.in_([role.value for role in routing.INBOX_ROLES]), r.la_code.is_not(None))
        )
    )
    return routing.Directory.of(our_la, (routing.Recipient(x.id, x.role, x.la_code) for x in rows))


async def _by_key(conn: AsyncConnection, table: Any, column: Any, keys: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    keys = sorted(set(keys))
    for start in range(0, len(keys), _CHUNK):
        for row in await conn.execute(select(table).where(column.in_(keys[start : start + _CHUNK]))):
            out[getattr(row, column.key)] = row
    return out


@dataclass
class Facts:
    """The registry facts and allocations for a batch of pupils and schools."""

    pupils: dict[str, Any] = field(default_factory=dict)
    care: dict[str, Any] = field(default_factory=dict)
    allocations: dict[str, Any] = field(default_factory=dict)
    schools: dict[str, Any] = field(default_factory=dict)
    officers: dict[str, Any] = field(default_factory=dict)

    @classmethod
    async def load(cls, conn: AsyncConnection, upns: Sequence[str], urns: Sequence[str]) -> Facts:
        return cls(
            pupils=await _by_key(conn, t.pupils, t.pupils.c.upn, upns),
            care=await _by_key(conn, t.care, t.care.c.upn, upns),
            allocations=await _by_key(conn, t.pupil_allocations, t.pupil_allocations.c.upn, upns),
            schools=await _by_key(conn, t.schools, t.schools.c.urn, urns),
            officers=await _by_key(conn, t.school_allocations, t.school_allocations.c.urn, urns),
        )

    def pupil(self, upn: str) -> routing.Pupil:
        p, c = self.pupils.get(upn), self.care.get(upn)
        return routing.Pupil(
            home_la=p.home_la_code if p else None,
            ehcp=bool(p and p.sen == "ehcp"),
            ehcp_la=p.ehcp_la_code if p else None,
            cin=bool(c and c.cin),
            cp=bool(c and c.cp),
            cla=bool(c and c.cla),
            early_help=bool(c and c.early_help),
        )

    def school_la(self, urn: str) -> str | None:
        s = self.schools.get(urn)
        return s.la_code if s else None


# --- bodies -----------------------------------------------------------------------------------


def aware(value: dt.datetime) -> dt.datetime:
    """A stored instant as an aware UTC datetime: SQLite hands back naive ones (stored as UTC)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _iso(value: dt.datetime | dt.date | None) -> str | None:
    if isinstance(value, dt.datetime):
        return aware(value).isoformat()
    return value.isoformat() if value is not None else None


def webhook_data(alert: dict[str, Any] | Row[Any]) -> dict[str, Any]:
    """The ``data`` of the webhook CloudEvent (CONTRACT "Webhook delivery"), plus the deadline or
    escalation it is about when there is one."""
    a = alert if isinstance(alert, dict) else alert._asdict()
    data: dict[str, Any] = {
        "alert_id": a["id"],
        "signal": a["signal"],
        "pupil": {"upn": a["upn"], "school_urn": a["school_urn"]},
        "raised_at": _iso(a["raised_at"]),
        "evidence_url": a["evidence_url"],
        "recipient": a["recipient"],
    }
    if a["detail"].get("deadline"):
        data["deadline"] = a["detail"]["deadline"]
    if a.get("escalated_from"):
        data["escalated_from"] = a["escalated_from"]
    return data


def webhook_body(alert: dict[str, Any]) -> bytes:
    """The webhook's body: one CloudEvents 1.0 JSON object, identical on every attempt."""
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": alert["id"],
            "source": SOURCE,
            "type": WEBHOOK_TYPE_PREFIX + alert["signal"],
            "time": _iso(alert["raised_at"]),
            "subject": alert["id"],
            "datacontenttype": "application/json",
            "data": webhook_data(alert),
        }
    )


def email_body(alert: dict[str, Any], to: str, sender: str) -> bytes:
    """A plain-text email with the same least data as the webhook and a stable Message-ID."""
    msg = EmailMessage()
    msg["Subject"] = f"Rollcall alert: {alert['signal']} (pupil {alert['upn']}, school {alert['school_urn']})"
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = format_datetime(alert["raised_at"])
    msg["Message-ID"] = f"<{alert['id']}@alerts.rollcall>"
    lines = [
        f"Alert {alert['id']}",
        f"Signal: {alert['signal']}",
        f"Pupil (UPN): {alert['upn']}",
        f"School (URN): {alert['school_urn']}",
        f"Raised: {_iso(alert['raised_at'])}",
        f"Full record: {alert['evidence_url']}",
    ]
    if deadline := alert["detail"].get("deadline"):
        lines.append(f"Deadline: {deadline['kind']} on {deadline['due_on']} (case {deadline['case_id']})")
    lines += ["", f"Acknowledge: POST /v1/alerts/{alert['id']}/ack"]
    msg.set_content("\n".join(lines) + "\n")
    return msg.as_bytes()


def alert_event(kind: str, alert: dict[str, Any] | Row[Any], **extra: Any) -> tuple[str, dict[str, Any]]:
    """An ``alert.<kind>`` CloudEvent for rollcall.alerts.v1, keyed by the pupil's UPN."""
    a = alert if isinstance(alert, dict) else alert._asdict()
    data = webhook_data(a) | {
        "reason": a["reason"],
        "episode": a["episode"],
        "occurred_on": _iso(a["occurred_on"]),
        **extra,
    }
    return a["upn"], new_event(f"alert.{kind}", SOURCE, data, subject=a["id"])


def evidence_url(settings: NotificationSettings, upn: str, school_urn: str) -> str:
    return f"{settings.rules_public_url.rstrip('/')}/v1/pupils/{upn}/attendance?school={school_urn}"


# --- raising ----------------------------------------------------------------------------------


def _candidate(
    ctx: Context,
    *,
    id_: str,
    signal: str,
    upn: str,
    school_urn: str,
    recipient: str,
    reason: str,
    episode: str,
    source_event: str,
    occurred_on: dt.date,
    evidence: str,
    detail: dict[str, Any] | None = None,
    escalated_from: list[str] | None = None,
) -> dict[str, Any]:
    first_day = signal in routing.FIRST_DAY_SIGNALS
    suppressed = (
        first_day
        and escalated_from is None
        and ctx.policy.first_day_alerts_current_day_only
        and occurred_on != ctx.today
    )
    escalates = first_day and not suppressed and escalated_from is None
    return {
        "id": id_,
        "signal": signal,
        "upn": upn,
        "school_urn": school_urn,
        "recipient": recipient,
        "reason": reason,
        "episode": episode,
        "source_event": source_event,
        "occurred_on": occurred_on,
        "raised_at": ctx.now,
        "status": "suppressed" if suppressed else "raised",
        "first_day": first_day,
        "evidence_url": evidence,
        "detail": detail or {},
        "escalate_at": ctx.now + ctx.escalation_delay if escalates else None,
        "escalated_at": None,
        "escalated_to": None,
        "escalated_from": escalated_from,
        "delivered_at": None,
        "acknowledged_at": None,
        "acknowledged_by": None,
        "acknowledged_via": None,
        "withdrawn_at": None,
    }


async def _store(conn: AsyncConnection, ctx: Context, candidates: list[dict[str, Any]]) -> Outcome:
    """Insert the alerts not stored before; queue deliveries and publish ``alert.raised`` for live ones."""
    outcome = Outcome()
    unique = {c["id"]: c for c in candidates}
    if not unique:
        return outcome
    existing = set(await _by_key(conn, t.alerts, t.alerts.c.id, list(unique)))
    new = [c for i, c in unique.items() if i not in existing]
    if not new:
        return outcome
    await conn.execute(t.alerts.insert(), new)
    live = [c for c in new if c["status"] != "suppressed"]
    for c in new:
        RAISED.labels(c["signal"], c["status"]).inc()
    outcome.suppressed = len(new) - len(live)
    outcome.raised = len(live)
    if not live:
        return outcome
    outcome.deliveries = await _queue_deliveries(conn, ctx, live)
    events = [alert_event("raised", c, status="raised") for c in live]
    await enqueue(conn, t.outbox, outbox_records(Topic.ALERTS, events))
    outcome.events = len(events)
    return outcome


async def _queue_deliveries(conn: AsyncConnection, ctx: Context, alerts: list[dict[str, Any]]) -> int:
    s = t.subscriptions.c
    wanted = sorted({a["recipient"] for a in alerts})
    subs = (
        await conn.execute(select(t.subscriptions).where(or_(s.recipient.is_(None), s.recipient.in_(wanted))))
    ).all()
    emails: dict[str, str] = {}
    if ctx.settings.smtp_host:
        r = t.recipients.c
        rows = await conn.execute(select(r.id, r.email).where(r.id.in_(wanted), r.email.is_not(None)))
        emails = {x.id: x.email for x in rows}
    rows_out: list[dict[str, Any]] = []
    for a in alerts:
        body: bytes | None = None
        for sub in subs:
            if sub.recipient not in (None, a["recipient"]):
                continue
            if sub.types is not None and a["signal"] not in sub.types:
                continue
            body = body or webhook_body(a)
            rows_out.append(_delivery(ctx, a["id"], "webhook", sub.id, sub.url, body))
        if a["recipient"] in emails:
            address = emails[a["recipient"]]
            payload = email_body(a, address, ctx.settings.smtp_from)
            rows_out.append(_delivery(ctx, a["id"], "email", a["recipient"], address, payload))
    if rows_out:
        await conn.execute(t.deliveries.insert(), rows_out)
    return len(rows_out)


def _delivery(
    ctx: Context, alert: str, channel: str, target: str, address: str, payload: bytes
) -> dict[str, Any]:
    return {
        "alert_id": alert,
        "channel": channel,
        "target": target,
        "address": address,
        "payload": payload,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": ctx.now,
        "created_at": ctx.now,
        "delivered_at": None,
        "last_status": None,
        "last_error": None,
    }


async def handle_events(conn: AsyncConnection, ctx: Context, events: list[CloudEvent]) -> Outcome:
    """Apply one consumed batch: registry facts first, then signals, withdrawals and deadlines."""
    await apply_registry(conn, events)
    signals: list[tuple[CloudEvent, SignalData]] = []
    withdrawals: list[SignalData] = []
    deadlines: list[tuple[CloudEvent, DeadlineData]] = []
    for event in events:
        try:
            if event.type.startswith("signal."):
                data = SignalData.model_validate(event.data)
                if data.signal in routing.ROUTES:
                    signals.append((event, data))
                elif data.withdrawn and data.signal.removesuffix("_ended") in routing.FIRST_DAY_SIGNALS:
                    withdrawals.append(data)
            elif event.type == DEADLINE_EVENT:
                deadlines.append((event, DeadlineData.model_validate(event.data)))
        except ValidationError as exc:
            # A malformed event must not stall the partition: log it (no data) and move on.
            log.error("event_unreadable", event_type=event.type, errors=exc.error_count())
    outcome = Outcome()
    if signals:
        outcome = await _raise_for_signals(conn, ctx, signals)
    if deadlines:
        more = await _raise_for_deadlines(conn, ctx, deadlines)
        outcome.raised += more.raised
        outcome.deliveries += more.deliveries
        outcome.events += more.events
    if withdrawals:
        outcome.events += await _withdraw(conn, ctx, withdrawals)
    return outcome


async def _raise_for_signals(
    conn: AsyncConnection, ctx: Context, signals: list[tuple[CloudEvent, SignalData]]
) -> Outcome:
    facts = await Facts.load(conn, [d.upn for _, d in signals], [d.school_urn for _, d in signals])
    directory = await load_directory(conn, ctx.policy.la_code)
    candidates: list[dict[str, Any]] = []
    for event, d in signals:
        allocation = facts.allocations.get(d.upn)
        officer = facts.officers.get(d.school_urn)
        routes = routing.route_signal(
            d.signal,
            facts.pupil(d.upn),
            facts.school_la(d.school_urn),
            allocation.social_worker if allocation else None,
            allocation.early_help if allocation else None,
            officer.attendance_officer if officer else None,
            directory,
        )
        if not routes:
            log.info("signal_unrouted", signal=d.signal)
        for route in routes:
            candidates.append(
                _candidate(
                    ctx,
                    id_=alert_id(d.upn, d.episode, d.signal, route.recipient),
                    signal=d.signal,
                    upn=d.upn,
                    school_urn=d.school_urn,
                    recipient=route.recipient,
                    reason=route.reason.value,
                    episode=d.episode,
                    source_event=event.id,
                    occurred_on=d.occurred_on,
                    evidence=evidence_url(ctx.settings, d.upn, d.school_urn),
                )
            )
    return await _store(conn, ctx, candidates)


async def _raise_for_deadlines(
    conn: AsyncConnection, ctx: Context, deadlines: list[tuple[CloudEvent, DeadlineData]]
) -> Outcome:
    candidates = []
    base = ctx.settings.legal_public_url.rstrip("/")
    for event, d in deadlines:
        episode = f"deadline:{d.case_id}:{d.kind}:{d.due_on.isoformat()}"
        deadline = {"case_id": d.case_id, "kind": d.kind, "due_on": d.due_on.isoformat()}
        candidates.append(
            _candidate(
                ctx,
                id_=alert_id(d.upn, episode, routing.DEADLINE_SIGNAL, d.lead_officer),
                signal=routing.DEADLINE_SIGNAL,
                upn=d.upn,
                school_urn=d.school_urn,
                recipient=d.lead_officer,
                reason=routing.Reason.LEAD_OFFICER.value,
                episode=episode,
                source_event=event.id,
                occurred_on=ctx.today,
                evidence=f"{base}/v1/cases/{d.case_id}",
                detail={"deadline": deadline},
            )
        )
    return await _store(conn, ctx, candidates)


async def _withdraw(conn: AsyncConnection, ctx: Context, withdrawals: list[SignalData]) -> int:
    """The school corrected the mark: unacknowledged alerts of the episode stop (no escalation)."""
    a = t.alerts.c
    events = []
    for d in withdrawals:
        signal = d.signal.removesuffix("_ended")
        where = and_(a.upn == d.upn, a.episode == d.episode, a.signal == signal, a.status.in_(LIVE))
        rows = (await conn.execute(select(t.alerts).where(where))).all()
        if not rows:
            continue
        await conn.execute(
            update(t.alerts).where(where).values(status="withdrawn", withdrawn_at=ctx.now, escalate_at=None)
        )
        events += [
            alert_event("withdrawn", r, status="withdrawn", withdrawn_at=ctx.now.isoformat()) for r in rows
        ]
    await enqueue(conn, t.outbox, outbox_records(Topic.ALERTS, events))
    return len(events)


# --- acknowledging and escalating -------------------------------------------------------------


async def acknowledge(conn: AsyncConnection, row: Row[Any], by: str, via: str, now: dt.datetime) -> bool:
    """Acknowledge an alert (``row``, read for update); stops its episode's escalation.

    Returns False when it was already acknowledged (nothing changes, no second event).
    """
    if row.status == "acknowledged":
        return False
    a = t.alerts.c
    await conn.execute(
        update(t.alerts)
        .where(a.id == row.id)
        .values(
            status="acknowledged",
            acknowledged_at=now,
            acknowledged_by=by,
            acknowledged_via=via,
            escalate_at=None,
        )
    )
    await conn.execute(
        update(t.alerts)
        .where(a.upn == row.upn, a.episode == row.episode, a.signal == row.signal, a.escalate_at.is_not(None))
        .values(escalate_at=None)
    )
    event = alert_event("acknowledged", row, status="acknowledged", by=by, acknowledged_at=now.isoformat())
    await enqueue(conn, t.outbox, outbox_records(Topic.ALERTS, [event]))
    return True


async def next_escalation(conn: AsyncConnection) -> dt.datetime | None:
    """When the earliest pending escalation falls due (None: nothing is waiting)."""
    a = t.alerts.c
    q = (
        select(a.escalate_at)
        .where(a.escalate_at.is_not(None), a.status.in_(LIVE))
        .order_by(a.escalate_at)
        .limit(1)
    )
    value = (await conn.execute(q)).scalar()
    return aware(value) if isinstance(value, dt.datetime) else None


async def escalate_due(conn: AsyncConnection, ctx: Context, limit: int = 500) -> Outcome:
    """Escalate every episode whose first-day alerts passed ``escalate_at`` unacknowledged."""
    a = t.alerts.c
    q = (
        select(t.alerts)
        .where(a.escalate_at.is_not(None), a.escalate_at <= ctx.now, a.status.in_(LIVE))
        .order_by(a.seq)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    due = (await conn.execute(q)).all()
    outcome = Outcome()
    if not due:
        return outcome
    episodes: dict[tuple[str, str, str], list[Row[Any]]] = defaultdict(list)
    for row in due:
        episodes[(row.upn, row.episode, row.signal)].append(row)
    facts = await Facts.load(conn, [], sorted({r.school_urn for r in due}))
    directory = await load_directory(conn, ctx.policy.la_code)
    candidates: list[dict[str, Any]] = []
    events = []
    for (upn, episode, signal), rows in episodes.items():
        first = rows[0]
        # Every alert of the episode, not just the due ones: an acknowledged one means it is handled.
        all_rows = (
            await conn.execute(select(t.alerts).where(a.upn == upn, a.episode == episode, a.signal == signal))
        ).all()
        if any(r.status == "acknowledged" for r in all_rows):
            await conn.execute(
                update(t.alerts).where(a.id.in_([r.id for r in rows])).values(escalate_at=None)
            )
            continue
        targets = routing.escalation_targets(facts.school_la(first.school_urn), directory)
        if not targets:
            log.warning("no_sast_duty_recipient", school_la=facts.school_la(first.school_urn))
        from_ids = sorted(r.id for r in rows)
        duty_ids = []
        for target in targets:
            duty_id = alert_id(upn, episode, signal, target, "escalation")
            duty_ids.append(duty_id)
            candidates.append(
                _candidate(
                    ctx,
                    id_=duty_id,
                    signal=signal,
                    upn=upn,
                    school_urn=first.school_urn,
                    recipient=target,
                    reason=routing.Reason.ESCALATION.value,
                    episode=episode,
                    source_event=first.source_event,
                    occurred_on=first.occurred_on,
                    evidence=first.evidence_url,
                    escalated_from=from_ids,
                )
            )
        await conn.execute(
            update(t.alerts)
            .where(a.id.in_(from_ids))
            .values(status="escalated", escalated_at=ctx.now, escalated_to=duty_ids, escalate_at=None)
        )
        for r in rows:
            events.append(
                alert_event(
                    "escalated",
                    r,
                    status="escalated",
                    escalated_at=ctx.now.isoformat(),
                    escalated_to=duty_ids,
                    escalated_to_recipients=targets,
                )
            )
        outcome.escalated += 1
        ESCALATED.inc()
    stored = await _store(conn, ctx, candidates)
    await enqueue(conn, t.outbox, outbox_records(Topic.ALERTS, events))
    stored.escalated = outcome.escalated
    stored.events += len(events)
    return stored
