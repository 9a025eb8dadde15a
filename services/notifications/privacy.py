"""Notifications' retention rules and subject-access export (shared/retention.py, shared/audit.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.notifications import tables as t
from shared.audit import audit_rows_of, rows_where
from shared.retention import Rule


def _old_alerts(at: Any) -> Any:
    return select(t.alerts.c.id).where(t.alerts.c.raised_at < at)


RULES = [
    # Deliveries first: an alert's deliveries go with it (even one re-queued later).
    Rule(
        t.deliveries,
        "alerts",
        lambda c: or_(t.deliveries.c.created_at < c.at, t.deliveries.c.alert_id.in_(_old_alerts(c.at))),
    ),
    Rule(t.alerts, "alerts", lambda c: t.alerts.c.raised_at < c.at),
    Rule(t.inbox, "bookkeeping", lambda c: t.inbox.c.processed_at < c.at),
    Rule(t.audit.log, "audit", lambda c: t.audit.log.c.at < c.at),
]


async def export(conn: AsyncConnection, upn: str) -> dict[str, list[dict[str, Any]]]:
    """The routing facts (home LA, SEN, care flags), allocations, every alert about the pupil and
    its deliveries (the exact payload sent), and who read them here."""
    alerts = select(t.alerts.c.id).where(t.alerts.c.upn == upn)
    return {
        "pupils": await rows_where(conn, t.pupils, t.pupils.c.upn == upn),
        "care": await rows_where(conn, t.care, t.care.c.upn == upn),
        "pupil_allocations": await rows_where(conn, t.pupil_allocations, t.pupil_allocations.c.upn == upn),
        "alerts": await rows_where(conn, t.alerts, t.alerts.c.upn == upn),
        "deliveries": await rows_where(conn, t.deliveries, t.deliveries.c.alert_id.in_(alerts)),
        "audit_log": await audit_rows_of(conn, t.audit, upn),
    }
