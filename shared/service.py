"""The wiring every service shares: settings, logging, engine, producer, outbox relay, health.

``Runtime`` is the single bootstrap a service's app factory builds in its lifespan; tests build
apps through the same factory with their own settings.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import kafka
from shared.audit import AuditTables, Exporter, add_export_route, install_audit
from shared.auth import TokenVerifier
from shared.collector import tune_collector
from shared.db import WriteGate, create_engine, is_sqlite, ping, reader
from shared.limits import RequestLimits, document_limits
from shared.observability import configure_logging, error_fields, health_router, install
from shared.outbox import OutboxRelay
from shared.policy import Policy, load_policy
from shared.problems import install_problem_handlers
from shared.settings import Settings

log = structlog.get_logger()


@dataclass
class Runtime:
    settings: Settings
    policy: Policy
    engine: AsyncEngine
    producer: AIOKafkaProducer
    relay: OutboxRelay
    # SQLite's single writer shared fairly among this process's writers (``WriteGate``); unused on
    # PostgreSQL.
    write_gate: WriteGate = field(default_factory=WriteGate)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)  # the service's own long-lived objects
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # ``engine`` for transactions that only read (``shared.db.reader``): the API's GETs.
    reads: AsyncEngine = field(init=False)

    def __post_init__(self) -> None:
        self.reads = reader(self.engine)

    def now(self) -> datetime:
        return self.clock()

    def today(self) -> date:
        """Today in the LA's time zone (policy), which is what a register date means."""
        return self.clock().astimezone(self.policy.zone).date()

    async def readiness(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(ping(self.engine), timeout=3)
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            checks["database"] = type(exc).__name__
        try:
            await asyncio.wait_for(self.producer.client.fetch_all_metadata(), timeout=3)
            checks["kafka"] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            checks["kafka"] = type(exc).__name__ or "unreachable"
        directory = self.state.get("directory")  # shared.directory.Directory, where the service has one
        if directory is not None:
            checks["directory"] = "ok" if directory.loaded.is_set() else "loading"
        return checks


def fixed_day_clock(day: date, zone: ZoneInfo) -> Callable[[], datetime]:
    """A clock that reads ``day`` at the real time of day (in the LA's zone)."""

    def clock() -> datetime:
        real = datetime.now(zone)
        return datetime.combine(day, real.timetz()).astimezone(UTC)

    return clock


async def _start_producer(producer: AIOKafkaProducer) -> None:
    """Start the producer, retrying until Kafka answers: a service may start before its broker."""
    delay = 0.5
    while True:
        try:
            await producer.start()
            return
        except Exception as exc:  # noqa: BLE001 - the broker may not be up yet
            log.warning("kafka_unavailable", **error_fields(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)


async def _drain(relay: OutboxRelay) -> None:
    while await relay.publish_once():
        pass


async def _relay_when_ready(runtime: Runtime) -> None:
    await _start_producer(runtime.producer)
    if runtime.settings.relay_enabled:
        await runtime.relay.run()


Worker = Callable[[Runtime], Coroutine[Any, Any, None]]


def select_workers(workers: Sequence[Worker], spec: str) -> list[Worker]:
    """The workers a process runs, by ``ROLLCALL_WORKERS``: ``all``, ``none``, a comma list of
    worker names (their function names, e.g. ``consume_first_day,consume_directory``) or a comma
    list of ``-name`` (all but those). A name the service does not have is refused with the names
    it has, so a mistyped deployment fails at start rather than silently running nothing."""
    names = [w.__name__ for w in workers]
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if items == ["all"]:
        return list(workers)
    if items == ["none"]:
        return []
    skip = items[0].startswith("-") if items else False
    if not items or any(item.startswith("-") != skip for item in items):
        raise ValueError(
            f"ROLLCALL_WORKERS={spec!r}: give all, none, worker names, or -names to leave out (not both)"
        )
    wanted = {item.removeprefix("-") for item in items}
    unknown = sorted(wanted - set(names))
    if unknown:
        raise ValueError(
            f"ROLLCALL_WORKERS names {', '.join(unknown)}; this service's workers are {', '.join(names)}"
        )
    return [w for w in workers if (w.__name__ in wanted) != skip]


def service_app(
    name: str,
    settings: Settings,
    outbox: Table,
    title: str,
    description: str,
    routers: list[Callable[[FastAPI], None]],
    version: str = "1.0.0",
    workers: Sequence[Worker] = (),
    bulk_routes: Collection[str] = (),
    audit: AuditTables | None = None,
    exporter: Exporter | None = None,
    setup: Sequence[Callable[[Runtime], None]] = (),
) -> FastAPI:
    """A FastAPI app with the shared lifespan, problem handlers, request limits, metrics and health
    routes. ``bulk_routes`` (route templates) may take bodies up to ``max_body_bytes``. With
    ``audit``, reads of pupil-level data are audited (``shared/audit.py``) and ``GET /v1/audit``
    is served; with ``exporter``, ``GET /v1/pupils/{upn}/export`` (subject access). ``setup``
    functions fill ``Runtime.state`` before any worker starts or request is served. The process
    runs the ``workers`` that ``settings.workers`` selects (``select_workers``)."""
    workers = select_workers(workers, settings.workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.log_json)
        policy = load_policy(settings.policy_file)
        engine = create_engine(settings.db_url)
        producer = kafka.producer(settings.kafka_bootstrap)
        gate = WriteGate()
        relay = OutboxRelay(
            engine, outbox, producer, batch=settings.relay_batch, max_backlog=settings.relay_max_backlog,
            gate=gate.urgent if is_sqlite(settings.db_url) else contextlib.nullcontext,
        )  # fmt: skip
        runtime = Runtime(settings, policy, engine, producer, relay, gate)
        if settings.today is not None:
            runtime.clock = fixed_day_clock(settings.today, policy.zone)
        for step in setup:
            step(runtime)
        runtime.tasks.append(asyncio.create_task(_relay_when_ready(runtime)))
        for worker in workers:
            runtime.tasks.append(asyncio.create_task(worker(runtime)))
        app.state.runtime = runtime
        app.state.verifier = TokenVerifier(settings)
        log.info("service_started", service=name, env=settings.env, policy_version=policy.version)
        tune_collector()
        try:
            yield
        finally:
            if settings.relay_enabled and producer.client is not None:
                # Drain what this process committed so a clean stop leaves no backlog behind.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(_drain(relay), timeout=10)
            relay.stop()
            for task in runtime.tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(Exception):
                # Bounded: with Kafka gone, stop() waits forever to flush what is still in flight
                # (those outbox rows were not deleted, so nothing is lost by giving up).
                await asyncio.wait_for(producer.stop(), timeout=10)
            await engine.dispose()

    app = FastAPI(title=title, description=description, version=version, lifespan=lifespan)
    install_problem_handlers(app)
    if audit is not None:
        install_audit(app, name, audit)
    app.add_middleware(RequestLimits, fastapi_app=app, settings=settings, bulk_routes=bulk_routes)
    install(app, name)  # outermost: 429s and 413s are logged and counted too

    async def readiness(request: Request) -> dict[str, str]:
        runtime: Runtime = request.app.state.runtime
        return await runtime.readiness()

    app.include_router(health_router(readiness))
    for add in routers:
        add(app)
    if exporter is not None:
        add_export_route(app, name, exporter)

    def openapi() -> dict[str, Any]:
        if not app.openapi_schema:
            app.openapi_schema = document_limits(
                get_openapi(
                    title=app.title, version=app.version, description=app.description, routes=app.routes
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
