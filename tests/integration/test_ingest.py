"""The ingest service against the real Kafka broker and real SQLite and PostgreSQL databases.

Every test runs once per database (``db_url``); the topics are shared by the whole run, so each
test uses its own school URN (and UPN establishment number) and filters events by them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest import marks as ingest_marks
from services.ingest import tables as t
from shared.auth import mint_token
from shared.db import create_engine
from shared.inbox import first_time, inbox_table
from shared.migrate import upgrade
from shared.outbox import pending_events
from shared.upn import make_upn
from tests.conftest import SECRET, bearer
from tests.integration.ingest_fixtures import (
    ADMIN,
    NOW,
    TERMS_2024_25,
    Event,
    ingest_client,
    outbox_backlog,
    published_events,
    pupil,
    read_events,
    school_body,
    setup_school,
    wait_outbox_empty,
)

pytestmark = pytest.mark.integration

MARKS = "rollcall.marks.v1"
REGISTRY = "rollcall.registry.v1"
PROBLEM = "application/problem+json"
TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")
CHECK_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"
ROOT = Path(__file__).resolve().parents[2]

# URNs and UPN establishment numbers unique within the run (the topics are shared by all tests).
_schools = itertools.count(7_310_000 + (os.getpid() % 500) * 100)


@dataclass(frozen=True)
class School:
    urn: str
    estab: int

    @classmethod
    def new(cls) -> School:
        n = next(_schools)
        return cls(str(n), 5000 + n % 4000)

    def upn(self, serial: int) -> str:
        return make_upn(343, self.estab, 18, serial)

    def pupil(self, serial: int, **over: Any) -> dict[str, Any]:
        return pupil(serial, self.estab, **over)

    def mark(self, serial: int, date: str, session: str, code: str, **extra: Any) -> dict[str, Any]:
        return {"upn": self.upn(serial), "date": date, "session": session, "code": code, **extra}

    @property
    def marks_path(self) -> str:
        return f"/v1/schools/{self.urn}/marks"

    def mis(self, scopes: str = "marks:write") -> dict[str, str]:
        """A school MIS's headers: a token scoped to this school."""
        return bearer(scopes, [self.urn])

    def owns(self, event: dict[str, Any]) -> bool:
        """Whether an event is about this school (care events name only the pupil)."""
        data = event["data"]
        if "school_urn" in data:
            return bool(data["school_urn"] == self.urn)
        if "urn" in data:
            return bool(data["urn"] == self.urn)
        return str(data.get("upn", "")).startswith(f"343{self.estab:04d}", 1)


class Clock:
    """A settable clock for the service (NOW unless a test moves it)."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture(
    params=[
        pytest.param("sqlite_url", id="sqlite"),
        pytest.param("postgres_url", id="postgres", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(request.param))


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test's database, for looking at what the service wrote."""
    engine = create_engine(db_url)
    yield engine
    await engine.dispose()


def wrong_check_letter(upn: str) -> str:
    return next(c for c in CHECK_LETTERS if c != upn[0]) + upn[1:]


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:rollcall:problem:")
    assert body["title"]
    assert body["detail"]
    return body


def assert_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = body["errors"]
    assert errors
    for e in errors:
        assert set(e) >= {"index", "field", "code", "detail"}, e
    return errors


def assert_envelope(key: bytes, event: dict[str, Any], headers: dict[str, bytes], type_: str) -> None:
    """CloudEvents 1.0 structured envelope, record key and the contract's headers."""
    assert event["specversion"] == "1.0"
    assert event["type"] == type_
    assert event["source"] == "/rollcall/ingest"
    assert event["datacontenttype"] == "application/json"
    assert event["id"]
    dt.datetime.fromisoformat(event["time"])
    assert headers["ce_id"] == event["id"].encode()
    assert headers["ce_type"] == type_.encode()
    assert TRACEPARENT.match(headers["traceparent"].decode())
    if type_.startswith("mark.") or type_ in ("pupil.updated", "care.updated"):
        assert key == event["data"]["upn"].encode()
        assert event["subject"] == event["data"]["upn"]


async def rows(engine: AsyncEngine, stmt: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(stmt)).all())


async def register(engine: AsyncEngine, urn: str) -> set[tuple[str, str, str, str, int | None]]:
    m = t.marks.c
    found = await rows(
        engine, select(m.upn, m.date, m.session, m.code, m.minutes_late).where(m.school_urn == urn)
    )
    return {(r.upn, r.date.isoformat(), r.session, r.code, r.minutes_late) for r in found}


def by_type(events: list[Event], type_: str) -> list[Event]:
    return [e for e in events if e[1]["type"] == type_]


# --- 1, 2: a mixed batch, then the same batch again -------------------------------------------------


def mixed_batch(s: School) -> tuple[list[Any], dict[int, dict[str, Any]], dict[int, list[str]]]:
    """A batch of good and bad rows: (batch, good marks by index, expected detail fragments by index)."""
    good = {
        0: s.mark(1, "2024-09-03", "AM", "/", recorded_at="2024-09-03T08:52:10+01:00"),
        13: s.mark(2, "2024-09-03", "AM", "N"),
        14: s.mark(6, "2024-09-03", "AM", "X"),  # X is right for a nursery child
        15: s.mark(4, "2024-10-01", "AM", "/"),  # admission day
        16: s.mark(5, "2024-09-30", "PM", "\\"),  # leaving day
        17: s.mark(3, "2024-09-13", "AM", "L", minutes_late=5),  # only the PM of the 13th is closed
    }
    bad: dict[int, tuple[Any, list[str]]] = {
        1: ({**s.mark(1, "2024-09-04", "AM", "/"), "upn": wrong_check_letter(s.upn(1))}, ["check letter"]),
        2: (s.mark(1, "2024-09-04", "AM", "ZZ"), ["code", "not a DfE attendance code"]),
        3: (s.mark(1, "2024-09-04", "AM", "H"), ["'H'", "19 August 2024", "G (holiday not granted)"]),
        4: (s.mark(2, "2024-09-07", "AM", "/"), ["2024-09-07 AM is not a school session"]),  # Saturday
        5: (s.mark(2, "2024-10-28", "AM", "/"), ["2024-10-28 AM is not a school session"]),  # half-term
        6: (s.mark(2, "2024-09-13", "PM", "\\"), ["2024-09-13 PM is not a school session"]),  # closed PM
        7: (s.mark(4, "2024-09-16", "AM", "/"), ["not on this school's roll"]),  # before admission
        8: (s.mark(5, "2024-10-07", "AM", "/"), ["not on this school's roll"]),  # after leaving
        9: (s.mark(1, "2024-09-05", "AM", "X"), ["X", "compulsory school age"]),
        10: (s.mark(1, "2025-03-10", "AM", "/"), ["after today"]),  # NOW is 2025-03-03
        11: ("3 September, AM, present", ["must be an object"]),
        12: (
            {k: v for k, v in s.mark(1, "2024-09-06", "AM", "/").items() if k != "code"},
            ["code", "required"],
        ),
        18: ([s.upn(1), "2024-09-09", "AM", "/"], ["must be an object"]),
        19: (s.mark(7, "2024-09-03", "AM", "/"), ["not on this school's roll"]),  # never enrolled
        20: (42, ["must be an object"]),
        21: (s.mark(1, "2024-09-03", "PM", "\\", minutes_late=-1), ["minutes_late"]),
        22: ({**s.mark(1, "2024-09-03", "PM", "\\"), "teacher": "x"}, ["teacher"]),
    }
    batch: list[Any] = [None] * (len(good) + len(bad))
    for i, m in good.items():
        batch[i] = m
    for i, (raw, _) in bad.items():
        batch[i] = raw
    return batch, good, {i: frags for i, (_, frags) in bad.items()}


