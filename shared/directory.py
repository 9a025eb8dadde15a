"""The directory of recipients and allocations, as the read services (rules, legal) know it.

The notifications service owns the directory (``PUT /v1/recipients/{id}``, ``PUT
/v1/allocations/pupils/{upn}``) and publishes every change on ``rollcall.directory.v1`` through its
outbox: ``recipient.updated`` (key ``recipient:<id>``: the id, role and LA code — no name or email)
and ``allocation.updated`` (key ``pupil:<upn>``: the pupil's full current set of allocated
recipient ids). The topic is log-compacted, so the latest event of every key is kept for good and a
new consumer rebuilds the whole directory from the start of the topic.

Rules and legal consume it with their inbox into two local tables (``directory_recipients``,
``directory_allocations``) and answer "what may this caller see" from them with one indexed query:
no HTTP call on the read path.

**Who is restricted.** A non-admin token whose ``sub`` is a directory recipient of a restricted
role (``social_worker``, ``early_help``) sees only the pupils allocated to it: pupil-level reads of
any other pupil answer exactly like an unknown UPN (404), lists are filtered to its pupils, and
school- and LA-level aggregates are refused (403).

**Before the directory has arrived (fail closed).** Until this process's directory consumer has
read to the end of the topic once, the service cannot tell a social worker from an LA officer:
every non-admin request waits up to ``DIRECTORY_WAIT_SECONDS`` for it and is then refused with a
503 (``Retry-After``), and ``/readyz`` reports ``directory: loading``. Admin tokens are never
restricted and never wait. After that, changes apply as they arrive (milliseconds behind
notifications).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy import (
    Column,
    DateTime,
    Index,
    MetaData,
    Select,
    String,
    Table,
    and_,
    bindparam,
    delete,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.auth import Principal, Scope
from shared.consumer import InboxConsumer
from shared.db import upsert
from shared.events import AllocationData, CloudEvent, RecipientData, Topic
from shared.problems import Problem

log = structlog.get_logger()

RECIPIENT_UPDATED = "recipient.updated"
ALLOCATION_UPDATED = "allocation.updated"
RESTRICTED_ROLES = frozenset({"social_worker", "early_help"})
DIRECTORY_WAIT_SECONDS = 5.0


def recipient_key(recipient_id: str) -> str:
    return f"recipient:{recipient_id}"


def pupil_key(upn: str) -> str:
    return f"pupil:{upn}"


@dataclass(frozen=True, slots=True)
class DirectoryTables:
    recipients: Table
    allocations: Table


def directory_tables(metadata: MetaData) -> DirectoryTables:
    """The two local tables, declared in each consuming service's own metadata and migrations."""
    recipients = Table(
        "directory_recipients",
        metadata,
        Column("id", String(100), primary_key=True),
        Column("role", String(30), nullable=False),
        Column("la_code", String(3)),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )
    allocations = Table(
        "directory_allocations",
        metadata,
        Column("upn", String(13), primary_key=True),
        Column("recipient", String(100), primary_key=True),
    )
    Index("ix_directory_allocations_recipient", allocations.c.recipient, allocations.c.upn)
    return DirectoryTables(recipients, allocations)


async def apply(conn: AsyncConnection, tables: DirectoryTables, events: Sequence[CloudEvent]) -> None:
    """Store the effect of directory events, in order (each replaces what it describes)."""
    now = dt.datetime.now(dt.UTC)
    for event in events:
        try:
            data: RecipientData | AllocationData | None = None
            if event.type == RECIPIENT_UPDATED:
                data = RecipientData.model_validate(event.data)
            elif event.type == ALLOCATION_UPDATED:
                data = AllocationData.model_validate(event.data)
        except ValidationError:
            log.error("directory_event_invalid", event_id=event.id, event_type=event.type)
            continue  # one bad event must not stall the directory (and with it every reader)
        if isinstance(data, RecipientData):
            r = data
            row = {"id": r.id, "role": r.role, "la_code": r.la_code, "updated_at": now}
            await upsert(conn, tables.recipients, [row], ["id"])
        elif isinstance(data, AllocationData):
            a = data
            await conn.execute(delete(tables.allocations).where(tables.allocations.c.upn == a.upn))
            ids = sorted(set(a.recipients))
            if ids:
                await conn.execute(tables.allocations.insert(), [{"upn": a.upn, "recipient": i} for i in ids])


