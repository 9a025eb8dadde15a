"""Recording a batch of register marks (CONTRACT.md "Marks rules").

Each mark is validated on its own — UPN and check letter, the code in force on that date, a
school session of this school, the pupil on roll that day, ``X`` only outside compulsory school
age, no date after today — and the valid ones are written, with their events, in one transaction.
A mark for a (pupil, date, session) already in the register is ``unchanged`` if its code is the
same and ``amended`` if not; the replaced code goes to ``mark_history`` and the event carries it
as ``previous_code``. Two marks for the same session in one batch are applied in order, as if
sent one after the other. ``minutes_late`` and ``recorded_at`` are stored but a difference in them
alone does not make an amendment: the register is the code.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails
from sqlalchemy import Text, and_, bindparam, cast, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.ingest import tables as t
from services.ingest.schemas import MarkIn, MarksResult, Rejection
from shared.calendar import AcademicYear, Calendars, Closure, SchoolCalendar, Term
from shared.codes import CodeError, lookup
from shared.csa import is_compulsory_school_age
from shared.db import asyncpg_connection, lock_schools
from shared.events import EventType, Topic, new_event_ids
from shared.outbox import enqueue_encoded
from shared.problems import Problem
from shared.upn import InvalidUPN, validate_upn

MAX_BATCH = 10_000
CSV_COLUMNS = ("upn", "date", "session", "code", "minutes_late")
SOURCE = "/rollcall/ingest"
_CHUNK = 2000


def parse_json(body: bytes) -> list[Any]:
    """The ``marks`` list of a JSON batch; a body that is not such an object is refused whole."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem(
            400, "malformed-json", "Body is not valid JSON", "the request body could not be parsed"
        ) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("marks"), list):
        raise Problem(
            422,
            "validation",
            "Request is not valid",
            'the body must be an object {"marks": [...]}',
            errors=[
                {"index": None, "field": "marks", "code": "missing", "detail": "a list of marks is required"}
            ],
        )
    extra = sorted(set(doc) - {"marks"})
    if extra:
        raise Problem(
            422,
            "validation",
            "Request is not valid",
            f"unexpected field(s): {', '.join(extra)}",
            errors=[
                {"index": None, "field": k, "code": "extra_forbidden", "detail": "unexpected field"}
                for k in extra
            ],
        )
    return _within_limit(doc["marks"])