def mixed_roster(s: School) -> list[dict[str, Any]]:
    return [
        s.pupil(1),
        s.pupil(2),
        s.pupil(3),
        s.pupil(4, admission_date="2024-10-01"),
        s.pupil(5, leaving_date="2024-09-30"),
        s.pupil(6, date_of_birth="2020-06-01", year_group="N2"),
    ]


async def test_mixed_batch_stores_the_good_rejects_the_bad_and_publishes_once(
    db_url: str, db: AsyncEngine, kafka_bootstrap: str
) -> None:
    s = School.new()
    batch, good, bad = mixed_batch(s)
    async with ingest_client(db_url, kafka_bootstrap) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "kafka": "ok"}
        await setup_school(client, s.urn, mixed_roster(s))
        r = await client.post(s.marks_path, json={"marks": batch}, headers=s.mis())
        assert r.status_code == 200, r.text
        result = r.json()
        assert (result["accepted"], result["amended"], result["unchanged"]) == (len(good), 0, 0)
        assert [x["index"] for x in result["rejected"]] == sorted(bad)
        for rej in result["rejected"]:
            raw = batch[rej["index"]]
            for fragment in bad[rej["index"]]:
                assert fragment in rej["detail"], (rej, fragment)
            assert rej["upn"] == (raw.get("upn") if isinstance(raw, dict) else None)
            assert rej["code"] == (raw.get("code") if isinstance(raw, dict) else None)
        assert result["accepted"] + result["amended"] + result["unchanged"] + len(result["rejected"]) == len(
            batch
        )

        expected = {
            (m["upn"], m["date"], m["session"], m["code"], m.get("minutes_late")) for m in good.values()
        }
        assert await register(db, s.urn) == expected

        events = await published_events(db, kafka_bootstrap, MARKS, s.owns)
        assert len(events) == len(good)
        assert len({e[1]["id"] for e in events}) == len(good)
        for key, event, headers in events:
            assert_envelope(key, event, headers, "mark.recorded")
            assert event["data"]["school_urn"] == s.urn
            assert "previous_code" not in event["data"]
        got = {
            (
                e["data"]["upn"],
                e["data"]["date"],
                e["data"]["session"],
                e["data"]["code"],
                e["data"]["minutes_late"],
            )
            for _, e, _ in events
        }
        assert got == expected
        data = {(e["data"]["upn"], e["data"]["date"]): e["data"] for _, e, _ in events}
        assert data[(s.upn(1), "2024-09-03")]["category"] == "present"
        assert data[(s.upn(1), "2024-09-03")]["recorded_at"] == "2024-09-03T08:52:10+01:00"
        assert data[(s.upn(2), "2024-09-03")]["category"] == "unauthorised"
        assert data[(s.upn(6), "2024-09-03")]["category"] == "not_possible"

        # 2. The same batch again: every good mark is an exact repeat; nothing new is published.
        r = await client.post(s.marks_path, json={"marks": batch}, headers=s.mis())
        assert r.status_code == 200, r.text
        again = r.json()
        assert (again["accepted"], again["amended"], again["unchanged"]) == (0, 0, len(good))
        assert again["rejected"] == result["rejected"]
        assert await register(db, s.urn) == expected
        assert await rows(db, select(t.mark_history)) == []
        events_after = await published_events(db, kafka_bootstrap, MARKS, s.owns)
        assert sorted(e[1]["id"] for e in events_after) == sorted(e[1]["id"] for e in events)


# --- 3: amendments ----------------------------------------------------------------------------------


