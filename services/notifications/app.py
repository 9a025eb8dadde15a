"""The notifications service's app factory: directory, subscriptions and alerts API, the Kafka
consumer, the delivery worker and the escalation scheduler."""

from __future__ import annotations

from fastapi import FastAPI

from services.notifications import privacy, tables, worker
from services.notifications.api import add_routes
from services.notifications.settings import NotificationSettings
from shared.retention import purge_worker
from shared.service import service_app
from shared.settings import Settings, extended


def create_app(settings: Settings | None = None) -> FastAPI:
    config = extended(NotificationSettings, settings, "notifications")
    return service_app(
        "notifications",
        config,
        tables.outbox,
        title="Rollcall notifications",
        description=(
            "Routes signals and legal deadlines to the people who must act (SPEC §8, §9) and delivers "
            "signed, de-duplicated alerts by webhook, email, Server-Sent Events and rollcall.alerts.v1."
        ),
        routers=[add_routes],
        workers=[purge_worker(privacy.RULES), worker.consume, worker.deliver, worker.escalate],
        audit=tables.audit,
        exporter=privacy.export,
    )