def parse_csv(body: bytes) -> list[Any]:
    """Rows of a CSV batch with header ``upn,date,session,code[,minutes_late]`` as mark dicts."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Problem(400, "malformed-csv", "Body is not UTF-8 CSV", "the CSV must be UTF-8 encoded") from exc
    # strict: a broken quote is a 400, not a "row" that silently swallows every later line.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration as exc:
        raise Problem(422, "validation", "Request is not valid", "the CSV has no header row") from exc
    except csv.Error as exc:
        raise Problem(400, "malformed-csv", "Body is not valid CSV", "the CSV could not be parsed") from exc
    if tuple(header) not in (CSV_COLUMNS[:4], CSV_COLUMNS):
        raise Problem(
            422,
            "validation",
            "Request is not valid",
            f"the CSV header must be {','.join(CSV_COLUMNS[:4])}[,minutes_late]",
            errors=[
                {"index": None, "field": "header", "code": "csv_header", "detail": ",".join(header)[:200]}
            ],
        )
    rows: list[Any] = []
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue  # blank lines are not marks
            if len(cells) != len(header):
                rows.append(tuple(cells))  # rejected later with a clear reason (a tuple: never JSON)
                continue
            row = {k: v.strip() for k, v in zip(header, cells, strict=True)}
            if row.get("minutes_late") == "":
                del row["minutes_late"]
            rows.append(row)
    except csv.Error as exc:
        raise Problem(400, "malformed-csv", "Body is not valid CSV", "the CSV could not be parsed") from exc
    return _within_limit(rows)


def _within_limit(items: list[Any]) -> list[Any]:
    if len(items) > MAX_BATCH:
        raise Problem(
            413,
            "batch-too-large",
            "Batch too large",
            f"a batch holds at most {MAX_BATCH} marks; this one has {len(items)}",
        )
    return items


@dataclass(slots=True)
class Enrolment:
    admission_date: dt.date
    leaving_date: dt.date | None
    date_of_birth: dt.date

    def on_roll(self, day: dt.date) -> bool:
        return self.admission_date <= day and (self.leaving_date is None or day <= self.leaving_date)


@dataclass(slots=True)
class Outcome:
    accepted: int = 0
    amended: int = 0
    unchanged: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def result(self) -> MarksResult:
        return MarksResult(
            accepted=self.accepted,
            amended=self.amended,
            unchanged=self.unchanged,
            rejected=sorted(self.rejected, key=lambda r: r.index),
        )


def _reject(out: Outcome, index: int, raw: Any, detail: str) -> None:
    upn = raw.get("upn") if isinstance(raw, dict) else None
    code = raw.get("code") if isinstance(raw, dict) else None
    out.rejected.append(
        Rejection(
            index=index,
            upn=upn if isinstance(upn, str) else None,
            code=code if isinstance(code, str) else None,
            detail=detail,
        )
    )


_MARK: TypeAdapter[MarkIn] = TypeAdapter(MarkIn)
_MARK_LIST: TypeAdapter[list[MarkIn]] = TypeAdapter(list[MarkIn])
_NOT_A_ROW = "the CSV row does not have one value per header column"
_NOT_AN_OBJECT = "a mark must be an object with upn, date, session and code"


def _why(err: ErrorDetails, skip: int) -> str:
    where = ".".join(str(p) for p in err["loc"][skip:]) or "mark"
    return f"{where}: {err['msg']}"


def _shape(raw: Any) -> MarkIn | str:
    """The mark, or why its shape is wrong (one sentence naming the field)."""
    if not isinstance(raw, dict):
        return _NOT_A_ROW if isinstance(raw, tuple) else _NOT_AN_OBJECT
    try:
        return _MARK.validate_python(raw)
    except ValidationError as exc:
        return _why(exc.errors()[0], 0)


def _shape_all(raw_marks: list[Any]) -> list[MarkIn | str]:
    """``_shape`` of every mark, validated as one list (one call into pydantic-core, not 10,000).

    If any mark is invalid the list is validated again without those marks; the first error of
    each invalid mark (fields in declaration order) is its reason, exactly as ``_shape`` gives it.
    """
    shaped: list[MarkIn | str] = [
        "" if isinstance(raw, dict) else (_NOT_A_ROW if isinstance(raw, tuple) else _NOT_AN_OBJECT)
        for raw in raw_marks
    ]
    where = [i for i, raw in enumerate(raw_marks) if isinstance(raw, dict)]
    try:
        models = _MARK_LIST.validate_python([raw_marks[i] for i in where])
    except ValidationError as exc:
        bad: dict[int, str] = {}
        for err in exc.errors():
            position = err["loc"][0]
            if isinstance(position, int) and position not in bad:
                bad[position] = _why(err, 1)
        for position, reason in bad.items():
            shaped[where[position]] = reason
        where = [i for position, i in enumerate(where) if position not in bad]
        try:
            models = _MARK_LIST.validate_python([raw_marks[i] for i in where])
        except ValidationError:  # cannot happen (marks validate independently); be exact anyway
            return [_shape(raw) for raw in raw_marks]
    for i, model in zip(where, models, strict=True):
        shaped[i] = model
    return shaped


def calendars_from_rows(rows: Iterable[tuple[str, str, str]]) -> Calendars:
    """A school's calendars from its ``(year, terms JSON, closed JSON)`` rows."""
    built = []
    for year, terms, closed in rows:
        built.append(
            SchoolCalendar.build(
                AcademicYear.parse(year),
                tuple(
                    Term(dt.date.fromisoformat(x["start"]), dt.date.fromisoformat(x["end"]))
                    for x in orjson.loads(terms)
                ),
                tuple(
                    Closure(dt.date.fromisoformat(x["date"]), x["session"], x.get("reason", ""))
                    for x in orjson.loads(closed)
                ),
            )
        )
    return Calendars(built)