async def test_amendment_keeps_history_and_publishes_mark_amended(
    db_url: str, db: AsyncEngine, kafka_bootstrap: str
) -> None:
    s = School.new()
    async with ingest_client(db_url, kafka_bootstrap) as client:
        await setup_school(client, s.urn, [s.pupil(1), s.pupil(2)])

        async def post(*marks: dict[str, Any]) -> dict[str, Any]:
            r = await client.post(s.marks_path, json={"marks": list(marks)}, headers=s.mis())
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            assert body["rejected"] == []
            return body

        assert await post(s.mark(1, "2024-09-10", "AM", "N")) == {
            "accepted": 1,
            "amended": 0,
            "unchanged": 0,
            "rejected": [],
        }
        assert await post(s.mark(1, "2024-09-10", "AM", "I")) == {
            "accepted": 0,
            "amended": 1,
            "unchanged": 0,
            "rejected": [],
        }
        assert (await post(s.mark(1, "2024-09-10", "AM", "I")))["unchanged"] == 1

        # Two marks for one session in ONE batch: the first is new, the second amends it.
        both = await post(s.mark(2, "2024-09-11", "AM", "N"), s.mark(2, "2024-09-11", "AM", "I"))
        assert (both["accepted"], both["amended"], both["unchanged"]) == (1, 1, 0)
        # The same code twice in one batch: new, then an exact repeat.
        same = await post(s.mark(2, "2024-09-12", "PM", "N"), s.mark(2, "2024-09-12", "PM", "N"))
        assert (same["accepted"], same["amended"], same["unchanged"]) == (1, 0, 1)

        assert await register(db, s.urn) == {
            (s.upn(1), "2024-09-10", "AM", "I", None),
            (s.upn(2), "2024-09-11", "AM", "I", None),
            (s.upn(2), "2024-09-12", "PM", "N", None),
        }
        h = t.mark_history.c
        history = await rows(
            db,
            select(h.upn, h.date, h.session, h.code, h.replaced_by)
            .where(h.school_urn == s.urn)
            .order_by(h.date),
        )
        assert [(r.upn, r.date.isoformat(), r.session, r.code, r.replaced_by) for r in history] == [
            (s.upn(1), "2024-09-10", "AM", "N", "I"),
            (s.upn(2), "2024-09-11", "AM", "N", "I"),
        ]

        events = await published_events(db, kafka_bootstrap, MARKS, s.owns)
        for key, event, headers in events:
            assert_envelope(key, event, headers, event["type"])

        def story(upn: str, date: str) -> list[tuple[str, str, str | None]]:
            return [
                (e["type"], e["data"]["code"], e["data"].get("previous_code"))
                for _, e, _ in events
                if e["data"]["upn"] == upn and e["data"]["date"] == date
            ]

        # Same key, same partition: the order on the topic is the order of the register.
        assert story(s.upn(1), "2024-09-10") == [("mark.recorded", "N", None), ("mark.amended", "I", "N")]
        assert story(s.upn(2), "2024-09-11") == [("mark.recorded", "N", None), ("mark.amended", "I", "N")]
        assert story(s.upn(2), "2024-09-12") == [("mark.recorded", "N", None)]
        assert len(events) == 5


# --- 4: CSV batches ---------------------------------------------------------------------------------


async def test_csv_batch(db_url: str, db: AsyncEngine, kafka_bootstrap: str) -> None:
    s = School.new()
    u1, u2, u3 = s.upn(1), s.upn(2), s.upn(3)
    csv_headers = {**s.mis(), "Content-Type": "text/csv; charset=utf-8"}
    lines = [
        "upn,date,session,code,minutes_late",
        f"{u1},2024-09-03,AM,/,",  # 0 good, empty minutes_late
        "",
        f"{wrong_check_letter(u1)},2024-09-03,PM,\\,",  # 1 bad check letter
        f"{u2},2024-09-03,AM,L,12",  # 2 good
        f"{u3},2024-09-03,AM",  # 3 too few cells
        f"{u3},2024-09-03,AM,/,,extra",  # 4 too many cells
        " , , , , ",
        f"{u3},2024-09-07,AM,/,",  # 5 a Saturday
        f"{u3},2024-09-03,AM,H,",  # 6 retired code
        f"{u3},2024-09-03,AM,/,abc",  # 7 minutes_late not a number
        f" {u3} ,2024-09-04,PM,\\,",  # 8 good (cells are trimmed)
        "",
        "",
    ]
    body = ("\ufeff" + "\r\n".join(lines)).encode()
    async with ingest_client(db_url, kafka_bootstrap) as client:
        await setup_school(client, s.urn, [s.pupil(1), s.pupil(2), s.pupil(3)])
        r = await client.post(s.marks_path, content=body, headers=csv_headers)
        assert r.status_code == 200, r.text
        result = r.json()
        assert (result["accepted"], result["amended"], result["unchanged"]) == (3, 0, 0)
        rejected = {x["index"]: x["detail"] for x in result["rejected"]}
        assert sorted(rejected) == [1, 3, 4, 5, 6, 7]
        assert "check letter" in rejected[1]
        assert "one value per header column" in rejected[3]
        assert "one value per header column" in rejected[4]
        assert "not a school session" in rejected[5]
        assert "G (holiday not granted)" in rejected[6]
        assert "minutes_late" in rejected[7]

        # The four-column header is fine too; a repeat is unchanged.
        r = await client.post(
            s.marks_path,
            content=f"upn,date,session,code\n{u1},2024-09-05,AM,/\n{u1},2024-09-03,AM,/\n".encode(),
            headers=csv_headers,
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"accepted": 1, "amended": 0, "unchanged": 1, "rejected": []}

        assert await register(db, s.urn) == {
            (u1, "2024-09-03", "AM", "/", None),
            (u2, "2024-09-03", "AM", "L", 12),
            (u3, "2024-09-04", "PM", "\\", None),
            (u1, "2024-09-05", "AM", "/", None),
        }

        for bad_header in ("pupil,date,session,code", "date,upn,session,code", "upn,date,session", ""):
            r = await client.post(
                s.marks_path, content=f"{bad_header}\n{u1},2024-09-06,AM,/\n".encode(), headers=csv_headers
            )
            problem = assert_problem(r, 422)
            assert problem["errors"][0]["field"] == "header"
        assert len(await register(db, s.urn)) == 4

        events = await published_events(db, kafka_bootstrap, MARKS, s.owns)
        assert len(events) == 4
        assert {
            e["data"]["upn"]: e["data"]["minutes_late"] for _, e, _ in events if e["data"]["code"] == "L"
        } == {u2: 12}


# --- 5: authentication and authorisation ------------------------------------------------------------


