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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import Row, and_, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.ingest import tables as t
from services.ingest.schemas import MarkIn, MarksResult, Rejection
from shared.calendar import AcademicYear, Calendars, Closure, SchoolCalendar, Term
from shared.codes import CodeError, lookup
from shared.csa import is_compulsory_school_age
from shared.db import lock_school
from shared.events import EventType, Topic, new_event
from shared.outbox import enqueue, outbox_records
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


def _shape(raw: Any) -> MarkIn | str:
    """The mark, or why its shape is wrong (one sentence naming the field)."""
    if not isinstance(raw, dict):
        return (
            "the CSV row does not have one value per header column"
            if isinstance(raw, tuple)
            else "a mark must be an object with upn, date, session and code"
        )
    try:
        return MarkIn.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "mark"
        return f"{where}: {err['msg']}"


def calendars_from_rows(rows: Iterable[Row[Any, Any, Any]]) -> Calendars:
    built = []
    for row in rows:
        built.append(
            SchoolCalendar.build(
                AcademicYear.parse(row.year),
                tuple(
                    Term(dt.date.fromisoformat(x["start"]), dt.date.fromisoformat(x["end"]))
                    for x in row.terms
                ),
                tuple(
                    Closure(dt.date.fromisoformat(x["date"]), x["session"], x.get("reason", ""))
                    for x in row.closed
                ),
            )
        )
    return Calendars(built)


async def _load_enrolments(conn: AsyncConnection, urn: str, upns: Sequence[str]) -> dict[str, Enrolment]:
    found: dict[str, Enrolment] = {}
    for start in range(0, len(upns), _CHUNK):
        chunk = upns[start : start + _CHUNK]
        rows = await conn.execute(
            select(
                t.enrolments.c.upn,
                t.enrolments.c.admission_date,
                t.enrolments.c.leaving_date,
                t.pupils.c.date_of_birth,
            )
            .join(t.pupils, t.pupils.c.upn == t.enrolments.c.upn)
            .where(t.enrolments.c.school_urn == urn, t.enrolments.c.upn.in_(chunk))
        )
        for r in rows:
            found[r.upn] = Enrolment(r.admission_date, r.leaving_date, r.date_of_birth)
    return found


async def _load_existing(
    conn: AsyncConnection, urn: str, upns: Sequence[str], first: dt.date, last: dt.date
) -> dict[tuple[str, dt.date, str], tuple[str, int | None, dt.datetime | None, dt.datetime]]:
    m = t.marks.c
    existing: dict[tuple[str, dt.date, str], tuple[str, int | None, dt.datetime | None, dt.datetime]] = {}
    for start in range(0, len(upns), _CHUNK):
        chunk = upns[start : start + _CHUNK]
        rows = await conn.execute(
            select(m.upn, m.date, m.session, m.code, m.minutes_late, m.recorded_at, m.received_at).where(
                m.school_urn == urn, m.upn.in_(chunk), m.date >= first, m.date <= last
            )
        )
        for r in rows:
            existing[(r.upn, r.date, r.session)] = (r.code, r.minutes_late, r.recorded_at, r.received_at)
    return existing


