"""The rules service's app factory: read API, dashboard, Kafka consumer and the signal scheduler."""

from __future__ import annotations

from fastapi import FastAPI

from services.rules import dashboard, figures, privacy, tables, worker
from services.rules.api import add_routes
from services.rules.dashboard.partners import close_partners
from services.rules.settings import RulesSettings
from shared.retention import purge_worker
from shared.service import service_app
from shared.settings import Settings, extended


def create_app(settings: Settings | None = None) -> FastAPI:
    return service_app(
        "rules",
        extended(RulesSettings, settings, "rules"),
        tables.outbox,
        title="Rollcall rules",
        description="Every pupil's measures, band and signals, recomputed as marks arrive (SPEC §3–§6, §10).",
        routers=[add_routes, dashboard.add_routes],
        workers=[
            purge_worker(privacy.RULES),
            worker.consume,
            worker.consume_first_day,
            worker.consume_directory,
            worker.schedule,
            figures.keep_fresh,
            close_partners,
            worker.close_assessors,
        ],
        audit=tables.audit,
        exporter=privacy.export,
        setup=[worker.setup_directory],
    )
