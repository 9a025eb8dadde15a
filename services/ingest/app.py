"""The ingest service's app factory."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import TypeAdapter

from services.ingest import privacy, tables
from services.ingest.api import add_routes
from services.ingest.schemas import CalendarIn, CareIn, MarkIn, RosterIn, SchoolIn
from shared.retention import purge_worker
from shared.service import service_app
from shared.settings import Settings

# Up to 10,000 marks or 5,000 pupils a request: these take ROLLCALL_MAX_BODY_BYTES, the rest less.
BULK_ROUTES = ("/v1/schools/{urn}/marks", "/v1/schools/{urn}/pupils")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings(service="ingest")
    app = service_app(
        "ingest",
        settings,
        tables.outbox,
        title="Rollcall ingest",
        description="MIS systems push registers, rosters and calendars; social care pushes care status.",
        routers=[add_routes],
        bulk_routes=BULK_ROUTES,
        workers=[purge_worker(privacy.RULES)],
        audit=tables.audit,
        exporter=privacy.export,
    )
    _document_raw_bodies(app)
    return app


def _document_raw_bodies(app: FastAPI) -> None:
    """Endpoints read their bodies themselves (size limits, CSV); publish the schemas they accept."""

    shared_openapi = app.openapi  # service_app's: the routes plus the request limits' problems

    def openapi() -> dict[str, object]:
        if app.openapi_schema and "SchoolIn" in app.openapi_schema.get("components", {}).get("schemas", {}):
            return app.openapi_schema
        schema = shared_openapi()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (SchoolIn, CalendarIn, RosterIn, CareIn, MarkIn):
            defs = TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}")
            components.update(defs.pop("$defs", {}))
            components[model.__name__] = defs
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