async def test_auth(db_url: str, db: AsyncEngine, kafka_bootstrap: str) -> None:
    a, b, unknown = School.new(), School.new(), School.new()
    marks = {"marks": [a.mark(1, "2024-09-03", "AM", "/")]}
    async with ingest_client(db_url, kafka_bootstrap) as client:
        await setup_school(client, a.urn, [a.pupil(1)])
        await setup_school(client, b.urn, [b.pupil(1)])

        async def refused(headers: dict[str, str], status: int, urn: str = a.urn) -> dict[str, Any]:
            r = await client.post(f"/v1/schools/{urn}/marks", json=marks, headers=headers)
            body = assert_problem(r, status)
            if status == 401:
                assert r.headers["www-authenticate"] == "Bearer"
            return body

        def signed(secret: str = SECRET, ttl: int = 3600, **claims: Any) -> dict[str, str]:
            return {
                "Authorization": "Bearer "
                + mint_token(secret, "mis", ["marks:write"], ttl_seconds=ttl, **claims)
            }

        await refused({}, 401)
        await refused({"Authorization": "Basic bWlzOnNlY3JldA=="}, 401)
        await refused({"Authorization": "Bearer "}, 401)
        await refused({"Authorization": "Bearer not.a.jwt"}, 401)
        expired = await refused(signed(ttl=-120, schools=[a.urn]), 401)
        assert "expired" in expired["detail"]
        await refused(signed(secret="another-secret-that-is-long-enough-0123", schools=[a.urn]), 401)

        await refused(a.mis("pupils:write attendance:read"), 403)
        # A MIS token for school B: refused for A, and the same answer for a school that does not exist.
        for_a = await refused(b.mis(), 403)
        for_unknown = await refused(b.mis(), 403, unknown.urn)
        assert {k: for_a[k] for k in ("type", "title", "status", "detail")} == {
            k: for_unknown[k] for k in ("type", "title", "status", "detail")
        }
        # An LA token of another LA.
        await refused(bearer("marks:write", la="340"), 403)
        await refused(bearer("marks:write", [a.urn], la="340"), 403)
        # An LA-wide token learns that a school does not exist.
        await refused(bearer("marks:write"), 404, unknown.urn)
        await refused(bearer("marks:write", la="343"), 404, unknown.urn)
        # A URN that is not one (FastAPI's own handler behind the lean marks route): 422 with the
        # field named, and the token is still checked first.
        for bad in ("12345", "12345678", "1234x6"):
            errors = assert_errors(await refused(bearer("marks:write"), 422, bad))
            assert [e["field"] for e in errors] == ["urn"], errors
            await refused({}, 401, bad)
            await refused(a.mis("pupils:write"), 403, bad)

        # Other endpoints: the roster of another school, care without care:write, a school without admin.
        r = await client.put(
            f"/v1/schools/{b.urn}/pupils", json={"pupils": [b.pupil(2)]}, headers=a.mis("pupils:write")
        )
        assert_problem(r, 403)
        r = await client.put(
            f"/v1/schools/{unknown.urn}/calendar/2024-25",
            json={"terms": [{"start": "2024-09-03", "end": "2024-10-25"}]},
            headers=a.mis("pupils:write"),
        )
        assert_problem(r, 403)
        care = {"cin": True, "cp": False, "cla": False, "early_help": False}
        r = await client.put(
            f"/v1/pupils/{a.upn(1)}/care", json=care, headers=bearer("marks:write pupils:write")
        )
        assert_problem(r, 403)
        r = await client.put(f"/v1/schools/{unknown.urn}", json=school_body(), headers=bearer("pupils:write"))
        assert_problem(r, 403)
        r = await client.put(
            f"/v1/schools/{unknown.urn}", json=school_body(), headers=bearer(ADMIN, la="340")
        )
        assert_problem(r, 403)
        assert await rows(db, select(t.schools.c.urn).where(t.schools.c.urn == unknown.urn)) == []
        assert await rows(db, select(t.care)) == []
        assert await register(db, a.urn) == set()

        # The allowed callers: the school's own MIS and an LA-wide token of the school's LA.
        r = await client.post(a.marks_path, json=marks, headers=a.mis())
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 1
        r = await client.post(a.marks_path, json=marks, headers=bearer("marks:write", la="343"))
        assert r.status_code == 200, r.text
        assert r.json()["unchanged"] == 1
        r = await client.put(f"/v1/pupils/{a.upn(1)}/care", json=care, headers=bearer("care:write"))
        assert r.status_code == 200, r.text


# --- 6: malformed bodies ----------------------------------------------------------------------------


async def test_malformed_marks_bodies_are_problems_not_500s(
    db_url: str, db: AsyncEngine, kafka_bootstrap: str
) -> None:
    s = School.new()
    good = s.mark(1, "2024-09-03", "AM", "/")
    async with ingest_client(db_url, kafka_bootstrap) as client:
        await setup_school(client, s.urn, [s.pupil(1)])

        async def send(content: Any, content_type: str | None = "application/json") -> httpx.Response:
            headers = s.mis()
            if content_type is not None:
                headers["Content-Type"] = content_type
            return await client.post(s.marks_path, content=content, headers=headers)

        assert_problem(await send(b'{"marks": [ {"upn": '), 400)
        assert_problem(await send(b'{"marks": []}\xff'), 400)
        assert_problem(await send(b""), 400)
        assert_problem(await send(b"[" * 100_000), 400)
        for doc in ([good], {"marks": "all present"}, {"marks": {"0": good}}, {"marks": None}, {}, None, 7):
            body = assert_problem(await send(orjson.dumps(doc)), 422)
            assert_errors(body)
        extra = assert_problem(await send(orjson.dumps({"marks": [good], "school": s.urn})), 422)
        assert [e["field"] for e in assert_errors(extra)] == ["school"]
        for content_type in ("text/plain", "application/xml", "multipart/form-data; boundary=x", None):
            assert_problem(await send(orjson.dumps({"marks": [good]}), content_type), 415)
        too_many = assert_problem(await send(orjson.dumps({"marks": [good] * 10_001})), 413)
        assert "10000" in too_many["detail"]
        assert_problem(await send(b" " * (16 * 1024 * 1024 + 1)), 413)

        async def stream() -> AsyncIterator[bytes]:  # chunked: no Content-Length to trust
            for _ in range(17):
                yield b" " * (1024 * 1024)

        assert_problem(await send(stream()), 413)
        assert_problem(
            await send(b"upn,date,session,code\n" + b"\xff\xfe,2024-09-03,AM,/\n", "text/csv"), 400
        )
        assert_problem(await send(b"", "text/csv"), 422)
        assert_problem(await send("é,è\n".encode("latin-1"), "text/csv"), 400)
        assert await register(db, s.urn) == set()

        # The school endpoint's body too.
        r = await client.put(
            f"/v1/schools/{s.urn}",
            content=b"{",
            headers={**bearer(ADMIN), "Content-Type": "application/json"},
        )
        assert_problem(r, 400)
        r = await client.put(f"/v1/schools/{s.urn}", json=[school_body()], headers=bearer(ADMIN))
        assert_errors(assert_problem(r, 422))
        r = await client.put(
            f"/v1/schools/{s.urn}", json={**school_body(), "phase": "sixth"}, headers=bearer(ADMIN)
        )
        assert [e["field"] for e in assert_errors(assert_problem(r, 422))] == ["phase"]

        # An empty batch is not an error; a valid one still works after all that.
        r = await send(orjson.dumps({"marks": []}))
        assert r.json() == {"accepted": 0, "amended": 0, "unchanged": 0, "rejected": []}
        r = await send(orjson.dumps({"marks": [good]}), "application/json; charset=utf-8")
        assert r.json()["accepted"] == 1, r.text


