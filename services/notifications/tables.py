"""The notifications service's tables: the directory (recipients, allocations), its copy of the
registry facts routing needs (fed from Kafka), subscriptions, alerts, the delivery queue, and
its inbox and outbox.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

from shared.audit import audit_tables
from shared.inbox import inbox_table
from shared.outbox import outbox_table

metadata = MetaData()


def _seq() -> Column[int]:
    # BIGINT on PostgreSQL; INTEGER PRIMARY KEY (the rowid, autoincrementing) on SQLite.
    return Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True)


recipients = Table(
    "recipients",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("role", String(30), nullable=False),
    Column("email", String(320)),
    Column("la_code", String(3)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_recipients_role", recipients.c.role, recipients.c.la_code)

pupil_allocations = Table(
    "pupil_allocations",
    metadata,
    Column("upn", String(13), primary_key=True),
    Column("social_worker", String(100)),
    Column("early_help", String(100)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

school_allocations = Table(
    "school_allocations",
    metadata,
    Column("urn", String(10), primary_key=True),
    Column("attendance_officer", String(100), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Registry facts from rollcall.registry.v1: only what routing needs (no names, no dates of birth).
pupils = Table(
    "pupils",
    metadata,
    Column("upn", String(13), primary_key=True),
    Column("home_la_code", String(3), nullable=False),
    Column("sen", String(10), nullable=False),
    Column("ehcp_la_code", String(3)),
)

care = Table(
    "care",
    metadata,
    Column("upn", String(13), primary_key=True),
    Column("cin", Boolean, nullable=False),
    Column("cp", Boolean, nullable=False),
    Column("cla", Boolean, nullable=False),
    Column("early_help", Boolean, nullable=False),
    Column("etac", Boolean, nullable=False),
)

schools = Table(
    "schools",
    metadata,
    Column("urn", String(10), primary_key=True),
    Column("la_code", String(3), nullable=False),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("url", String(2000), nullable=False),
    Column("secret", String(200), nullable=False),
    Column("recipient", String(100)),  # None: every alert (admin only)
    Column("types", JSON),  # None: every signal
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Index("ix_subscriptions_recipient", subscriptions.c.recipient)

alerts = Table(
    "alerts",
    metadata,
    _seq(),
    Column("id", String(36), nullable=False, unique=True),
    Column("signal", String(60), nullable=False),
    Column("upn", String(13), nullable=False),
    Column("school_urn", String(10), nullable=False),
    Column("recipient", String(100), nullable=False),
    Column("reason", String(40), nullable=False),
    Column("episode", String(200), nullable=False),
    Column("source_event", String(64), nullable=False),
    Column("occurred_on", Date, nullable=False),
    Column("raised_at", DateTime(timezone=True), nullable=False),
    Column("status", String(15), nullable=False),
    Column("first_day", Boolean, nullable=False),
    Column("evidence_url", String(500), nullable=False),
    Column("detail", JSON, nullable=False),
    Column("escalate_at", DateTime(timezone=True)),
    Column("escalated_at", DateTime(timezone=True)),
    Column("escalated_to", JSON),  # ids of the duty alerts this one was escalated to
    Column("escalated_from", JSON),  # on a duty alert: the alerts it escalates
    Column("delivered_at", DateTime(timezone=True)),
    Column("acknowledged_at", DateTime(timezone=True)),
    Column("acknowledged_by", String(200)),
    Column("acknowledged_via", String(200)),  # the token's sub
    Column("withdrawn_at", DateTime(timezone=True)),
)
Index("ix_alerts_recipient", alerts.c.recipient, alerts.c.seq)
Index("ix_alerts_episode", alerts.c.upn, alerts.c.episode)
Index("ix_alerts_escalate_at", alerts.c.escalate_at)
Index("ix_alerts_status", alerts.c.status)

# The delivery queue: one row per alert × channel target, worked with backoff, dead-lettered.
deliveries = Table(
    "deliveries",
    metadata,
    _seq(),
    Column("alert_id", String(36), nullable=False),
    Column("channel", String(10), nullable=False),  # webhook | email
    Column("target", String(100), nullable=False),  # subscription id | recipient id
    Column("address", String(2000), nullable=False),  # the URL or email address, as queued
    Column("payload", LargeBinary, nullable=False),  # the exact body sent on every attempt
    Column("status", String(10), nullable=False),  # pending | delivered | dead
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True)),
    Column("last_status", Integer),
    Column("last_error", String(200)),
    UniqueConstraint("alert_id", "channel", "target", name="uq_deliveries_alert_target"),
)
Index("ix_deliveries_due", deliveries.c.status, deliveries.c.next_attempt_at)

inbox = inbox_table(metadata)
outbox = outbox_table(metadata)
audit = audit_tables(metadata)