_CALENDARS: dict[tuple[tuple[str, str, str], ...], Calendars] = {}


def calendars_cached(rows: tuple[tuple[str, str, str], ...]) -> Calendars:
    """``calendars_from_rows``, remembered by the rows' text: a school's calendar changes a few
    times a year but every marks request needs it (building it is most of a one-mark POST). The
    JSON stays text until a calendar is new here, so a hit parses nothing."""
    found = _CALENDARS.get(rows)
    if found is None:
        if len(_CALENDARS) >= 4096:
            _CALENDARS.clear()
        found = _CALENDARS[rows] = calendars_from_rows(rows)
    return found


async def school_calendars(conn: AsyncConnection, urns: list[str]) -> dict[str, Calendars]:
    """Each of ``urns``' calendars (a school without one gets an empty ``Calendars``).

    One query, the JSON read as text; on PostgreSQL straight through asyncpg (SQLAlchemy's
    statement and JSON result handling was a fifth of a one-mark group commit's CPU)."""
    found: dict[str, list[tuple[str, str, str]]] = {urn: [] for urn in urns}
    driver = await asyncpg_connection(conn)
    if driver is not None:
        rows: Iterable[Any] = await driver.fetch(
            "SELECT school_urn, year, terms::text, closed::text FROM calendars "
            "WHERE school_urn = ANY($1::text[]) ORDER BY school_urn, year",
            urns,
        )
    else:
        c = t.calendars.c
        rows = await conn.execute(
            select(c.school_urn, c.year, cast(c.terms, Text), cast(c.closed, Text))
            .where(c.school_urn.in_(urns))
            .order_by(c.school_urn, c.year)
        )
    for urn, year, terms, closed in rows:
        found[urn].append((year, terms, closed))
    return {urn: calendars_cached(tuple(rows_of)) for urn, rows_of in found.items()}


ROLL_LOOKUP = 64
"""On PostgreSQL, a school with more pupils than this in one transaction has its whole roll read
by school, and one with more marks than this its register between the batch's first and last
date; the rest of the transaction is looked up by exact key.

Measured on a 5,000-pupil school (`/tmp` harness, stop 21): a 5,000-element ``upn = ANY($2)``
array cost ~4.5 ms just to send and plan, the enrolments of a whole-school batch 13–24 ms that
way against 6–8 ms by school; and once PostgreSQL switched the prepared statement to its generic
plan (after five executions) the register look-up of a resent day took 200 ms (250 pupils) to
4 s (5,000 pupils) instead of 4–35 ms. Exact keys (``unnest`` of key arrays joined on the primary
key) plan the same for any values — a nested loop of index probes, 0.2 ms for one mark, 3.5 ms for
500 — but a few thousand keys plan as a hash join over the whole table, hence reads by school for
big batches (a small school's 10,000-mark backfill included: its register over those dates is
about the batch's own marks)."""


def _by_school(pairs: Iterable[tuple[str, str]]) -> tuple[list[str], list[str], list[str]]:
    """(schools above ``ROLL_LOOKUP`` pupils, then the other pairs' schools and pupils as arrays)."""
    pupils: dict[str, set[str]] = {}
    for urn, upn in pairs:
        pupils.setdefault(urn, set()).add(upn)
    whole = sorted(urn for urn, upns in pupils.items() if len(upns) > ROLL_LOOKUP)
    few = [(urn, upn) for urn, upns in pupils.items() if len(upns) <= ROLL_LOOKUP for upn in upns]
    return whole, [k[0] for k in few], [k[1] for k in few]


