"""Legal's retention rules and subject-access export (shared/retention.py, shared/audit.py).

Case files (cases, notices, payments, offences, records, evidence snapshots, the signals behind
them) are not purged with the register: their retention is the LA's records-management decision.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.legal import tables as t
from shared.audit import audit_rows_of, rows_where
from shared.retention import Rule

RULES = [
    Rule(t.register, "register", lambda c: t.register.c.date < c.day),
    Rule(t.inbox, "bookkeeping", lambda c: t.inbox.c.processed_at < c.at),
    Rule(t.audit.log, "audit", lambda c: t.audit.log.c.at < c.at),
]


async def export(conn: AsyncConnection, upn: str) -> dict[str, list[dict[str, Any]]]:
    """The registry copy, register, signals and offences, and every case of the pupil with its
    parents, history, notices, payments, records, evidence snapshots and deadlines."""
    cases = select(t.cases.c.id).where(t.cases.c.upn == upn)
    notices = select(t.penalty_notices.c.id).where(t.penalty_notices.c.upn == upn)
    return {
        "pupils": await rows_where(conn, t.pupils, t.pupils.c.upn == upn),
        "enrolments": await rows_where(conn, t.enrolments, t.enrolments.c.upn == upn),
        "care": await rows_where(conn, t.care, t.care.c.upn == upn),
        "register": await rows_where(conn, t.register, t.register.c.upn == upn),
        "signals": await rows_where(conn, t.signals, t.signals.c.upn == upn),
        "offences": await rows_where(conn, t.offences, t.offences.c.upn == upn),
        "cases": await rows_where(conn, t.cases, t.cases.c.upn == upn),
        "parents": await rows_where(conn, t.parents, t.parents.c.case_id.in_(cases)),
        "history": await rows_where(conn, t.history, t.history.c.case_id.in_(cases)),
        "penalty_notices": await rows_where(conn, t.penalty_notices, t.penalty_notices.c.upn == upn),
        "payments": await rows_where(conn, t.payments, t.payments.c.notice_id.in_(notices)),
        "records": await rows_where(conn, t.records, t.records.c.case_id.in_(cases)),
        "evidence_snapshots": await rows_where(
            conn, t.evidence_snapshots, t.evidence_snapshots.c.case_id.in_(cases)
        ),
        "deadlines": await rows_where(conn, t.deadlines, t.deadlines.c.case_id.in_(cases)),
        "audit_log": await audit_rows_of(conn, t.audit, upn),
    }
