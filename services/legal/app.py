"""The legal service's app factory: the case API, the Kafka consumer and the deadline scheduler."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from services.legal import privacy, tables, worker
from services.legal.api import add_routes
from services.legal.workflow import Refused
from shared.problems import Problem, problem_response
from shared.retention import purge_worker
from shared.service import service_app
from shared.settings import Settings


def refused_problem(exc: Refused) -> Problem:
    """A workflow refusal as a problem: 409 naming the rule (422 for a date in the future)."""
    if exc.status == 422:
        error = {"index": None, "field": None, "code": exc.rule.value, "detail": exc.detail}
        return Problem(
            422, "validation", "Request is not valid", exc.detail, errors=[error], rule=exc.rule.value
        )
    return Problem(409, "legal-rule", "Refused by a legal rule", exc.detail, rule=exc.rule.value, **exc.facts)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings(service="legal")
    app = service_app(
        "legal",
        settings,
        tables.outbox,
        title="Rollcall legal",
        description="Cases, penalty notices, statutory clocks and evidence packs (SPEC §7, §8).",
        routers=[add_routes],
        workers=[purge_worker(privacy.RULES), worker.consume, worker.consume_directory, worker.schedule],
        audit=tables.audit,
        exporter=privacy.export,
        setup=[worker.setup_directory],
    )

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> Response:
        return problem_response(refused_problem(exc), request.url.path)

    return app