async def _load_enrolments(
    conn: AsyncConnection, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], Enrolment]:
    """Enrolment and date of birth of each (school, pupil) in ``keys`` that is on the roll (and,
    on PostgreSQL, perhaps others of the same schools: see ``ROLL_LOOKUP``)."""
    found: dict[tuple[str, str], Enrolment] = {}
    if not keys:
        return found
    driver = await asyncpg_connection(conn)
    if driver is not None:
        whole, urns, upns = _by_school(keys)
        rows: list[Any] = []
        if whole:
            rows += await driver.fetch(
                "SELECT e.school_urn, e.upn, e.admission_date, e.leaving_date, p.date_of_birth "
                "FROM enrolments e JOIN pupils p ON p.upn = e.upn WHERE e.school_urn = ANY($1::text[])",
                whole,
            )
        if urns:
            rows += await driver.fetch(
                "SELECT e.school_urn, e.upn, e.admission_date, e.leaving_date, p.date_of_birth "
                "FROM unnest($1::text[], $2::text[]) AS k(school_urn, upn) "
                "JOIN enrolments e ON e.school_urn = k.school_urn AND e.upn = k.upn "
                "JOIN pupils p ON p.upn = e.upn",
                urns,
                upns,
            )
        for r in rows:
            found[(r[0], r[1])] = Enrolment(r[2], r[3], r[4])
        return found
    for urn in sorted({k[0] for k in keys}):
        chunked = sorted(k[1] for k in keys if k[0] == urn)
        for start in range(0, len(chunked), _CHUNK):
            chunk = chunked[start : start + _CHUNK]
            result = await conn.execute(
                select(
                    t.enrolments.c.upn,
                    t.enrolments.c.admission_date,
                    t.enrolments.c.leaving_date,
                    t.pupils.c.date_of_birth,
                )
                .join(t.pupils, t.pupils.c.upn == t.enrolments.c.upn)
                .where(t.enrolments.c.school_urn == urn, t.enrolments.c.upn.in_(chunk))
            )
            for r in result:
                found[(urn, r.upn)] = Enrolment(r.admission_date, r.leaving_date, r.date_of_birth)
    return found


MarkKey = tuple[str, str, dt.date, str]  # school, pupil, date, session
Existing = dict[MarkKey, tuple[str, int | None, dt.datetime | None, dt.datetime]]
_SELECT_MARK = (
    "SELECT m.school_urn, m.upn, m.date, m.session, m.code, m.minutes_late, m.recorded_at, m.received_at "
)
_MARKS_OF_SCHOOLS = (
    _SELECT_MARK + "FROM unnest($1::text[], $2::date[], $3::date[]) AS r(school_urn, first, last) "
    "JOIN marks m ON m.school_urn = r.school_urn AND m.date >= r.first AND m.date <= r.last"
)
_MARKS_AT_KEYS = (
    _SELECT_MARK + "FROM unnest($1::text[], $2::text[], $3::date[], $4::text[]) "
    "AS k(school_urn, upn, date, session) JOIN marks m ON m.school_urn = k.school_urn "
    "AND m.date = k.date AND m.session = k.session AND m.upn = k.upn"
)


async def _load_existing(conn: AsyncConnection, keys: set[MarkKey]) -> Existing:
    """The register's current marks at ``keys`` (and, on PostgreSQL, perhaps others of the same
    schools and dates: see ``ROLL_LOOKUP``)."""
    existing: Existing = {}
    driver = await asyncpg_connection(conn)
    if driver is not None:
        per_school = Counter(k[0] for k in keys)
        big = {urn for urn, marks in per_school.items() if marks > ROLL_LOOKUP}
        span: dict[str, tuple[dt.date, dt.date]] = {}
        exact: list[MarkKey] = []
        for key in keys:
            urn, day = key[0], key[2]
            if urn in big:
                first, last = span.get(urn, (day, day))
                span[urn] = (min(first, day), max(last, day))
            else:
                exact.append(key)
        rows: list[Any] = []
        if span:
            rows += await driver.fetch(
                _MARKS_OF_SCHOOLS,
                list(span),
                [v[0] for v in span.values()],
                [v[1] for v in span.values()],
            )
        if exact:
            rows += await driver.fetch(
                _MARKS_AT_KEYS,
                [k[0] for k in exact],
                [k[1] for k in exact],
                [k[2] for k in exact],
                [k[3] for k in exact],
            )
        for r in rows:
            existing[(r[0], r[1], r[2], r[3])] = (r[4], r[5], r[6], r[7])
        return existing
    m = t.marks.c
    pupils: dict[str, set[str]] = {}
    for key in keys:
        pupils.setdefault(key[0], set()).add(key[1])
    first, last = min(k[2] for k in keys), max(k[2] for k in keys)
    for urn in sorted(pupils):
        upns = sorted(pupils[urn])
        for start in range(0, len(upns), _CHUNK):
            chunk = upns[start : start + _CHUNK]
            result = await conn.execute(
                select(m.upn, m.date, m.session, m.code, m.minutes_late, m.recorded_at, m.received_at).where(
                    m.school_urn == urn, m.upn.in_(chunk), m.date >= first, m.date <= last
                )
            )
            for r in result:
                existing[(urn, r.upn, r.date, r.session)] = (
                    r.code,
                    r.minutes_late,
                    r.recorded_at,
                    r.received_at,
                )
    return existing


