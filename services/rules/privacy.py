"""The rules service's retention rules and subject-access export (shared/retention.py, shared/audit.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.rules import tables as t
from shared.audit import audit_rows_of, rows_where
from shared.retention import Rule

RULES = [
    Rule(t.register, "register", lambda c: t.register.c.date < c.day),
    Rule(t.register_days, "register", lambda c: t.register_days.c.date < c.day),
    # A Monday–Sunday week goes once all its days are past the cutoff.
    Rule(t.register_weeks, "register", lambda c: t.register_weeks.c.week < c.day - dt.timedelta(days=6)),
    Rule(t.signals, "register", lambda c: t.signals.c.occurred_on < c.day),
    Rule(t.episodes, "register", lambda c: t.episodes.c.ended_on < c.day),  # open episodes stay
    Rule(t.inbox, "bookkeeping", lambda c: t.inbox.c.processed_at < c.at),
    Rule(t.audit.log, "audit", lambda c: t.audit.log.c.at < c.at),
]


async def export(conn: AsyncConnection, upn: str) -> dict[str, list[dict[str, Any]]]:
    """The registry copy (date of birth, characteristics), enrolments, care, the register, weekly
    sums, the stored assessment, signal episodes and signals raised, and who read them here."""
    return {
        "pupils": await rows_where(conn, t.pupils, t.pupils.c.upn == upn),
        "enrolments": await rows_where(conn, t.enrolments, t.enrolments.c.upn == upn),
        "care": await rows_where(conn, t.care, t.care.c.upn == upn),
        "register": await rows_where(conn, t.register, t.register.c.upn == upn),
        "register_weeks": await rows_where(conn, t.register_weeks, t.register_weeks.c.upn == upn),
        "assessments": await rows_where(conn, t.assessments, t.assessments.c.upn == upn),
        "episodes": await rows_where(conn, t.episodes, t.episodes.c.upn == upn),
        "signals": await rows_where(conn, t.signals, t.signals.c.upn == upn),
        "audit_log": await audit_rows_of(conn, t.audit, upn),
    }
