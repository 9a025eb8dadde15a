"""The rules service's app factory: read API, Kafka consumer and the signal scheduler."""

from __future__ import annotations

from fastapi import FastAPI

from services.rules import tables, worker
from services.rules.api import add_routes
from shared.service import service_app
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings(service="rules")
    return service_app(
        "rules",
        settings,
        tables.outbox,
        title="Rollcall rules",
        description="Every pupil's measures, band and signals, recomputed as marks arrive (SPEC §3–§6, §10).",
        routers=[add_routes],
        workers=[worker.consume, worker.schedule],
    )
