"""Ingest's tables (owned by its Alembic history in ``migrations/``).

The register is ``marks`` (one row per school, pupil, date and session: the current code) plus
``mark_history`` (every code a later mark replaced, with when). Enrolments are per (school, pupil),
so a dual-registered pupil has two.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
)

from shared.audit import audit_tables
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
    Column("postcode", String(10)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

calendars = Table(
    "calendars",
    metadata,
    Column("school_urn", String(10), ForeignKey("schools.urn"), primary_key=True),
    Column("year", String(7), primary_key=True),
    Column("terms", JSON, nullable=False),
    Column("closed", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

pupils = Table(
    "pupils",
    metadata,
    Column("upn", String(13), primary_key=True),
    Column("given_name", String(100), nullable=False),
    Column("family_name", String(100), nullable=False),
    Column("date_of_birth", Date, nullable=False),
    Column("sex", String(1)),
    Column("home_la_code", String(3), nullable=False),
    Column("home_postcode", String(10)),
    Column("ward", String(100)),
    Column("fsm", Boolean, nullable=False),
    Column("sen", String(10), nullable=False),
    Column("ehcp_la_code", String(3)),
    Column("parents", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

enrolments = Table(
    "enrolments",
    metadata,
    Column("school_urn", String(10), ForeignKey("schools.urn"), primary_key=True),
    Column("upn", String(13), ForeignKey("pupils.upn"), primary_key=True),
    Column("year_group", String(3), nullable=False),
    Column("admission_date", Date, nullable=False),
    Column("leaving_date", Date),
    Column("updated_at", DateTime(timezone=True), nullable=False),
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
    Column("part_time_start", Date),
    Column("part_time_end", Date),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Keyed session first, pupil last (migration 0004): a session's register for a whole roll is one
# run of adjacent keys, not a key in each pupil's part of the index.
marks = Table(
    "marks",
    metadata,
    Column("school_urn", String(10), nullable=False),
    Column("upn", String(13), nullable=False),
    Column("date", Date, nullable=False),
    Column("session", String(2), nullable=False),
    Column("code", String(3), nullable=False),
    Column("minutes_late", SmallInteger),
    Column("recorded_at", DateTime(timezone=True)),
    Column("received_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("school_urn", "date", "session", "upn"),
)

mark_history = Table(
    "mark_history",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("school_urn", String(10), nullable=False),
    Column("upn", String(13), nullable=False),
    Column("date", Date, nullable=False),
    Column("session", String(2), nullable=False),
    Column("code", String(3), nullable=False),
    Column("minutes_late", SmallInteger),
    Column("recorded_at", DateTime(timezone=True)),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("replaced_at", DateTime(timezone=True), nullable=False),
    Column("replaced_by", String(3), nullable=False),
)
Index("ix_mark_history_pupil", mark_history.c.upn, mark_history.c.date)

outbox = outbox_table(metadata)
audit = audit_tables(metadata)
