"""The rules service's tables: its copy of the registry and register (fed from Kafka), the read
models it computes (assessments, episodes, signals), and its inbox and outbox.

``register`` is keyed by pupil first, because every recompute loads one pupil's whole register;
on SQLite it is stored WITHOUT ROWID (clustered by that key: migration 0006).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

from shared.audit import audit_tables
from shared.directory import directory_tables
from shared.inbox import inbox_table
from shared.outbox import outbox_table

metadata = MetaData()

schools = Table(
    "schools",
    metadata,
    Column("urn", String(10), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("la_code", String(3), nullable=False),
    Column("phase", String(30), nullable=False),
    Column("type", String(30), nullable=False),
    Column("locality", String(100)),
    Column("ward", String(100)),
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
    Column("sex", String(1)),
    Column("home_la_code", String(3), nullable=False),
    Column("ward", String(100)),
    Column("fsm", Boolean, nullable=False),
    Column("sen", String(10), nullable=False),
    Column("ehcp_la_code", String(3)),
)

enrolments = Table(
    "enrolments",
    metadata,
    Column("upn", String(13), primary_key=True),
    Column("school_urn", String(10), primary_key=True),
    Column("year_group", String(3), nullable=False),
    Column("admission_date", Date, nullable=False),
    Column("leaving_date", Date),
)
Index("ix_enrolments_school", enrolments.c.school_urn)

care = Table(
    "care",
    metadata,
    Column("upn", String(13), primary_key=True),
    Column("cin", Boolean, nullable=False),
    Column("cp", Boolean, nullable=False),
    Column("cla", Boolean, nullable=False),
    Column("early_help", Boolean, nullable=False),
    Column("etac", Boolean, nullable=False),
    Column("part_time_start", Date),
    Column("part_time_end", Date),
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
    sqlite_with_rowid=False,  # clustered by pupil: migration 0006
)
Index("ix_register_school_date", register.c.school_urn, register.c.date)

# Sessions per school, day and code: the register summed, kept by deltas as marks arrive, so the
# weekly trend, hotspots over a period and before/after comparisons never scan the register.
register_days = Table(
    "register_days",
    metadata,
    Column("school_urn", String(10), primary_key=True),
    Column("date", Date, primary_key=True),
    Column("code", String(3), primary_key=True),
    Column("category", String(16), nullable=False),
    Column("sessions", Integer, nullable=False),
)
Index("ix_register_days_date", register_days.c.date)

# Sessions per enrolment and Monday–Sunday week by category, kept by deltas like register_days:
# persistent and severe absence over any run of whole weeks (before/after comparisons) without
# reading the register (about 40 rows a pupil a year instead of 380).
register_weeks = Table(
    "register_weeks",
    metadata,
    Column("school_urn", String(10), primary_key=True),
    Column("week", Date, primary_key=True),
    Column("upn", String(13), primary_key=True),
    Column("present", Integer, nullable=False),
    Column("aea", Integer, nullable=False),
    Column("authorised", Integer, nullable=False),
    Column("unauthorised", Integer, nullable=False),
    Column("not_counted", Integer, nullable=False),
)

# The year-to-date assessment of each enrolment, as of its last recompute.
assessments = Table(
    "assessments",
    metadata,
    Column("upn", String(13), primary_key=True),
    Column("school_urn", String(10), primary_key=True),
    Column("period_from", Date, nullable=False),
    Column("period_to", Date, nullable=False),
    Column("possible", Integer, nullable=False),
    Column("present", Integer, nullable=False),
    Column("aea", Integer, nullable=False),
    Column("authorised", Integer, nullable=False),
    Column("unauthorised", Integer, nullable=False),
    Column("not_counted", Integer, nullable=False),
    Column("holiday", Integer, nullable=False),
    Column("part_time", Integer, nullable=False),
    Column("attendance_rate", Float),
    Column("band", String(20)),
    Column("persistent_absence", Boolean, nullable=False),
    Column("severe_absence", Boolean, nullable=False),
    Column("compulsory_school_age", Boolean, nullable=False),
    Column("penalty_unauthorised", Integer, nullable=False),
    Column("penalty_threshold_met", Boolean, nullable=False),
    Column("continuous_unauthorised_days", Integer, nullable=False),
    Column("illness_days", Float, nullable=False),
    Column("computed_at", DateTime(timezone=True), nullable=False),
)
Index("ix_assessments_school", assessments.c.school_urn)

# Every episode of every signal the engine has found, open or ended.
episodes = Table(
    "episodes",
    metadata,
    Column("upn", String(13), primary_key=True),
    Column("key", String(120), primary_key=True),
    Column("school_urn", String(10), nullable=False),
    Column("type", String(40), nullable=False),
    Column("started_on", Date, nullable=False),
    Column("ended_on", Date),
    Column("detail", JSON, nullable=False),
)
Index("ix_episodes_type_started", episodes.c.type, episodes.c.started_on)

# The signals published, newest last: what GET /v1/signals pages through.
signals = Table(
    "signals",
    metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("type", String(60), nullable=False),
    Column("upn", String(13), nullable=False),
    Column("school_urn", String(10), nullable=False),
    Column("episode_key", String(120), nullable=False),
    Column("occurred_on", Date, nullable=False),
    Column("raised_at", DateTime(timezone=True), nullable=False),
    Column("data", JSON, nullable=False),
)
Index("ix_signals_upn", signals.c.upn)
Index("ix_signals_school", signals.c.school_urn)
Index("ix_signals_type", signals.c.type)

inbox = inbox_table(metadata)
outbox = outbox_table(metadata)
audit = audit_tables(metadata)

# notifications' directory (rollcall.directory.v1): who is a social worker, and their pupils.
directory = directory_tables(metadata)