_MARK_COLUMNS = ("school_urn", "upn", "date", "session", "code", "minutes_late", "recorded_at", "received_at")
_HISTORY_COLUMNS = (*_MARK_COLUMNS, "replaced_at", "replaced_by")
MarkRow = tuple[str, str, dt.date, str, str, int | None, dt.datetime | None, dt.datetime]
HistoryRow = tuple[str, str, dt.date, str, str, int | None, dt.datetime | None, dt.datetime, dt.datetime, str]


async def _write(
    conn: AsyncConnection, inserts: list[MarkRow], updates: list[MarkRow], history: list[HistoryRow]
) -> None:
    """Store new marks, amended marks and the replaced codes.

    PostgreSQL: one binary COPY for the new marks and one for the history, and a prepared
    ``executemany`` for the amendments. The school's advisory lock is held and the current codes
    were read under it, so the rows inserted are known to be new: no ``ON CONFLICT`` is needed.
    """
    driver = await asyncpg_connection(conn)
    if driver is not None:
        if inserts:
            await driver.copy_records_to_table("marks", records=inserts, columns=_MARK_COLUMNS)
        if updates:
            await driver.executemany(
                "UPDATE marks SET code = $5, minutes_late = $6, recorded_at = $7, received_at = $8 "
                "WHERE school_urn = $1 AND upn = $2 AND date = $3 AND session = $4",
                updates,
            )
        if history:
            await driver.copy_records_to_table("mark_history", records=history, columns=_HISTORY_COLUMNS)
        return
    if inserts:
        await conn.execute(insert(t.marks), [dict(zip(_MARK_COLUMNS, r, strict=True)) for r in inserts])
    if updates:
        m = t.marks.c
        await conn.execute(
            update(t.marks)
            .where(
                and_(
                    m.school_urn == bindparam("k_urn"),
                    m.upn == bindparam("k_upn"),
                    m.date == bindparam("k_date"),
                    m.session == bindparam("k_session"),
                )
            )
            .values(
                code=bindparam("v_code"),
                minutes_late=bindparam("v_minutes_late"),
                recorded_at=bindparam("v_recorded_at"),
                received_at=bindparam("v_received_at"),
            ),
            [
                {
                    "k_urn": r[0],
                    "k_upn": r[1],
                    "k_date": r[2],
                    "k_session": r[3],
                    "v_code": r[4],
                    "v_minutes_late": r[5],
                    "v_recorded_at": r[6],
                    "v_received_at": r[7],
                }
                for r in updates
            ],
        )
    if history:
        await conn.execute(
            insert(t.mark_history), [dict(zip(_HISTORY_COLUMNS, r, strict=True)) for r in history]
        )


_RECORDED = EventType.MARK_RECORDED.value
_AMENDED = EventType.MARK_AMENDED.value
# A mark's CloudEvent in three parts: the event id between the head and the rest; the envelope up
# to the pupil (the same for a pupil's marks of one kind); the mark itself (the same for every
# pupil with that code that session).
_HEAD = b'{"specversion":"1.0","id":"'
_ENVELOPE = (
    b'","source":%b,"type":%b,"time":%b,"subject":%b,'
    b'"datacontenttype":"application/json","data":{"school_urn":%b,"upn":%b,'
)
_DATA = b'"date":"%b","session":%b,"code":%b,"category":%b,"minutes_late":%b,"recorded_at":%b%b}}'


