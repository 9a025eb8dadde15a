"""The audit log of reads of pupil-level data (issue 7): who, when, what, why, and the outcome.

**What is audited.** Every endpoint that answers with data about an identified pupil (a pupil's
attendance, signal, case, alert and return lists, the dashboard's pupil pages, subject-access
exports, the audit log itself) takes the ``Audit`` dependency and tells it what it returns:
``audit.add(upns=..., resources=...)`` (for a list, the UPNs of the page). A route with a ``{upn}``
path parameter records that UPN whatever the outcome, so a refused or 404 look-up of a pupil is
on the record too. Aggregate reads (school and LA figures) do not take the dependency and leave
no row.

**One row per request** in the service's own ``audit_log`` (``at`` = real UTC time even when the
service pretends another day, ``sub``, the token's ``schools`` and ``la``, ``service``, ``method``,
the route *template*, ``purpose``, ``status``, ``resources``), and one ``audit_subjects`` row per
UPN (indexed, so "who read this pupil" is one index look-up).

**Why.** The ``Rollcall-Purpose`` request header: free text of at most ``PURPOSE_MAX``
characters, recorded as given (``unspecified`` when absent); a longer one is a 422.

**Durability over latency.** ``AuditMiddleware`` holds the response's first message, writes the
row in its own committed transaction, and only then lets the response go: an answer carrying
pupil data is never sent without its audit row, and a crash cannot lose the row of a response
that was sent. If the row cannot be written the caller gets a 503 problem instead of the data.
The rows of requests answered together are group-committed (``AuditWriter``): one small INSERT
transaction per batch, not per request (README "Data protection" has the measurement). Audit
rows are never logged (they hold UPNs).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
import structlog
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import Principal, require_la_admin
from shared.fields import IsoDateTime
from shared.observability import error_fields
from shared.problems import problem_responses

log = structlog.get_logger()

PURPOSE_HEADER = "Rollcall-Purpose"
PURPOSE_MAX = 200
UNSPECIFIED = "unspecified"
UPN_SHAPE = re.compile(r"[A-Z0-9]{13}")
PAGE = 500


@dataclass(frozen=True)
class AuditTables:
    log: Table
    subjects: Table


def audit_tables(metadata: MetaData) -> AuditTables:
    """The two audit tables in a service's metadata (each service's migration creates them)."""
    id_type = BigInteger().with_variant(Integer(), "sqlite")
    entries = Table(
        "audit_log",
        metadata,
        Column("id", id_type, primary_key=True, autoincrement=True),
        Column("at", DateTime(timezone=True), nullable=False),
        Column("sub", String(200), nullable=False),
        Column("schools", JSON),  # null: an LA-wide token
        Column("la", String(10)),
        Column("service", String(20), nullable=False),
        Column("method", String(10), nullable=False),
        Column("route", String(200), nullable=False),
        Column("purpose", String(PURPOSE_MAX), nullable=False),
        Column("status", SmallInteger, nullable=False),
        Column("resources", JSON, nullable=False),
    )
    Index("ix_audit_log_at", entries.c.at)
    Index("ix_audit_log_sub", entries.c.sub, entries.c.id)
    subjects = Table(
        "audit_subjects",
        metadata,
        Column("audit_id", id_type, ForeignKey("audit_log.id", ondelete="CASCADE"), primary_key=True),
        Column("upn", String(13), primary_key=True),
    )
    Index("ix_audit_subjects_upn", subjects.c.upn, subjects.c.audit_id)
    return AuditTables(entries, subjects)


@dataclass
class AuditEntry:
    """What one request returned about identified pupils; written by ``AuditMiddleware``."""

    purpose: str
    upns: dict[str, None] = field(default_factory=dict)  # ordered set
    resources: dict[str, None] = field(default_factory=dict)

    def add(self, upns: Iterable[str] = (), resources: Iterable[str] = ()) -> None:
        self.upns.update(dict.fromkeys(u for u in upns if u))
        self.resources.update(dict.fromkeys(str(r) for r in resources if r))


async def _audit(
    request: Request,
    purpose: Annotated[
        str | None,
        Header(
            alias=PURPOSE_HEADER,
            max_length=PURPOSE_MAX,
            description="Why the caller reads this pupil-level data (free text, recorded in the audit "
            f"log as given; `{UNSPECIFIED}` when absent).",
        ),
    ] = None,
) -> AuditEntry:
    entry = AuditEntry(purpose.strip() if purpose and purpose.strip() else UNSPECIFIED)
    upn = request.path_params.get("upn")
    if isinstance(upn, str) and UPN_SHAPE.fullmatch(upn.strip().upper()):
        entry.add(upns=[upn.strip().upper()])  # asked about, whatever the answer
    request.state.audit = entry
    return entry


Audit = Annotated[AuditEntry, Depends(_audit)]
"""The dependency of every endpoint that returns pupil-level data (see the module docstring)."""


def _principal_fields(principal: Principal | None) -> dict[str, Any]:
    if principal is None:
        return {"sub": "anonymous", "schools": None, "la": None}
    schools = sorted(principal.schools) if principal.schools is not None else None
    la = principal.la[:10] if principal.la is not None else None
    return {"sub": principal.sub[:200], "schools": schools, "la": la}


async def write_entry(
    conn: AsyncConnection,
    tables: AuditTables,
    entry: AuditEntry,
    *,
    principal: Principal | None,
    service: str,
    method: str,
    route: str,
    status: int,
    at: dt.datetime | None = None,
) -> int:
    row = audit_row(
        entry, principal=principal, service=service, method=method, route=route, status=status, at=at
    )
    result = await conn.execute(tables.log.insert().values(**row))
    audit_id = int(result.inserted_primary_key[0])  # type: ignore[index]
    if entry.upns:
        await conn.execute(tables.subjects.insert(), [{"audit_id": audit_id, "upn": u} for u in entry.upns])
    return audit_id


def audit_row(
    entry: AuditEntry,
    *,
    principal: Principal | None,
    service: str,
    method: str,
    route: str,
    status: int,
    at: dt.datetime | None = None,
) -> dict[str, Any]:
    return {
        "at": at or dt.datetime.now(dt.UTC),
        **_principal_fields(principal),
        "service": service,
        "method": method,
        "route": route,
        "purpose": entry.purpose,
        "status": status,
        "resources": list(entry.resources),
    }


_Pending = tuple[dict[str, Any], tuple[str, ...], "asyncio.Future[None]"]  # row, UPNs, its waiter


class AuditWriter:
    """Group commit of audit rows: the rows of requests answered together go in one transaction.

    A request's ``write`` returns only once its row is committed (or raises), exactly as a
    transaction of its own would; requests that finish while a commit is under way wait for the
    next one, which takes all of them. If a commit fails, every request in it gets the error (and
    its caller a 503): none of their rows was written.

    Every audited read pays for this write, so it goes to the driver directly (issue 8), with the
    values bound by the columns' own SQLAlchemy types, stored exactly as ``write_entry`` stores
    them:

    - SQLite (aiosqlite): ``BEGIN IMMEDIATE``, one INSERT per row, one ``executemany`` of the
      subjects, ``COMMIT``: a call each on aiosqlite's thread. Through SQLAlchemy the same
      transaction cost ~1.3 ms of CPU (every statement is four thread hops, plus SQLAlchemy's
      transaction and ``insertmanyvalues`` bookkeeping); this way ~0.25 ms.
    - PostgreSQL (asyncpg): one statement a row, its log row and subjects together (a CTE), the
      batch as one ``executemany``, which asyncpg runs as one implicit transaction: one round
      trip and one commit instead of BEGIN, two INSERTs and COMMIT.
    """

    def __init__(self, engine: AsyncEngine, tables: AuditTables) -> None:
        self.engine = engine
        dialect = engine.dialect
        columns = [c for c in tables.log.c if c.name != "id"]
        self._binds = [(c.name, dialect.type_descriptor(c.type).bind_processor(dialect)) for c in columns]
        names = ", ".join(c.name for c in columns)
        log_table, subjects = tables.log.name, tables.subjects.name
        if dialect.name == "postgresql":
            values = ", ".join(
                f"${i}::json" if isinstance(c.type, JSON) else f"${i}" for i, c in enumerate(columns, 1)
            )
            # The names come from the metadata; every value is bound.
            entry = f"INSERT INTO {log_table} ({names}) VALUES ({values}) RETURNING id"  # noqa: S608
            into = f"INSERT INTO {subjects} (audit_id, upn)"
            upns = f"unnest(${len(columns) + 1}::text[]) AS upn"
            self._sql = f"WITH entry AS ({entry}) {into} SELECT entry.id, upn FROM entry, {upns}"  # noqa: S608
        else:
            marks = ", ".join("?" for _ in columns)
            self._sql = f"INSERT INTO {log_table} ({names}) VALUES ({marks})"  # noqa: S608
            self._subjects_sql = f"INSERT INTO {subjects} (audit_id, upn) VALUES (?, ?)"  # noqa: S608
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None

    async def write(self, row: dict[str, Any], upns: Iterable[str]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, tuple(upns), done))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        await done

    def _values(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(bind(row[name]) if bind else row[name] for name, bind in self._binds)

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                # A pooled connection (pre-pinged on PostgreSQL) outside any SQLAlchemy
                # transaction: the driver's own transaction is the whole of this write.
                async with self.engine.connect() as conn:
                    driver: Any = (await conn.get_raw_connection()).driver_connection
                    if conn.dialect.name == "postgresql":
                        await driver.executemany(
                            self._sql, [(*self._values(row), list(upns)) for row, upns, _ in batch]
                        )
                    else:
                        await self._write_sqlite(driver, batch)
            except Exception as exc:  # noqa: BLE001 - each waiting request answers 503
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def _write_sqlite(self, driver: Any, batch: list[_Pending]) -> None:
        await driver.execute("BEGIN IMMEDIATE")
        try:
            subjects: list[tuple[int, str]] = []
            for row, upns, _ in batch:
                (audit_id,) = await driver.execute_insert(self._sql, self._values(row))
                subjects += [(audit_id, upn) for upn in upns]
            if subjects:
                await driver.executemany(self._subjects_sql, subjects)
            await driver.commit()
        except BaseException:
            await asyncio.shield(driver.rollback())
            raise


class AuditMiddleware:
    """ASGI middleware: once an audited endpoint answers, write its row, then send the answer."""

    def __init__(self, app: ASGIApp, service: str, tables: AuditTables) -> None:
        self.app = app
        self.service = service
        self.tables = tables
        self._writer: AuditWriter | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        refused = False

        async def send_audited(message: Message) -> None:
            nonlocal refused
            if refused:
                return  # the data this answer carried is withheld: the 503 is already sent
            entry = state.get("audit")
            # Only a verified caller can have been given data: an unauthenticated request (the
            # dashboard's redirect to sign-in) is in the request log, not the audit log.
            principal = state.get("principal")
            if message["type"] == "http.response.start" and isinstance(entry, AuditEntry) and principal:
                route = scope.get("route")
                try:
                    engine = scope["app"].state.runtime.engine
                    if self._writer is None or self._writer.engine is not engine:
                        self._writer = AuditWriter(engine, self.tables)
                    row = audit_row(
                        entry,
                        principal=principal,
                        service=self.service,
                        method=scope["method"],
                        route=getattr(route, "path", "?"),
                        status=int(message["status"]),
                    )
                    await self._writer.write(row, entry.upns)
                except Exception as exc:  # noqa: BLE001 - no audit row, no data
                    log.error("audit_write_failed", service=self.service, **error_fields(exc))
                    refused = True
                    body = orjson.dumps(
                        {
                            "type": "urn:rollcall:problem:unavailable",
                            "title": "Service unavailable",
                            "status": 503,
                            "detail": "the read could not be recorded in the audit log; try again",
                        }
                    )
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 503,
                            "headers": [
                                (b"content-type", b"application/problem+json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"retry-after", b"5"),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
            await send(message)

        await self.app(scope, receive, send_audited)


def install_audit(app: FastAPI, service: str, tables: AuditTables) -> None:
    app.add_middleware(AuditMiddleware, service=service, tables=tables)
    add_audit_routes(app, tables)


Admin = Annotated[Principal, Depends(require_la_admin())]  # never filtered by school or LA
PROBLEMS = problem_responses({401: "No or invalid token", 403: "Not allowed", 422: "Invalid query"})


def add_audit_routes(app: FastAPI, tables: AuditTables) -> None:
    router = APIRouter(prefix="/v1", responses=PROBLEMS, tags=["audit"])
    a, s = tables.log.c, tables.subjects.c

    @router.get("/audit")
    async def audit_log(
        request: Request,
        principal: Admin,
        audit: Audit,
        upn: Annotated[str | None, Query(min_length=1, max_length=13)] = None,
        sub: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
        start: Annotated[
            IsoDateTime | None, Query(alias="from", description="at or after (ISO 8601)")
        ] = None,
        end: Annotated[IsoDateTime | None, Query(alias="to", description="before (ISO 8601)")] = None,
        cursor: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
        limit: Annotated[int, Query(ge=1, le=PAGE)] = 100,
    ) -> dict[str, Any]:
        """This service's audit log of reads of pupil-level data, oldest first (scope `admin`).

        Each entry: `id`, `at` (UTC), `sub`, `schools`/`la` (the token's), `service`, `method`,
        `route` (template), `purpose` (the `Rollcall-Purpose` header or `unspecified`), `status`,
        `upns` and `resources` returned. Filters: `upn`, `sub`, `from` (inclusive), `to`
        (exclusive); `next_cursor` pages forward. Reading the audit log is itself audited.
        """
        q = select(tables.log).order_by(a.id).limit(limit)
        if cursor is not None:
            q = q.where(a.id > cursor)
        if upn:
            q = q.where(a.id.in_(select(s.audit_id).where(s.upn == upn)))
        if sub:
            q = q.where(a.sub == sub)
        if start is not None:
            q = q.where(a.at >= start)
        if end is not None:
            q = q.where(a.at < end)
        runtime = request.app.state.runtime
        async with runtime.reads.connect() as conn:
            rows = (await conn.execute(q)).all()
            ids = [r.id for r in rows]
            upns: dict[int, list[str]] = {i: [] for i in ids}
            for start_at in range(0, len(ids), 500):
                chunk = ids[start_at : start_at + 500]
                found = await conn.execute(
                    select(s.audit_id, s.upn).where(s.audit_id.in_(chunk)).order_by(s.audit_id, s.upn)
                )
                for audit_id, subject in found:
                    upns[audit_id].append(subject)
        items = [
            {
                "id": r.id,
                "at": _utc(r.at).isoformat(),
                "sub": r.sub,
                "schools": r.schools,
                "la": r.la,
                "service": r.service,
                "method": r.method,
                "route": r.route,
                "purpose": r.purpose,
                "status": r.status,
                "upns": upns[r.id],
                "resources": r.resources,
            }
            for r in rows
        ]
        audit.add(upns=(u for item in items for u in item["upns"]))
        return {"items": items, "next_cursor": ids[-1] if ids else cursor}

    app.include_router(router)


def _utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes (stored as UTC)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# --- subject-access export ------------------------------------------------------------------

Exporter = Callable[[AsyncConnection, str], Coroutine[Any, Any, dict[str, list[dict[str, Any]]]]]
UpnPath = Annotated[str, Path(min_length=13, max_length=13, pattern=r"^[A-Z0-9]{13}$")]


async def rows_where(conn: AsyncConnection, table: Table, *criteria: Any) -> list[dict[str, Any]]:
    """Every row of ``table`` matching ``criteria``, as JSON-ready dicts (dates as ISO strings)."""
    order = list(table.primary_key.columns)
    result = await conn.execute(select(table).where(*criteria).order_by(*order))
    return [jsonable_encoder(dict(r._mapping)) for r in result]


async def audit_rows_of(conn: AsyncConnection, tables: AuditTables, upn: str) -> list[dict[str, Any]]:
    """Who read this pupil's data here (part of a subject-access export: the recipients)."""
    ids = select(tables.subjects.c.audit_id).where(tables.subjects.c.upn == upn)
    rows = await rows_where(conn, tables.log, tables.log.c.id.in_(ids))
    for row in rows:
        row.pop("schools", None)
        row.pop("la", None)
    return rows


def add_export_route(app: FastAPI, service: str, exporter: Exporter) -> None:
    """``GET /v1/pupils/{upn}/export`` (scope ``admin``): everything ``service`` holds about a pupil."""
    router = APIRouter(
        prefix="/v1",
        responses=problem_responses({401: "No or invalid token", 403: "Not allowed", 422: "Invalid UPN"}),
        tags=["subject access"],
    )

    @router.get("/pupils/{upn}/export")
    async def export_pupil(upn: UpnPath, request: Request, principal: Admin, audit: Audit) -> dict[str, Any]:
        """Everything this service holds about one pupil, table by table (a subject-access request,
        UK GDPR Art. 15); `python -m shared.sar UPN` gathers all four services' exports. Rows of
        other pupils are never included. An unknown UPN is an empty export, not a 404 (the answer
        to "what do you hold?" may be "nothing")."""
        runtime = request.app.state.runtime
        async with runtime.reads.connect() as conn:
            data = await exporter(conn, upn)
        return {
            "service": service,
            "upn": upn,
            "generated_at": dt.datetime.now(dt.UTC).isoformat(),
            "tables": data,
        }

    app.include_router(router)


async def record_now(
    request: Request, tables: AuditTables, upns: Iterable[str], resources: Iterable[str]
) -> None:
    """Write an audit row at once, for data sent after the response started (a Server-Sent Events
    stream audits each batch of events before sending it); same who and why as the request."""
    state = request.state
    opened: AuditEntry | None = getattr(state, "audit", None)
    entry = AuditEntry(opened.purpose if opened is not None else UNSPECIFIED)
    entry.add(upns, resources)
    runtime = request.app.state.runtime
    async with runtime.engine.begin() as conn:
        await write_entry(
            conn,
            tables,
            entry,
            principal=getattr(state, "principal", None),
            service=runtime.settings.service,
            method=request.method,
            route=getattr(request.scope.get("route"), "path", "?"),
            status=200,
        )
