"""The legal service's tables: its copy of the registry and register (fed from Kafka), the signals
and offences it has seen, the cases with their parents, history, notices, payments, records,
evidence snapshots and deadlines, and its inbox and outbox.

The register is kept for every pupil (not only those with a case) because a case opens *after*
the absences that caused it: the evidence pack needs the register of the offence period, present
sessions included, as it stood when the marks arrived.
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
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from shared.audit import audit_tables
from shared.directory import directory_tables
from shared.inbox import inbox_table
from shared.outbox import outbox_table

metadata = MetaData()

_SEQ = BigInteger().with_variant(Integer(), "sqlite")

schools = Table(
    "schools",
    metadata,
    Column("urn", String(10), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("la_code", String(3), nullable=False),
    Column("phase", String(30), nullable=False),
    Column("type", String(30), nullable=False),
)

calendars = Table(
    "calendars",
    metadata,
    Column("school_urn", String(10), primary_key=True),
    Column("year", String(7), primary_key=True),
    Column("terms", JSON, nullable=False),
    Column("closed", JSON, nullable=False),
)

pupils = Table(
    "pupils",
    metadata,
    Column("upn", String(13), primary_key=True),
    Column("date_of_birth", Date, nullable=False),
    Column("home_la_code", String(3), nullable=False),
    Column("ehcp_la_code", String(3)),
    Column("parent_ids", JSON, nullable=False),
)

enrolments = Table(
    "enrolments",
    metadata,
    Column("upn", String(13), primary_key=True),
    Column("school_urn", String(10), primary_key=True),
    Column("admission_date", Date, nullable=False),
    Column("leaving_date", Date),
)

care = Table(
    "care",
    metadata,
    Column("upn", String(13), primary_key=True),
    Column("cla", Boolean, nullable=False),
)

register = Table(
    "register",
    metadata,
    Column("upn", String(13), primary_key=True),
    Column("school_urn", String(10), primary_key=True),
    Column("date", Date, primary_key=True),
    Column("session", String(2), primary_key=True),
    Column("code", String(3), nullable=False),
    Column("category", String(16), nullable=False),
)

# Every signal received, for the evidence pack ("signals raised").
signals = Table(
    "signals",
    metadata,
    Column("id", String(64), primary_key=True),  # the CloudEvent id
    Column("type", String(60), nullable=False),
    Column("upn", String(13), nullable=False),
    Column("school_urn", String(10), nullable=False),
    Column("episode", String(120), nullable=False),
    Column("occurred_on", Date, nullable=False),
    Column("withdrawn", Boolean, nullable=False),
    Column("detail", JSON, nullable=False),
    Column("evidence", JSON, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)
Index("ix_signals_upn", signals.c.upn, signals.c.occurred_on)

# Periods in which the pupil met the penalty threshold (source "signal") or the LA recorded an
# offence (source "la"): what penalty notices and prosecutions rest on.
offences = Table(
    "offences",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("upn", String(13), nullable=False),
    Column("school_urn", String(10), nullable=False),
    Column("source", String(10), nullable=False),
    Column("episode", String(120)),
    Column("met_on", Date, nullable=False),
    Column("period_from", Date, nullable=False),
    Column("period_to", Date, nullable=False),
    Column("sessions", Integer, nullable=False),
    Column("holiday_sessions", Integer, nullable=False),
    Column("first_absence", Date),
    Column("last_absence", Date),
    Column("evidence", JSON, nullable=False),
    Column("withdrawn", Boolean, nullable=False),
    Column("ended_on", Date),
    Column("reason", Text),
    Column("recorded_by", String(200), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("upn", "episode", name="uq_offences_episode"),
)
Index("ix_offences_upn", offences.c.upn)

cases = Table(
    "cases",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("upn", String(13), nullable=False),
    Column("school_urn", String(10), nullable=False),
    Column("state", String(40), nullable=False),
    Column("open", Boolean, nullable=False),
    Column("opened_on", Date, nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("opened_by", String(200), nullable=False),
    Column("trigger", String(60), nullable=False),
    Column("lead_officer", String(200)),
    Column("closed_on", Date),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_cases_upn", cases.c.upn)
Index("ix_cases_school_state", cases.c.school_urn, cases.c.state)

parents = Table(
    "parents",
    metadata,
    Column("case_id", String(36), primary_key=True),
    Column("parent_id", String(100), primary_key=True),
    Column("name", String(200), nullable=False),
)

# Who did what, when, why and under which rule: moves, notices, payments, records, signals.
history = Table(
    "history",
    metadata,
    Column("seq", _SEQ, primary_key=True, autoincrement=True),
    Column("case_id", String(36), nullable=False),
    Column("kind", String(30), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("effective_on", Date, nullable=False),
    Column("by", String(200), nullable=False),
    Column("from_state", String(40)),
    Column("to_state", String(40)),
    Column("reason", Text, nullable=False),
    Column("rule", String(60)),
    Column("authority", Text),
    Column("data", JSON, nullable=False),
)
Index("ix_history_case", history.c.case_id, history.c.seq)

penalty_notices = Table(
    "penalty_notices",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("case_id", String(36), nullable=False),
    Column("upn", String(13), nullable=False),
    Column("school_urn", String(10), nullable=False),
    Column("parent_id", String(100), nullable=False),
    Column("offence_id", String(36)),
    Column("issuer_la", String(3), nullable=False),
    Column("issued_on", Date, nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("amount_day_21", Integer, nullable=False),
    Column("amount_day_28", Integer, nullable=False),
    Column("pay_reduced_by", Date),
    Column("pay_by", Date, nullable=False),
    Column("status", String(20), nullable=False),
    Column("paid_on", Date),
    Column("withdrawn_on", Date),
    Column("withdrawn_reason", Text),
    Column("prosecuted_on", Date),
    Column("issued_by", String(200), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
)
Index("ix_penalty_notices_pupil_parent", penalty_notices.c.upn, penalty_notices.c.parent_id)
Index("ix_penalty_notices_case", penalty_notices.c.case_id)

payments = Table(
    "payments",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("notice_id", String(36), nullable=False),
    Column("paid_on", Date, nullable=False),
    Column("amount_pence", Integer, nullable=False),
    Column("recorded_by", String(200), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)
Index("ix_payments_notice", payments.c.notice_id)

# Evidence an officer records: support offered/declined, contract non-compliance, defences,
# convictions, ESO breaches and extensions, notes.
records = Table(
    "records",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("case_id", String(36), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("on", Date, nullable=False),
    Column("text", Text, nullable=False),
    Column("data", JSON, nullable=False),
    Column("recorded_by", String(200), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)
Index("ix_records_case", records.c.case_id)

# The register of the offence period frozen when a notice is issued or a prosecution begins:
# what the decision rested on, even if the school amends marks later.
evidence_snapshots = Table(
    "evidence_snapshots",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("case_id", String(36), nullable=False),
    Column("taken_for", String(60), nullable=False),
    Column("taken_at", DateTime(timezone=True), nullable=False),
    Column("period_from", Date, nullable=False),
    Column("period_to", Date, nullable=False),
    Column("items", JSON, nullable=False),
)
Index("ix_evidence_snapshots_case", evidence_snapshots.c.case_id)

deadlines = Table(
    "deadlines",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("case_id", String(36), nullable=False),
    Column("key", String(120), nullable=False),
    Column("kind", String(60), nullable=False),
    Column("due_on", Date, nullable=False),
    Column("subject", String(36)),
    Column("status", String(12), nullable=False),  # open | met | cancelled
    Column("detail", JSON, nullable=False),
    Column("announced_at", DateTime(timezone=True)),
    UniqueConstraint("case_id", "key", name="uq_deadlines_case_key"),
)
Index("ix_deadlines_status_due", deadlines.c.status, deadlines.c.due_on)

inbox = inbox_table(metadata)
outbox = outbox_table(metadata)
audit = audit_tables(metadata)

# notifications' directory (rollcall.directory.v1): who is a social worker, and their pupils.
directory = directory_tables(metadata)