async def record_marks(
    conn: AsyncConnection, urn: str, raw_marks: list[Any], today: dt.date, now: dt.datetime
) -> MarksResult:
    """Validate and store a batch inside the caller's transaction; events go to the outbox."""
    out = Outcome()
    candidates: list[tuple[int, MarkIn, str, str]] = []  # index, mark, normalised upn, category
    for index, raw in enumerate(raw_marks):
        shaped = _shape(raw)
        if isinstance(shaped, str):
            _reject(out, index, raw, shaped)
            continue
        try:
            upn = validate_upn(shaped.upn)
        except InvalidUPN as exc:
            _reject(out, index, raw, f"upn: {exc.detail}")
            continue
        try:
            code = lookup(shaped.code, shaped.date)
        except CodeError as exc:
            _reject(out, index, raw, f"code: {exc.detail}")
            continue
        if shaped.date > today:
            _reject(out, index, raw, "date: a mark cannot be recorded for a date after today")
            continue
        candidates.append((index, shaped, upn, code.category.value))

    await lock_school(conn, urn)
    calendar_rows = (
        await conn.execute(
            select(t.calendars.c.year, t.calendars.c.terms, t.calendars.c.closed).where(
                t.calendars.c.school_urn == urn
            )
        )
    ).all()
    calendars = calendars_from_rows(calendar_rows)
    upns = sorted({c[2] for c in candidates})
    enrolled = await _load_enrolments(conn, urn, upns)

    valid: list[tuple[MarkIn, str, str]] = []
    for index, mark, upn, category in candidates:
        raw = raw_marks[index]
        if not calendars.is_school_session(mark.date, mark.session):
            _reject(
                out, index, raw, f"date: {mark.date} {mark.session} is not a school session of this school"
            )
            continue
        enrolment = enrolled.get(upn)
        if enrolment is None or not enrolment.on_roll(mark.date):
            _reject(out, index, raw, "upn: the pupil is not on this school's roll on that date")
            continue
        if mark.code == "X" and is_compulsory_school_age(enrolment.date_of_birth, mark.date):
            _reject(out, index, raw, "code: X is only for pupils outside compulsory school age")
            continue
        valid.append((mark, upn, category))

    if not valid:
        return out.result()
    first = min(v[0].date for v in valid)
    last = max(v[0].date for v in valid)
    existing = await _load_existing(conn, urn, sorted({v[1] for v in valid}), first, last)

    inserts: dict[tuple[str, dt.date, str], dict[str, Any]] = {}
    updates: dict[tuple[str, dt.date, str], dict[str, Any]] = {}
    history: list[dict[str, Any]] = []
    events: list[tuple[str, dict[str, Any]]] = []
    for mark, upn, category in valid:
        key = (upn, mark.date, mark.session)
        row = {
            "school_urn": urn,
            "upn": upn,
            "date": mark.date,
            "session": mark.session,
            "code": mark.code,
            "minutes_late": mark.minutes_late,
            "recorded_at": mark.recorded_at,
            "received_at": now,
        }
        before = existing.get(key)
        if before is not None and before[0] == mark.code:
            out.unchanged += 1
            continue
        data: dict[str, Any] = {
            "school_urn": urn,
            "upn": upn,
            "date": mark.date.isoformat(),
            "session": mark.session,
            "code": mark.code,
            "category": category,
            "minutes_late": mark.minutes_late,
            "recorded_at": mark.recorded_at.isoformat() if mark.recorded_at else None,
        }
        if before is None:
            out.accepted += 1
            inserts[key] = row
            events.append((upn, new_event(EventType.MARK_RECORDED, SOURCE, data, subject=upn)))
        else:
            out.amended += 1
            history.append(
                {
                    "school_urn": urn,
                    "upn": upn,
                    "date": mark.date,
                    "session": mark.session,
                    "code": before[0],
                    "minutes_late": before[1],
                    "recorded_at": before[2],
                    "received_at": before[3],
                    "replaced_at": now,
                    "replaced_by": mark.code,
                }
            )
            data["previous_code"] = before[0]
            events.append((upn, new_event(EventType.MARK_AMENDED, SOURCE, data, subject=upn)))
            if key in inserts:
                inserts[key] = row  # amended within this batch: insert the final code once
            else:
                updates[key] = row
        existing[key] = (mark.code, mark.minutes_late, mark.recorded_at, now)

    if inserts:
        await conn.execute(insert(t.marks), list(inserts.values()))
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
                    "k_urn": r["school_urn"],
                    "k_upn": r["upn"],
                    "k_date": r["date"],
                    "k_session": r["session"],
                    "v_code": r["code"],
                    "v_minutes_late": r["minutes_late"],
                    "v_recorded_at": r["recorded_at"],
                    "v_received_at": r["received_at"],
                }
                for r in updates.values()
            ],
        )
    if history:
        await conn.execute(insert(t.mark_history), history)
    await enqueue(conn, t.outbox, outbox_records(Topic.MARKS, events))
    return out.result()