async def snapshot(engine: AsyncEngine) -> dict[str, list[Any]]:
    out = {}
    for table in (t.pupils, t.enrolments, t.calendars, t.care, t.outbox):
        out[table.name] = sorted(tuple(str(v) for v in r) for r in await rows(engine, select(table)))
    return out


async def test_invalid_registry_writes_are_422_and_write_nothing(
    db_url: str, db: AsyncEngine, kafka_bootstrap: str
) -> None:
    s = School.new()
    clock = Clock()
    school = s.mis("pupils:write")
    async with ingest_client(db_url, kafka_bootstrap, clock=clock) as client:
        await setup_school(client, s.urn, [s.pupil(1), s.pupil(2)])
        await wait_outbox_empty(db)
        before = await snapshot(db)
        pupils_path = f"/v1/schools/{s.urn}/pupils"

        roster = [
            s.pupil(3),  # new and valid: must not be written either
            s.pupil(1, fsm=True),  # a valid change: must not be written either
            s.pupil(2),
            s.pupil(2, year_group="4"),  # duplicate UPN
            s.pupil(4, admission_date="2024-09-03", leaving_date="2024-09-02"),  # date order
            s.pupil(5, upn=wrong_check_letter(s.upn(5))),
            s.pupil(6, date_of_birth="2026-01-01"),
        ]
        r = await client.put(pupils_path, json={"pupils": roster}, headers=school)
        errors = assert_errors(assert_problem(r, 422))
        found = {(e["index"], e["field"], e["code"]) for e in errors}
        assert found == {
            (3, "pupils.3.upn", "duplicate"),
            (4, "pupils.4.leaving_date", "date_order"),
            (5, "pupils.5.upn", "upn"),
            (6, "pupils.6.date_of_birth", "date_range"),
        }
        # Schema errors are listed the same way.
        r = await client.put(
            pupils_path,
            json={
                "pupils": [
                    s.pupil(3),
                    {**s.pupil(4), "sen": "maybe"},
                    {k: v for k, v in s.pupil(5).items() if k != "fsm"},
                ]
            },
            headers=school,
        )
        errors = assert_errors(assert_problem(r, 422))
        assert {(e["index"], e["field"]) for e in errors} == {(1, "pupils.1.sen"), (2, "pupils.2.fsm")}
        # Control characters: PostgreSQL cannot store U+0000 (this was a 500 there, and on SQLite
        # it reached Kafka and stopped the other services' PostgreSQL consumers).
        r = await client.put(
            pupils_path,
            json={
                "pupils": [
                    s.pupil(3, given_name="Ann\x00"),
                    s.pupil(4, parents=[{"id": "p1", "name": "B\x07ob"}]),
                    s.pupil(5, family_name="Smith\tJones"),  # tab: allowed in text
                    s.pupil(6, date_of_birth=1262304000),  # a number is not an ISO date (1 Jan 2010)
                ]
            },
            headers=school,
        )
        errors = assert_errors(assert_problem(r, 422))
        fields = {e["field"] for e in errors}
        assert fields == {"pupils.0.given_name", "pupils.1.parents.0.name", "pupils.3.date_of_birth"}
        r = await client.put(f"/v1/schools/{s.urn}", json={**school_body(), "ward": "Linacre\x00"},
                             headers=bearer("admin"))  # fmt: skip
        assert assert_errors(assert_problem(r, 422))[0]["field"] == "ward"
        for url in (f"/v1/schools/{s.urn}%00/pupils", f"/v1/schools/{s.urn}/marks?from=2024-09-02%00"):
            r = await client.put(url, json={"pupils": [s.pupil(3)]}, headers=school)
            assert assert_problem(r, 400)["detail"] == "the URL must not contain control characters"
        assert_errors(assert_problem(await client.put(pupils_path, json={"pupils": []}, headers=school), 422))
        assert_problem(await client.put(pupils_path, json=[s.pupil(3)], headers=school), 422)

        calendar_path = f"/v1/schools/{s.urn}/calendar/2024-25"
        r = await client.put(
            calendar_path,
            json={
                "terms": [
                    {"start": "2024-08-20", "end": "2024-10-25"},  # starts in 2023-24
                    {"start": "2024-12-20", "end": "2024-11-04"},  # ends before it starts
                    {"start": "2025-09-01", "end": "2025-09-10"},  # in 2025-26
                ],
                "closed": [{"date": "2025-09-02", "session": "ALL", "reason": "INSET"}],
            },
            headers=school,
        )
        errors = assert_errors(assert_problem(r, 422))
        fields = {e["field"] for e in errors}
        assert {
            "terms[0].start",
            "terms[1].end",
            "terms[2].start",
            "terms[2].end",
            "closures[0].date",
        } <= fields
        r = await client.put(
            f"/v1/schools/{s.urn}/calendar/2024-26",
            json={"terms": [{"start": "2024-09-03", "end": "2024-10-25"}]},
            headers=school,
        )
        assert_errors(assert_problem(r, 422))
        r = await client.put(
            f"/v1/schools/{s.urn}/calendar/2024",
            json={"terms": [{"start": "2024-09-03", "end": "2024-10-25"}]},
            headers=school,
        )
        assert_problem(r, 422)

        care = {"cin": True, "cp": False, "cla": False, "early_help": False}
        la = bearer("care:write")
        r = await client.put(f"/v1/pupils/{wrong_check_letter(s.upn(1))}/care", json=care, headers=la)
        assert [e["field"] for e in assert_errors(assert_problem(r, 422))] == ["upn"]
        assert_problem(await client.put("/v1/pupils/A343/care", json=care, headers=la), 422)
        r = await client.put(
            f"/v1/pupils/{s.upn(1)}/care",
            json={**care, "part_time_timetable": {"start": "2024-10-01", "end": "2024-09-01"}},
            headers=la,
        )
        assert_errors(assert_problem(r, 422))
        r = await client.put(f"/v1/pupils/{s.upn(1)}/care", json={**care, "cin": "sometimes"}, headers=la)
        assert_errors(assert_problem(r, 422))

        assert await snapshot(db) == before

        # A roster sent on 29 February (the 30-year plausibility bound must not crash).
        clock.now = dt.datetime(2028, 2, 29, 9, 0, tzinfo=dt.UTC)
        r = await client.put(pupils_path, json={"pupils": [s.pupil(3)]}, headers=school)
        assert r.status_code == 200, r.text
        assert r.json() == {"created": 1, "updated": 0, "unchanged": 0}