class Directory:
    """This process's view of the directory: whether it has caught up, and who is restricted."""

    def __init__(self, tables: DirectoryTables, wait_seconds: float = DIRECTORY_WAIT_SECONDS) -> None:
        self.tables = tables
        self.loaded = asyncio.Event()  # set once the consumer has read to the end of the topic
        self.wait_seconds = wait_seconds

    async def wait_loaded(self) -> None:
        if self.loaded.is_set():
            return
        try:
            await asyncio.wait_for(self.loaded.wait(), timeout=self.wait_seconds)
        except TimeoutError:
            raise Problem(
                503, "unavailable", "Access rules not loaded yet",
                "the service has not yet read the directory of social workers, so it cannot tell what "
                "you may see; try again shortly",
                headers={"Retry-After": "5"},
            ) from None  # fmt: skip

    async def allowed_pupils(self, conn: AsyncConnection, principal: Principal) -> frozenset[str] | None:
        """The UPNs a restricted caller may see, or None when the caller is not restricted.

        Fails closed: a non-admin caller waits for the directory, then gets a 503.
        """
        if principal.has(Scope.ADMIN):
            return None
        await self.wait_loaded()
        rows = (await conn.execute(self._caller_query, {"sub": principal.sub})).all()
        if not rows or rows[0].role not in RESTRICTED_ROLES:
            return None
        return frozenset(r.upn for r in rows if r.upn is not None)

    @functools.cached_property
    def _caller_query(self) -> Select[tuple[str, str | None]]:
        """The caller's role and, for a restricted role, its allocated pupils, in one round trip (a
        row per pupil, or one row with no pupil); built once: this runs on every pupil-level read."""
        r, a = self.tables.recipients, self.tables.allocations
        joined = r.outerjoin(a, and_(a.c.recipient == r.c.id, r.c.role.in_(sorted(RESTRICTED_ROLES))))
        return select(r.c.role, a.c.upn).select_from(joined).where(r.c.id == bindparam("sub"))


def directory_of(state: dict[str, Any], tables: DirectoryTables) -> Directory:
    """The process's ``Directory`` (kept in ``Runtime.state["directory"]``, which ``/readyz`` reads)."""
    found = state.get("directory")
    if found is None:
        found = state["directory"] = Directory(tables)
    assert isinstance(found, Directory)
    return found


def restricted_only_to(allowed: frozenset[str] | None, upns: Iterable[str]) -> list[str]:
    """``upns`` a caller may see (all when unrestricted)."""
    return [u for u in upns if allowed is None or u in allowed]


def aggregate_refused() -> Problem:
    return Problem(
        403, "forbidden", "Forbidden",
        "a social worker or Early Help lead sees only their allocated pupils, not school or LA figures",
    )  # fmt: skip


def pupil_refused() -> Problem:
    """For acting on (writing about) a pupil not allocated to a restricted caller: decided before any
    lookup, so it says nothing about whether the pupil exists."""
    return Problem(403, "forbidden", "Forbidden", "the token may act only for the pupils allocated to it")


def ready_check(directory: Directory) -> str:
    return "ok" if directory.loaded.is_set() else "loading"


async def consume(
    bootstrap: str, group: str, engine: AsyncEngine, inbox: Table, directory: Directory
) -> None:
    """The directory consumer: its own consumer group (``<group>.directory``) so that a backlog of
    marks never delays it; ``directory.loaded`` is set the first time it reaches the end."""

    async def on_events(conn: AsyncConnection, events: list[CloudEvent]) -> None:
        await apply(conn, directory.tables, events)

    consumer = InboxConsumer(bootstrap, f"{group}.directory", [Topic.DIRECTORY], engine, inbox, on_events)
    task = asyncio.create_task(consumer.run())
    waiter = asyncio.create_task(consumer.caught_up.wait())
    try:
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            directory.loaded.set()
        await task
    finally:
        waiter.cancel()  # also when this is cancelled before the end is reached
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
