"""Ingest's retention rules and subject-access export (shared/retention.py, shared/audit.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_
from sqlalchemy.ext.asyncio import AsyncConnection

from services.ingest import tables as t
from shared.audit import audit_rows_of, rows_where
from shared.retention import Rule

RULES = [
    # The register: the session's academic year and the year the entry was made (received) both past.
    Rule(t.marks, "register", lambda c: and_(t.marks.c.date < c.day, t.marks.c.received_at < c.at)),
    Rule(
        t.mark_history,
        "register",
        lambda c: and_(t.mark_history.c.date < c.day, t.mark_history.c.received_at < c.at),
    ),
    Rule(t.audit.log, "audit", lambda c: t.audit.log.c.at < c.at),  # its subjects go with it (cascade)
]


async def export(conn: AsyncConnection, upn: str) -> dict[str, list[dict[str, Any]]]:
    """The pupil's record (names, date of birth, address, parents), enrolments, care status, every
    mark and replaced mark, and who read their data here."""
    return {
        "pupils": await rows_where(conn, t.pupils, t.pupils.c.upn == upn),
        "enrolments": await rows_where(conn, t.enrolments, t.enrolments.c.upn == upn),
        "care": await rows_where(conn, t.care, t.care.c.upn == upn),
        "marks": await rows_where(conn, t.marks, t.marks.c.upn == upn),
        "mark_history": await rows_where(conn, t.mark_history, t.mark_history.c.upn == upn),
        "audit_log": await audit_rows_of(conn, t.audit, upn),
    }