# --- 7: registry events -----------------------------------------------------------------------------


async def test_registry_writes_publish_events_only_on_change(
    db_url: str, db: AsyncEngine, kafka_bootstrap: str
) -> None:
    s = School.new()
    roster = [s.pupil(1), s.pupil(2), s.pupil(3, sen="ehcp")]
    care = {
        "cin": False,
        "cp": False,
        "cla": True,
        "early_help": False,
        "etac": False,
        "part_time_timetable": {"start": "2024-09-09", "end": None},
    }
    async with ingest_client(db_url, kafka_bootstrap) as client:
        school = s.mis("pupils:write")

        async def write_all() -> dict[str, Any]:
            await setup_school(client, s.urn, [])  # the school and its calendar
            r = await client.put(f"/v1/schools/{s.urn}/pupils", json={"pupils": roster}, headers=school)
            assert r.status_code == 200, r.text
            c = await client.put(f"/v1/pupils/{s.upn(1)}/care", json=care, headers=bearer("care:write"))
            assert c.status_code == 200, c.text
            result: dict[str, Any] = r.json()
            return result

        assert await write_all() == {"created": 3, "updated": 0, "unchanged": 0}
        events = await published_events(db, kafka_bootstrap, REGISTRY, s.owns)
        types = sorted(e[1]["type"] for e in events)
        assert types == ["calendar.updated", "care.updated"] + ["pupil.updated"] * 3 + ["school.updated"]
        for key, event, headers in events:
            assert_envelope(key, event, headers, event["type"])

        (school_event,) = by_type(events, "school.updated")
        assert school_event[0] == s.urn.encode()
        assert school_event[1]["data"]["la_code"] == "343"
        (calendar_event,) = by_type(events, "calendar.updated")
        assert calendar_event[1]["data"]["year"] == "2024-25"
        assert len(calendar_event[1]["data"]["terms"]) == 6
        for _, event, _ in by_type(events, "pupil.updated"):
            data = event["data"]
            assert data["school_urn"] == s.urn
            assert not {"given_name", "family_name", "home_postcode", "parents"} & set(data)
            assert data["parent_ids"] == [f"P{int(data['upn'][-3:])}"]
        raw = b"".join(orjson.dumps(e[1]) for e in events)
        for personal in (b"Alex", b"Smith", b"PR8 1AA"):
            assert personal not in raw
        ehcp = next(
            e[1]["data"]
            for e in events
            if e[1]["data"].get("upn") == s.upn(3) and e[1]["type"] == "pupil.updated"
        )
        assert ehcp["sen"] == "ehcp"
        assert ehcp["ehcp_la_code"] == "343"
        (care_event,) = by_type(events, "care.updated")
        assert care_event[1]["data"] == {
            "upn": s.upn(1),
            "cin": False,
            "cp": False,
            "cla": True,
            "early_help": False,
            "etac": False,
            "part_time_timetable": {"start": "2024-09-09", "end": None},
        }

        # The same writes again: nothing changed, nothing published.
        assert await write_all() == {"created": 0, "updated": 0, "unchanged": 3}
        assert sorted(
            e[1]["id"] for e in await published_events(db, kafka_bootstrap, REGISTRY, s.owns)
        ) == sorted(e[1]["id"] for e in events)

        # One pupil changed: one update, one event.
        roster[1] = s.pupil(2, fsm=True)
        r = await client.put(f"/v1/schools/{s.urn}/pupils", json={"pupils": roster}, headers=school)
        assert r.json() == {"created": 0, "updated": 1, "unchanged": 2}, r.text
        after = await published_events(db, kafka_bootstrap, REGISTRY, s.owns)
        new = [e for e in after if e[1]["id"] not in {x[1]["id"] for x in events}]
        assert [(e[1]["type"], e[1]["data"]["upn"], e[1]["data"]["fsm"]) for e in new] == [
            ("pupil.updated", s.upn(2), True)
        ]