class _Encoded:
    """``mark.recorded`` / ``mark.amended`` CloudEvents as JSON bytes, straight from a template.

    The same bytes as ``orjson.dumps`` of the envelope dict (``shared.events.new_event``) with
    ``MarkData`` as its ``data`` (a unit test compares them), without building two dicts per
    mark. Every string is JSON-encoded by orjson; the envelope part is made once per pupil and kind
    and the data part once per distinct mark in the batch, so a mark costs two look-ups and a join.
    """

    def __init__(self, time: str) -> None:
        self._json: dict[Any, bytes] = {}
        self._fixed = (orjson.dumps(SOURCE), orjson.dumps(time))
        self._envelopes: dict[tuple[str, str, str], bytes] = {}
        self._data: dict[tuple[Any, ...], bytes] = {}

    def _j(self, value: Any) -> bytes:
        found = self._json.get(value)
        if found is None:
            found = self._json[value] = orjson.dumps(value)
        return found

    def event(
        self, event_id: str, kind: str, urn: str, upn: str, mark: MarkIn, category: str, previous: str | None
    ) -> bytes:
        envelope = self._envelopes.get((kind, urn, upn))
        if envelope is None:
            source, time = self._fixed
            upn_json = self._j(upn)
            envelope = _ENVELOPE % (source, self._j(kind), time, upn_json, self._j(urn), upn_json)
            self._envelopes[(kind, urn, upn)] = envelope
        key = (
            mark["date"],
            mark["session"],
            mark["code"],
            category,
            mark.get("minutes_late"),
            mark.get("recorded_at"),
            previous,
        )
        data = self._data.get(key)
        if data is None:
            data = self._data[key] = self._encode_data(*key)
        return b"".join((_HEAD, event_id.encode(), envelope, data))

    def _encode_data(
        self,
        day: dt.date,
        session: str,
        code: str,
        category: str,
        late: int | None,
        recorded_at: dt.datetime | None,
        previous: str | None,
    ) -> bytes:
        j = self._j
        return _DATA % (
            day.isoformat().encode(),
            j(session),
            j(code),
            j(category),
            b"null" if late is None else b"%d" % late,
            b"null" if recorded_at is None else orjson.dumps(recorded_at.isoformat()),
            b"" if previous is None else b',"previous_code":' + j(previous),
        )


async def record_marks(
    conn: AsyncConnection, urn: str, raw_marks: list[Any], today: dt.date, now: dt.datetime
) -> MarksResult:
    """Validate and store a batch inside the caller's transaction; events go to the outbox."""
    return (await record_batches(conn, [(urn, raw_marks)], today, now))[0]


