"""Push the synthetic borough through the public ingest API, the way MIS systems would.

Order of calls (CONTRACT.md "ingest"):

1. **Registry**, school by school (each school generated, sent, and reduced to its compact
   registers before the next): ``PUT /v1/schools/{urn}`` with an LA admin token;
   ``PUT /v1/schools/{urn}/calendar/2024-25`` and ``PUT /v1/schools/{urn}/pupils`` (at most
   5,000 pupils a request) with the school's own token (``schools=[urn]``, scopes
   ``marks:write pupils:write``) as its MIS would; then ``PUT /v1/pupils/{upn}/care`` with the
   admin token for every pupil with a care flag or part-time timetable (once per pupil, after
   the pupil is on a roll).
2. **Marks**, in date order: one Monday–Sunday week (or one day, ``period="day"``) across all
   schools, then the next. For each school and week the day's first marks go first (with the
   provisional ``N`` where the school had no reason yet), in batches of at most `batch`, then
   that week's corrections of earlier ``N``s in their own batches — so a correction never
   shares a request with the mark it amends and always follows it. A school's batches are
   sent one after another; different schools' batches run in parallel, at most `concurrency`
   requests in flight.

Tokens are HS256, signed with ``ROLLCALL_JWT_SECRET`` (default: the services' development
secret, `shared.settings.DEV_JWT_SECRET`). Bodies are serialised with orjson and sent as
``content=`` bytes with ``content-type: application/json``. Any non-2xx response, or any mark
in ``rejected``, stops the load with `LoadError` carrying the problem JSON (the CLI exits non-zero). A refused
connection or a 503 is retried a few times with backoff: neither means the batch was applied.

Loading into an empty ingest store, ``accepted`` should equal the first marks sent and
``amended`` the corrections. Loading the same range again gives ``unchanged`` for everything
except the provisional Ns, which are replayed (the N amends the corrected code, then the
correction amends it back). UPNs are a function of school and serial, so a store should hold
one (seed, scale) only: a different scale gives different children the same UPNs.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import httpx
import orjson
from tqdm import tqdm

from borough.generate import Borough
from borough.registers import Mark, SchoolRegisters
from borough.terms import YEAR
from shared.auth import mint_token
from shared.settings import DEV_JWT_SECRET

ADMIN_SCOPES = ("admin", "pupils:write", "marks:write", "care:write")
SCHOOL_SCOPES = ("marks:write", "pupils:write")
ROSTER_CHUNK = 5000
MAX_BATCH = 10_000
TOKEN_TTL = 12 * 3600
_JSON = {"content-type": "application/json"}


class LoadError(RuntimeError):
    """A request failed or a mark was rejected; `problem` is the response body."""

    def __init__(self, what: str, status: int, problem: Any) -> None:
        super().__init__(f"{what}: HTTP {status}")
        self.what = what
        self.status = status
        self.problem = problem


@dataclass
class LoadStats:
    """What was sent and what ingest said about it."""

    schools: int = 0
    pupils: int = 0
    enrolments: int = 0
    care: int = 0
    marks: int = 0
    accepted: int = 0
    amended: int = 0
    unchanged: int = 0
    requests: int = 0
    seconds: float = 0.0
    marks_seconds: float = 0.0
    upns: set[str] = field(default_factory=set, repr=False)

    @property
    def marks_per_second(self) -> float:
        return self.marks / self.marks_seconds if self.marks_seconds else 0.0

    def summary(self) -> str:
        return (
            f"schools {self.schools}, pupils {self.pupils:,} ({self.enrolments:,} enrolments), "
            f"care records {self.care:,}\n"
            f"marks sent {self.marks:,}: accepted {self.accepted:,}, amended {self.amended:,}, "
            f"unchanged {self.unchanged:,}\n"
            f"{self.requests:,} requests in {self.seconds:.1f} s; marks phase {self.marks_seconds:.1f} s, "
            f"{self.marks_per_second:,.0f} marks/s"
        )


class Loader:
    """One load of the borough into one ingest service."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        borough: Borough,
        *,
        secret: str | None = None,
        batch: int = MAX_BATCH,
        concurrency: int = 4,
        period: str = "week",
        progress: bool = True,
    ) -> None:
        if not 1 <= batch <= MAX_BATCH:
            raise ValueError(f"batch must be 1–{MAX_BATCH}")
        if period not in ("day", "week"):
            raise ValueError("period is 'day' or 'week'")
        self.client = client
        self.borough = borough
        self.secret = secret or os.environ.get("ROLLCALL_JWT_SECRET", DEV_JWT_SECRET)
        self.batch = batch
        self.period = period
        self.progress = progress
        self.stats = LoadStats()
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._admin = mint_token(self.secret, "borough-loader", ADMIN_SCOPES, ttl_seconds=TOKEN_TTL)
        self._school_tokens: dict[str, str] = {}
        self._care_sent: set[str] = set()

    def _school_token(self, urn: str) -> str:
        token = self._school_tokens.get(urn)
        if token is None:
            token = mint_token(self.secret, f"mis-{urn}", SCHOOL_SCOPES, schools=[urn], ttl_seconds=TOKEN_TTL)
            self._school_tokens[urn] = token
        return token

    async def _send(self, method: str, url: str, body: object, token: str, what: str) -> Any:
        content = orjson.dumps(body)
        headers = {**_JSON, "authorization": f"Bearer {token}"}
        response: httpx.Response | None = None
        for attempt in range(6):
            async with self._slots:
                try:
                    response = await self.client.request(method, url, content=content, headers=headers)
                except httpx.ConnectError:
                    if attempt == 5:
                        raise
                    response = None
            self.stats.requests += 1
            if response is not None and (response.status_code not in (429, 503) or attempt == 5):
                break
            await asyncio.sleep(_retry_after(response, 0.5 * 2**attempt))
        if response is None:  # pragma: no cover - the loop either breaks with a response or raises
            raise LoadError(f"{method} {url} ({what})", 0, "no response")
        if not 200 <= response.status_code < 300:
            try:
                problem = response.json()
            except ValueError:
                problem = response.text
            raise LoadError(f"{method} {url} ({what})", response.status_code, problem)
        return response.json() if response.content else None

    # -- registry ------------------------------------------------------------------------------

    async def _register_school(self, registers: dict[str, SchoolRegisters], school_index: int) -> None:
        year = self.borough.school_year(self.borough.schools[school_index])
        school = year.school
        urn = school.urn
        token = self._school_token(urn)
        await self._send("PUT", f"/v1/schools/{urn}", school.body(), self._admin, school.name)
        await self._send("PUT", f"/v1/schools/{urn}/calendar/{YEAR}", year.calendar.body(), token, "calendar")
        bodies = [e.body() for e in year.enrolments]
        for i in range(0, len(bodies), ROSTER_CHUNK):
            await self._send(
                "PUT", f"/v1/schools/{urn}/pupils", {"pupils": bodies[i : i + ROSTER_CHUNK]}, token, "roll"
            )
        for e in year.enrolments:
            care = e.pupil.care
            upn = e.pupil.upn
            self.stats.upns.add(upn)
            if care.any and upn not in self._care_sent:
                self._care_sent.add(upn)
                await self._send("PUT", f"/v1/pupils/{upn}/care", care.body(), self._admin, "care")
                self.stats.care += 1
        self.stats.schools += 1
        self.stats.enrolments += len(year.enrolments)
        registers[urn] = year.registers

    async def register(self) -> dict[str, SchoolRegisters]:
        """Send every school, calendar, roll and care record; return the schools' registers."""
        registers: dict[str, SchoolRegisters] = {}
        schools = self.borough.schools
        bar = tqdm(total=len(schools), unit="school", desc="registry", disable=not self.progress)
        try:
            pending: set[asyncio.Task[None]] = set()
            async with asyncio.TaskGroup() as group:
                for index in range(len(schools)):
                    # Generation is CPU-bound: keep only a few schools generated but unsent.
                    while len(pending) >= 4:
                        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                        pending = {t for t in pending if not t.done()}
                    task = group.create_task(self._register_school(registers, index))
                    task.add_done_callback(lambda _t: bar.update(1))
                    pending.add(task)
        finally:
            bar.close()
        self.stats.pupils = len(self.stats.upns)
        # Keep the registers in the schools' order.
        return {s.urn: registers[s.urn] for s in schools if s.urn in registers}

    # -- marks ---------------------------------------------------------------------------------

    def _periods(self, start: date, end: date) -> list[tuple[date, date]]:
        if self.period == "day":
            return [
                (start + timedelta(days=i), start + timedelta(days=i)) for i in range((end - start).days + 1)
            ]
        out: list[tuple[date, date]] = []
        monday = start - timedelta(days=start.weekday())
        while monday <= end:
            out.append((max(start, monday), min(end, monday + timedelta(days=6))))
            monday += timedelta(days=7)
        return out

    def _batches(self, marks: Sequence[Mark]) -> list[Sequence[Mark]]:
        return [marks[i : i + self.batch] for i in range(0, len(marks), self.batch)]

    async def _send_marks(self, urn: str, batches: list[Sequence[Mark]], bar: tqdm) -> None:
        token = self._school_token(urn)
        for marks in batches:
            result = await self._send("POST", f"/v1/schools/{urn}/marks", {"marks": marks}, token, "marks")
            if result.get("rejected"):
                raise LoadError(f"POST /v1/schools/{urn}/marks", 200, {"rejected": result["rejected"][:20]})
            counted = result["accepted"] + result["amended"] + result["unchanged"]
            if counted != len(marks):
                raise LoadError(
                    f"POST /v1/schools/{urn}/marks: counts do not add up to {len(marks)}", 200, result
                )
            self.stats.accepted += result["accepted"]
            self.stats.amended += result["amended"]
            self.stats.unchanged += result["unchanged"]
            self.stats.marks += len(marks)
            bar.update(len(marks))

    @staticmethod
    def count_marks(registers: dict[str, SchoolRegisters], start: date, end: date) -> int:
        """How many marks (first marks and corrections) fall in [start, end]."""
        total = 0
        for school in registers.values():
            days = school.day_range(start, end)
            lo, hi = 2 * days.start, 2 * days.stop
            for r in school.registers:
                segment = r.codes[lo:hi]
                total += len(segment) - segment.count(0)
            total += sum(len(school.corrections(d)) for d in days)
        return total

    async def send_marks(self, registers: dict[str, SchoolRegisters], start: date, end: date) -> None:
        """Every mark from `start` to `end`, period by period across all schools."""
        began = time.perf_counter()
        bar = tqdm(
            total=self.count_marks(registers, start, end),
            unit="mark",
            unit_scale=True,
            desc="marks",
            disable=not self.progress,
        )
        try:
            for first, last in self._periods(start, end):
                async with asyncio.TaskGroup() as group:
                    for urn, school in registers.items():
                        days = school.day_range(first, last)
                        if not days:
                            continue
                        marks: list[Mark] = []
                        corrections: list[Mark] = []
                        for d in days:
                            marks += school.day_marks(d)
                            corrections += school.corrections(d)
                        batches = self._batches(marks) + self._batches(corrections)
                        if batches:
                            group.create_task(self._send_marks(urn, batches, bar))
        finally:
            bar.close()
            self.stats.marks_seconds = time.perf_counter() - began


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real exception inside (possibly nested) task-group exception groups."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def load(
    ingest: str,
    *,
    seed: int = 2024,
    scale: float = 1.0,
    start: date | None = None,
    end: date | None = None,
    batch: int = MAX_BATCH,
    concurrency: int = 4,
    period: str = "week",
    secret: str | None = None,
    progress: bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
) -> LoadStats:
    """Load the borough (seed, scale) into the ingest service at `ingest`; marks from `start` to `end`.

    `end` defaults to the last day of the school year or today, whichever is earlier (ingest
    refuses marks dated in the future). `transport` lets tests run against an in-process app.
    """
    began = time.perf_counter()
    borough = Borough(seed, scale)
    first_day = min(s for s, _ in borough.calendar(borough.schools[0]).terms)
    last_day = max(e for _, e in borough.calendar(borough.schools[0]).terms)
    start = start or first_day
    end = end or min(last_day, date.today())
    limits = httpx.Limits(max_connections=max(1, concurrency), max_keepalive_connections=max(1, concurrency))
    async with httpx.AsyncClient(
        base_url=ingest.rstrip("/"), timeout=httpx.Timeout(300.0), limits=limits, transport=transport
    ) as client:
        loader = Loader(
            client,
            borough,
            secret=secret,
            batch=batch,
            concurrency=concurrency,
            period=period,
            progress=progress,
        )
        try:
            registers = await loader.register()
            await loader.send_marks(registers, start, end)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        finally:
            loader.stats.seconds = time.perf_counter() - began
    return loader.stats


def _retry_after(response: httpx.Response | None, default: float) -> float:
    """How long to wait before retrying: the server's ``Retry-After`` (a 429 or 503), else ``default``."""
    value = response.headers.get("retry-after", "") if response is not None else ""
    return float(value) if value.isdigit() else default