# --- 8: a process killed between commit and publish -------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def start_ingest(
    tmp_path: Path, kafka_bootstrap: str
) -> Iterator[Callable[[str, bool], tuple[subprocess.Popen[bytes], str]]]:
    """Starts ``uvicorn services.ingest.app:create_app`` as a real process; kills leftovers at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(db_url: str, relay: bool) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        env = {
            **os.environ,
            "ROLLCALL_ENV": "test",
            "ROLLCALL_DATABASE_URL": db_url,
            "ROLLCALL_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "ROLLCALL_RELAY_ENABLED": "true" if relay else "false",
        }
        log = (tmp_path / f"ingest-{len(started)}.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "services.ingest.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        started.append(proc)
        return proc, f"http://127.0.0.1:{port}"

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def wait_ready(base_url: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        for _ in range(240):
            assert proc.poll() is None, "ingest exited during start-up"
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.125)
    raise TimeoutError("ingest did not become ready")


async def test_killed_between_commit_and_publish_loses_no_event(
    tmp_path: Path,
    kafka_bootstrap: str,
    start_ingest: Callable[[str, bool], tuple[subprocess.Popen[bytes], str]],
) -> None:
    s = School.new()
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'ingest.db'}"
    await asyncio.to_thread(upgrade, "ingest", db_url)
    engine = create_engine(db_url)
    try:
        proc, base = start_ingest(db_url, False)
        await wait_ready(base, proc)
        pupils = [s.pupil(i) for i in range(1, 6)]
        batch = [s.mark(i, "2024-09-03", "AM", "/") for i in range(1, 6)]
        batch += [s.mark(i, "2024-09-03", "PM", "N") for i in range(1, 6)]
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            await setup_school(client, s.urn, pupils)
            r = await client.post(s.marks_path, json={"marks": batch}, headers=s.mis())
            assert r.status_code == 200, r.text
            assert r.json() == {"accepted": 10, "amended": 0, "unchanged": 0, "rejected": []}
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(proc.wait, 10) == -signal.SIGKILL

        async with engine.connect() as conn:
            pending = await pending_events(conn, t.outbox)  # (topic, key, event id, type, value)
        mark_ids = {r[2] for r in pending if r[0] == MARKS}
        assert len(mark_ids) == 10
        assert len(pending) == 10 + 2 + 5  # and the school, calendar and 5 pupil events
        assert await read_events(kafka_bootstrap, MARKS, s.owns) == []

        proc, base = start_ingest(db_url, True)
        await wait_ready(base, proc)
        events = await published_events(engine, kafka_bootstrap, MARKS, s.owns)
        ids = [e[1]["id"] for e in events]
        assert sorted(ids) == sorted(mark_ids)  # every one, each exactly once
        for key, event, headers in events:
            assert_envelope(key, event, headers, "mark.recorded")
        registry = await read_events(kafka_bootstrap, REGISTRY, s.owns)
        assert {e[1]["id"] for e in registry} == {r[2] for r in pending if r[0] == REGISTRY}
        assert len(registry) == 7
        assert await outbox_backlog(engine) == 0

        # A clean stop drains and exits (uvicorn re-raises the SIGTERM it handled, hence -15).
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in (tmp_path / "ingest-1.log").read_text()
    finally:
        await engine.dispose()


# --- 9: the consumer's inbox ------------------------------------------------------------------------


async def test_inbox_makes_redelivery_harmless(db_url: str, db: AsyncEngine, kafka_bootstrap: str) -> None:
    s = School.new()
    metadata = MetaData()
    inbox = inbox_table(metadata)
    applied = Table(
        "applied_marks",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False),
        Column("upn", String(13), nullable=False),
        Column("code", String(3), nullable=False),
    )

    async def consume_all() -> int:
        """A tiny consumer: reads the school's marks from the start, applies each event once."""
        effects = 0
        for _, event, _ in await read_events(kafka_bootstrap, MARKS, s.owns):
            async with db.begin() as conn:
                if await first_time(conn, inbox, event["id"]):
                    data = event["data"]
                    await conn.execute(
                        insert(applied).values(event_id=event["id"], upn=data["upn"], code=data["code"])
                    )
                    effects += 1
        return effects

    async with ingest_client(db_url, kafka_bootstrap) as client:
        await setup_school(client, s.urn, [s.pupil(1), s.pupil(2), s.pupil(3)])
        batch = [s.mark(i, "2024-09-03", "AM", "/") for i in (1, 2, 3)] + [s.mark(1, "2024-09-03", "AM", "M")]
        r = await client.post(s.marks_path, json={"marks": batch}, headers=s.mis())
        assert r.json() == {"accepted": 3, "amended": 1, "unchanged": 0, "rejected": []}, r.text
        await wait_outbox_empty(db)
    async with db.begin() as conn:
        await conn.run_sync(metadata.create_all)

    async def count(table: Table) -> int:
        return int((await rows(db, select(func.count()).select_from(table)))[0][0])

    assert await consume_all() == 4
    assert await count(applied) == 4
    assert await count(inbox) == 4
    assert await consume_all() == 0  # redelivered: no second effect
    assert await count(applied) == 4
    assert await count(inbox) == 4


# --- bulk paths (issue 8): group commit of small requests, COPY of large batches ----------------


async def test_concurrent_small_requests_are_answered_each_as_if_alone(
    db_url: str, db: AsyncEngine, kafka_bootstrap: str
) -> None:
    """Single-mark POSTs arriving together share a transaction but each gets its own answer."""
    a, b = School.new(), School.new()
    unknown = School.new()
    async with ingest_client(db_url, kafka_bootstrap) as client:
        await setup_school(client, a.urn, [a.pupil(i) for i in range(1, 11)])
        await setup_school(client, b.urn, [b.pupil(i) for i in range(1, 11)])
        posts = [
            (s, [s.mark(i, day, "AM", "/")])
            for s in (a, b)
            for i in range(1, 11)
            for day in ("2024-09-03", "2024-09-04")
        ]
        posts.append((a, [a.mark(1, "2024-09-05", "AM", "/"), a.mark(1, "2024-09-07", "AM", "/")]))
        responses = await asyncio.gather(
            *(client.post(s.marks_path, json={"marks": m}, headers=s.mis()) for s, m in posts),
            client.post(unknown.marks_path, json={"marks": [unknown.mark(1, "2024-09-03", "AM", "/")]},
                        headers=unknown.mis()),
        )  # fmt: skip
        *answers, missing = responses
        assert missing.status_code == 404, missing.text
        for r in answers[:-1]:
            assert r.json() == {"accepted": 1, "amended": 0, "unchanged": 0, "rejected": []}, r.text
        last = answers[-1].json()
        assert (last["accepted"], [x["index"] for x in last["rejected"]]) == (1, [1])  # Saturday
        assert len(await register(db, a.urn)) == 21
        assert len(await register(db, b.urn)) == 20
        events = await published_events(db, kafka_bootstrap, MARKS, lambda e: a.owns(e) or b.owns(e))
        assert len(events) == 41
        assert len({e[1]["id"] for e in events}) == 41


async def test_a_calendar_change_is_seen_by_the_next_mark(
    db_url: str, db: AsyncEngine, kafka_bootstrap: str
) -> None:
    """Calendars are remembered by their stored text: closing a session refuses the next mark for
    it, on the group-commit path and the direct one, and reopening it accepts the mark again."""
    s = School.new()
    async with ingest_client(db_url, kafka_bootstrap) as client:
        await setup_school(client, s.urn, [s.pupil(i) for i in range(1, 4)])
        school = bearer("pupils:write", [s.urn])
        first = await client.post(s.marks_path, json={"marks": [s.mark(1, "2024-09-16", "AM", "/")]},
                                  headers=s.mis())  # fmt: skip
        assert first.json()["accepted"] == 1, first.text
        calendar = f"/v1/schools/{s.urn}/calendar/2024-25"
        closed = [{"date": "2024-09-17", "session": "ALL", "reason": "Snow"}]
        r = await client.put(calendar, json={"terms": TERMS_2024_25, "closed": closed}, headers=school)
        assert r.status_code == 200, r.text
        big = [s.mark(3, "2024-09-16", session, "/") for session in ("AM", "PM")] * 300  # > SMALL_BATCH
        for marks in ([s.mark(1, "2024-09-17", "AM", "/")], [s.mark(1, "2024-09-17", "PM", "/"), *big]):
            r = await client.post(s.marks_path, json={"marks": marks}, headers=s.mis())
            assert r.status_code == 200, r.text
            assert [x["index"] for x in r.json()["rejected"]] == [0], r.text
            assert "not a school session" in r.json()["rejected"][0]["detail"]
        r = await client.put(calendar, json={"terms": TERMS_2024_25, "closed": []}, headers=school)
        assert r.status_code == 200, r.text
        r = await client.post(s.marks_path, json={"marks": [s.mark(1, "2024-09-17", "AM", "/")]},
                              headers=s.mis())  # fmt: skip
        assert r.json() == {"accepted": 1, "amended": 0, "unchanged": 0, "rejected": []}, r.text
    assert {(m[1], m[2]) for m in await register(db, s.urn) if m[0] == s.upn(1)} == {
        ("2024-09-16", "AM"),
        ("2024-09-17", "AM"),
    }