async def record_batches(
    conn: AsyncConnection, batches: list[tuple[str, list[Any]]], today: dt.date, now: dt.datetime
) -> list[MarksResult]:
    """``record_marks`` for several batches ``(school URN, marks)``, in order, with one set of
    queries for them all (group commit: many small requests, perhaps of many schools).

    The result is what sending them one after another would give: a later batch's mark for the
    same session amends an earlier one's. Each result's rejection indexes are its own batch's.
    Every school concerned is locked first, in one fixed order (no deadlock with other writers).
    """
    raw_marks = [raw for _, batch in batches for raw in batch]
    outs = [Outcome() for _ in batches]
    owner: list[int] = []  # the batch of each mark
    offset: list[int] = []  # that batch's first index
    start = 0
    for number, (_, batch) in enumerate(batches):
        owner.extend([number] * len(batch))
        offset.append(start)
        start += len(batch)

    def reject(index: int, raw: Any, detail: str) -> None:
        number = owner[index]
        _reject(outs[number], index - offset[number], raw, detail)

    candidates: list[tuple[int, MarkIn, str, str]] = []  # index, mark, normalised upn, category
    # A batch repeats each pupil (one mark per session) and each (code, date): check each once.
    upn_memo: dict[str, str | InvalidUPN] = {}
    code_memo: dict[tuple[str, dt.date], str | CodeError] = {}
    for index, shaped in enumerate(_shape_all(raw_marks)):
        if isinstance(shaped, str):
            reject(index, raw_marks[index], shaped)
            continue
        upn_or_error = upn_memo.get(shaped["upn"])
        if upn_or_error is None:
            try:
                upn_or_error = validate_upn(shaped["upn"])
            except InvalidUPN as exc:
                upn_or_error = exc
            upn_memo[shaped["upn"]] = upn_or_error
        if isinstance(upn_or_error, InvalidUPN):
            reject(index, raw_marks[index], f"upn: {upn_or_error.detail}")
            continue
        code_key = (shaped["code"], shaped["date"])
        category = code_memo.get(code_key)
        if category is None:
            try:
                category = lookup(*code_key).category.value
            except CodeError as exc:
                category = exc
            code_memo[code_key] = category
        if isinstance(category, CodeError):
            reject(index, raw_marks[index], f"code: {category.detail}")
            continue
        if shaped["date"] > today:
            reject(index, raw_marks[index], "date: a mark cannot be recorded for a date after today")
            continue
        candidates.append((index, shaped, upn_or_error, category))

    urns = sorted({urn for urn, _ in batches})
    await lock_schools(conn, urns)
    calendars = await school_calendars(conn, urns)
    enrolled = await _load_enrolments(conn, {(batches[owner[c[0]]][0], c[2]) for c in candidates})

    valid: list[tuple[int, str, MarkIn, str, str]] = []
    for index, mark, upn, category in candidates:
        raw = raw_marks[index]
        urn = batches[owner[index]][0]
        day = mark["date"]
        if not calendars[urn].is_school_session(day, mark["session"]):
            reject(index, raw, f"date: {day} {mark['session']} is not a school session of this school")
            continue
        enrolment = enrolled.get((urn, upn))
        if enrolment is None or not enrolment.on_roll(day):
            reject(index, raw, "upn: the pupil is not on this school's roll on that date")
            continue
        if mark["code"] == "X" and is_compulsory_school_age(enrolment.date_of_birth, day):
            reject(index, raw, "code: X is only for pupils outside compulsory school age")
            continue
        valid.append((index, urn, mark, upn, category))

    if not valid:
        return [out.result() for out in outs]
    existing = await _load_existing(conn, {(v[1], v[3], v[2]["date"], v[2]["session"]) for v in valid})

    inserts: dict[MarkKey, MarkRow] = {}
    updates: dict[MarkKey, MarkRow] = {}
    history: list[HistoryRow] = []
    events: list[tuple[str, str, str, bytes]] = []  # event id, key, type, CloudEvent JSON
    ids = iter(new_event_ids(len(valid)))
    encoded = _Encoded(dt.datetime.now(dt.UTC).isoformat())
    for index, urn, mark, upn, category in valid:
        out = outs[owner[index]]
        day, session, code, late, recorded_at = (
            mark["date"],
            mark["session"],
            mark["code"],
            mark.get("minutes_late"),
            mark.get("recorded_at"),
        )
        key = (urn, upn, day, session)
        before = existing.get(key)
        if before is not None and before[0] == code:
            out.unchanged += 1
            continue
        row: MarkRow = (urn, upn, day, session, code, late, recorded_at, now)
        if before is None:
            out.accepted += 1
            inserts[key] = row
            kind = _RECORDED
            previous = None
        else:
            out.amended += 1
            history.append((urn, upn, day, session, before[0], before[1], before[2], before[3], now, code))
            kind = _AMENDED
            previous = before[0]
            if key in inserts:
                inserts[key] = row  # amended within this batch: insert the final code once
            else:
                updates[key] = row
        event_id = next(ids)
        events.append(
            (event_id, upn, kind, encoded.event(event_id, kind, urn, upn, mark, category, previous))
        )
        existing[key] = (code, late, recorded_at, now)

    await _write(conn, list(inserts.values()), list(updates.values()), history)
    await enqueue_encoded(conn, t.outbox, Topic.MARKS, events)
    return [out.result() for out in outs]
