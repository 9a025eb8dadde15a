"""Group commit for small marks batches: many requests, one transaction.

A small MIS posts a mark or a handful at a time. Each such request on its own would pay a whole
transaction — a pooled connection's ping, BEGIN, the school look-up, the school's lock, the
calendar, enrolment and register reads, two COPYs and a durable COMMIT — for one row, and the
school lock serialises a school's requests behind each other's round trips. Instead, requests of
up to ``SMALL_BATCH`` marks queue here; a worker takes everything queued (up to ``GROUP_MARKS``
marks) and records it in one transaction: all of them through ``marks.record_batches``, in
arrival order (so the results are those of sending them one after another), with one query per
kind for all their schools, each school locked once, in one fixed order (no deadlock with
another group or process).
Every request is answered only after the COMMIT, so a 200 still means durable with its events.

One group is in flight at a time (``WORKERS``): what arrives meanwhile waits and goes in the next
group, so the busier the API the larger the groups. With two in flight (before issue 8's stop 18)
the second took whatever had just arrived, often a request or two: as ingest's own CPU per request
fell, the transactions per second rose and PostgreSQL's CPU per mark doubled, and the one-mark
p99 at 1,000 POSTs/s was 100-150 ms against 40-60 ms with one (README "Benchmarks: ingest").

A request that fails inside a group (a database error) must not fail the others: the group is
retried one request per transaction, and only the failing request gets the error. A school that
does not exist (404) or that the token may not act for (403) is answered as on the direct path.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.ingest import marks
from services.ingest import tables as t
from services.ingest.schemas import MarksResult
from shared.auth import Principal, forbidden
from shared.db import asyncpg_connection
from shared.problems import Problem
from shared.service import Runtime

SMALL_BATCH = 500  # requests with more marks than this have a transaction to themselves
GROUP_MARKS = 10_000  # the most marks one group transaction takes
WORKERS = 1  # groups in flight at once (see the module docstring)


@dataclass(eq=False)
class _Request:
    principal: Principal
    urn: str
    raw: list[Any]
    future: asyncio.Future[MarksResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class MarksCommitter:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._queue: list[_Request] = []
        self._ready = asyncio.Event()
        self._started = False

    async def submit(self, principal: Principal, urn: str, raw: list[Any]) -> MarksResult:
        """Record ``raw`` for ``urn`` in the next group; returns once it is committed."""
        request = _Request(principal, urn, raw)
        self._queue.append(request)
        self._ready.set()
        if not self._started:
            self._started = True
            self._rt.tasks.extend(asyncio.create_task(self._work()) for _ in range(WORKERS))
        return await request.future

    def _take(self) -> list[_Request]:
        group: list[_Request] = []
        size = 0
        while self._queue and (not group or size + len(self._queue[0].raw) <= GROUP_MARKS):
            request = self._queue.pop(0)
            group.append(request)
            size += len(request.raw)
        return group

    async def _work(self) -> None:
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            group = self._take()
            try:
                await self._commit(group)
            except asyncio.CancelledError:
                for request in group:
                    request.future.cancel()
                raise

    async def _commit(self, group: list[_Request]) -> None:
        answers: list[MarksResult | Exception]
        try:
            answers = await self._in_one_transaction(group)
        except Exception as exc:  # noqa: BLE001 - find the failing request: one transaction each
            if len(group) == 1:
                answers = [exc]
            else:
                answers = []
                for request in group:
                    try:
                        answers.extend(await self._in_one_transaction([request]))
                    except Exception as own:  # noqa: BLE001 - that request's own error
                        answers.append(own)
        for request, answer in zip(group, answers, strict=True):
            _settle(request, answer)

    async def _in_one_transaction(self, group: list[_Request]) -> list[MarksResult | Exception]:
        rt = self._rt
        answers: dict[int, MarksResult | Exception] = {}
        async with rt.engine.begin() as conn:
            las = await school_las(conn, sorted({r.urn for r in group}))
            for number, request in enumerate(group):
                la = las.get(request.urn)
                if la is None:
                    answers[number] = Problem(404, "not-found", "Not found", "no school with this URN")
                elif not request.principal.may_act_for_school(request.urn, la):
                    answers[number] = forbidden("the token may not act for this school")
            numbers = [n for n in range(len(group)) if n not in answers]
            if numbers:
                results = await marks.record_batches(
                    conn, [(group[n].urn, group[n].raw) for n in numbers], rt.today(), rt.now()
                )
                answers.update(zip(numbers, results, strict=True))
        return [answers[n] for n in range(len(group))]


async def school_las(conn: AsyncConnection, urns: list[str]) -> dict[str, str]:
    """The LA code of each of ``urns`` that is a known school (through asyncpg on PostgreSQL:
    SQLAlchemy's expanding ``IN`` cost a one-mark group more than the query)."""
    driver = await asyncpg_connection(conn)
    if driver is not None:
        rows = await driver.fetch("SELECT urn, la_code FROM schools WHERE urn = ANY($1::text[])", urns)
        return {r[0]: r[1] for r in rows}
    s = t.schools.c
    return {r.urn: r.la_code for r in await conn.execute(select(s.urn, s.la_code).where(s.urn.in_(urns)))}


def _settle(request: _Request, answer: MarksResult | Exception) -> None:
    if request.future.done():  # the client went away; its marks are recorded all the same
        return
    if isinstance(answer, Exception):
        request.future.set_exception(answer)
    else:
        request.future.set_result(answer)


def committer(runtime: Runtime) -> MarksCommitter:
    """The process's committer (one per runtime, made on first use)."""
    found = runtime.state.get("marks_committer")
    if found is None:
        found = runtime.state["marks_committer"] = MarksCommitter(runtime)
    assert isinstance(found, MarksCommitter)
    return found