async def test_large_batch_is_copied_and_amended_in_bulk(
    db_url: str, db: AsyncEngine, kafka_bootstrap: str
) -> None:
    """A batch above the group-commit size (its own transaction, COPY on PostgreSQL)."""
    s = School.new()
    days = ["2024-09-03", "2024-09-04", "2024-09-05", "2024-09-06", "2024-09-09", "2024-09-10"]
    batch = [s.mark(i, d, ses, "/") for i in range(1, 61) for d in days for ses in ("AM", "PM")]
    assert len(batch) == 720
    async with ingest_client(db_url, kafka_bootstrap) as client:
        await setup_school(client, s.urn, [s.pupil(i) for i in range(1, 61)])
        r = await client.post(s.marks_path, json={"marks": batch}, headers=s.mis())
        assert r.json() == {"accepted": 720, "amended": 0, "unchanged": 0, "rejected": []}, r.text
        again = [dict(m, code="N") if k % 72 == 0 else m for k, m in enumerate(batch)]
        again.append(s.mark(99, "2024-09-03", "AM", "/"))  # not on roll
        r = await client.post(s.marks_path, json={"marks": again}, headers=s.mis())
        result = r.json()
        assert (result["accepted"], result["amended"], result["unchanged"]) == (0, 10, 710), r.text
        assert [x["index"] for x in result["rejected"]] == [720]
        assert sum(1 for m in await register(db, s.urn) if m[3] == "N") == 10
        assert len(await rows(db, select(t.mark_history).where(t.mark_history.c.school_urn == s.urn))) == 10
        events = await published_events(db, kafka_bootstrap, MARKS, s.owns)
        assert len(events) == 730
        amended = [e for _, e, _ in events if e["type"] == "mark.amended"]
        assert {(e["data"]["code"], e["data"]["previous_code"]) for e in amended} == {("N", "/")}


@pytest.mark.parametrize("roll_lookup", [0, 1_000_000], ids=["by-school", "by-key"])
async def test_roll_and_exact_key_look_ups_give_the_same_answers(
    db_url: str, db: AsyncEngine, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, roll_lookup: int
) -> None:
    """On PostgreSQL a school with more than ``ROLL_LOOKUP`` pupils (marks) in a transaction has its
    roll (its register over the batch's dates) read by school, the rest by exact key: forced each way, a
    resent register, an amendment, a pupil off the roll (never on it, or left) and a mark of a
    school's other day must come out the same, on the direct path and the group-commit path."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one way of looking up (by pupil)")
    monkeypatch.setattr(ingest_marks, "ROLL_LOOKUP", roll_lookup)
    a, b = School.new(), School.new()
    days = ["2024-09-03", "2024-09-04", "2024-09-05", "2024-09-06", "2024-09-09"]
    async with ingest_client(db_url, kafka_bootstrap) as client:
        await setup_school(client, a.urn, [a.pupil(i) for i in range(1, 61)])
        await setup_school(client, b.urn, [b.pupil(1), b.pupil(2, leaving_date="2024-09-04")])
        batch = [a.mark(i, d, ses, "/") for i in range(1, 61) for d in days for ses in ("AM", "PM")]
        r = await client.post(a.marks_path, json={"marks": batch}, headers=a.mis())
        assert r.json() == {"accepted": 600, "amended": 0, "unchanged": 0, "rejected": []}, r.text
        again = [dict(m, code="N") if k % 100 == 0 else m for k, m in enumerate(batch)]  # 6 amended
        again += [a.mark(99, "2024-09-03", "AM", "/"), a.mark(1, "2024-09-10", "AM", "L")]  # off roll; new
        r = await client.post(a.marks_path, json={"marks": again}, headers=a.mis())
        result = r.json()
        assert (result["accepted"], result["amended"], result["unchanged"]) == (1, 6, 594), r.text
        assert [x["index"] for x in result["rejected"]] == [600]
        # Small requests together (one group transaction): b's pupils by key or by school alike.
        posts = [
            (b, [b.mark(1, "2024-09-03", "AM", "/")]),
            (b, [b.mark(2, "2024-09-04", "AM", "/")]),
            (b, [b.mark(2, "2024-09-05", "AM", "/")]),  # left the day before
            (a, [a.mark(1, "2024-09-03", "AM", "N")]),  # as stored: unchanged
            (a, [a.mark(2, "2024-09-03", "PM", "U")]),  # amends
        ]
        answers = await asyncio.gather(
            *(client.post(s.marks_path, json={"marks": m}, headers=s.mis()) for s, m in posts)
        )
        got = [(x.json()["accepted"], x.json()["amended"], x.json()["unchanged"], len(x.json()["rejected"]))
               for x in answers]  # fmt: skip
        assert got == [(1, 0, 0, 0), (1, 0, 0, 0), (0, 0, 0, 1), (0, 0, 1, 0), (0, 1, 0, 0)], got
    stored = {(m[0], m[1], m[2]): m[3] for m in await register(db, a.urn)}
    assert len(stored) == 601
    assert stored[(a.upn(1), "2024-09-03", "AM")] == "N"
    assert stored[(a.upn(2), "2024-09-03", "PM")] == "U"
    assert len(await rows(db, select(t.mark_history).where(t.mark_history.c.school_urn == a.urn))) == 7
