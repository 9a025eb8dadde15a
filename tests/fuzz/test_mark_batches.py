"""Hypothesis-generated mark batches, JSON and CSV, good rows mixed with junk, against the real
ingest service and database (SQLite and PostgreSQL).

Every row is generated *labelled*: good (a pupil on roll, a school session of this school up to
today, a code in force) or one kind of junk. The oracle is a model of the register kept by the
test alone — not the service's validation code: after every batch the school's stored marks must
equal the model (no bad mark stored, no good mark lost, later marks of a session winning), the
response must reject exactly the junk rows by index, and accepted/amended/unchanged must match
the model's count. A body that is malformed as a whole (bytes that are not UTF-8, a broken CSV
quote) must be a 400 problem that stores nothing.

``ROLLCALL_MARK_BATCH_EXAMPLES`` (default 60) sets the batches per database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from services.ingest import tables as t
from shared.upn import make_upn
from tests.conftest import bearer
from tests.fuzz.harness import LiveService
from tests.integration.ingest_fixtures import NOW, TERMS_2024_25, pupil, setup_school

pytestmark = [
    pytest.mark.integration,
    pytest.mark.fuzz,
    # schemathesis's strategies draw from `random` internally; hypothesis warns about it.
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

EXAMPLES = int(os.environ.get("ROLLCALL_MARK_BATCH_EXAMPLES", "60"))
URN = "7370001"
ESTAB = 7370
TODAY = NOW.date()  # 2025-03-03, a Monday in term
CHECK_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"

# The roll (pupil(): admitted 2022-09-01, born 2016, so of compulsory school age).
ON_ROLL = [make_upn(343, ESTAB, 18, n) for n in (1, 2, 3)]
LEFT = make_upn(343, ESTAB, 18, 4)  # left on 2024-10-31
JOINED = make_upn(343, ESTAB, 18, 5)  # admitted 2025-01-06
UNKNOWN = make_upn(343, ESTAB, 18, 99)  # a valid UPN of nobody at this school
GOOD_CODES = ["/", "\\", "L", "U", "N", "O", "I", "M", "G", "B", "P", "V", "J1", "C", "C1", "E", "R"]
BAD_CODES = ["H", "F", "Y", "ZZ", "Q9", "?", "", "n", "A"]  # retired, unknown, empty, wrong case


def school_sessions() -> list[tuple[dt.date, str]]:
    """This school's sessions from the start of the year to today, from the calendar the test sent
    (terms minus weekends and the closed 13 September afternoon) — independent of shared.calendar."""
    out = []
    for term in TERMS_2024_25:
        day = dt.date.fromisoformat(term["start"])
        end = min(dt.date.fromisoformat(term["end"]), TODAY)
        while day <= end:
            if day.weekday() < 5:
                out.extend((day, s) for s in ("AM", "PM") if (day, s) != (dt.date(2024, 9, 13), "PM"))
            day += dt.timedelta(days=1)
    return out


SESSIONS = school_sessions()
NOT_SESSIONS = [
    (dt.date(2024, 9, 7), "AM"),  # Saturday
    (dt.date(2024, 10, 30), "AM"),  # half term
    (dt.date(2024, 9, 13), "PM"),  # closed
    (dt.date(2023, 9, 12), "AM"),  # no calendar for 2023-24
    (dt.date(2025, 3, 4), "AM"),  # tomorrow: a school day, but in the future
    (dt.date(2025, 6, 3), "PM"),  # later in the year
]


@dataclass(frozen=True)
class Row:
    upn: str
    date: str
    session: str
    code: str
    good: bool
    why: str
    minutes_late: str | int | None = None
    raw_csv: str | None = None  # a junk CSV line sent as is


def good_row() -> st.SearchStrategy[Row]:
    def build(upn: str, slot: tuple[dt.date, str], code: str, late: int | None) -> Row:
        return Row(upn, slot[0].isoformat(), slot[1], code, True, "good", late if code == "L" else None)

    early = [s for s in SESSIONS if s[0] <= dt.date(2024, 10, 31)]
    late_ = [s for s in SESSIONS if s[0] >= dt.date(2025, 1, 6)]
    return st.one_of(
        st.builds(
            build,
            st.sampled_from(ON_ROLL),
            st.sampled_from(SESSIONS[:40] + SESSIONS[-40:]),  # few sessions: duplicates and amendments
            st.sampled_from(GOOD_CODES),
            st.none() | st.integers(0, 300),
        ),
        st.builds(build, st.just(LEFT), st.sampled_from(early[:20]), st.sampled_from(GOOD_CODES), st.none()),
        st.builds(
            build, st.just(JOINED), st.sampled_from(late_[:20]), st.sampled_from(GOOD_CODES), st.none()
        ),
    )


def junk_row() -> st.SearchStrategy[Row]:
    slot = st.sampled_from(SESSIONS[:40] + SESSIONS[-40:])
    upn = st.sampled_from(ON_ROLL)
    code = st.sampled_from(GOOD_CODES)

    def mk(why: str, **over: Any) -> Callable[..., Row]:
        def build(u: str, s: tuple[dt.date, str], c: str) -> Row:
            base = {"upn": u, "date": s[0].isoformat(), "session": s[1], "code": c}
            base.update(over)
            return Row(**base, good=False, why=why)

        return build

    def bad_check_letter(u: str, s: tuple[dt.date, str], c: str) -> Row:
        wrong = next(x for x in CHECK_LETTERS if x != u[0])
        return Row(wrong + u[1:], s[0].isoformat(), s[1], c, False, "upn check letter")

    def wrong_slot(u: str, s: tuple[dt.date, str], c: str, where: tuple[dt.date, str]) -> Row:
        return Row(u, where[0].isoformat(), where[1], c, False, "not a school session")

    def bad_code(u: str, s: tuple[dt.date, str], c: str, bad: str) -> Row:
        return Row(u, s[0].isoformat(), s[1], bad, False, "code")

    def bad_date(u: str, s: tuple[dt.date, str], c: str, text: str) -> Row:
        return Row(u, text, s[1], c, False, "date")

    def bad_session(u: str, s: tuple[dt.date, str], c: str, text: str) -> Row:
        return Row(u, s[0].isoformat(), text, c, False, "session")

    def bad_late(u: str, s: tuple[dt.date, str], c: str, late: str | int) -> Row:
        return Row(u, s[0].isoformat(), s[1], "L", False, "minutes_late", late)

    def garbage(text: str) -> Row:
        return Row("", "", "", "", False, "garbage line", raw_csv=text)

    left_after = [s for s in SESSIONS if s[0] > dt.date(2024, 10, 31)]
    joined_before = [s for s in SESSIONS if s[0] < dt.date(2025, 1, 6)]
    text = st.text(
        st.characters(blacklist_characters='",\r\n\x00', blacklist_categories=("Cs",)), max_size=20
    )
    return st.one_of(
        st.builds(bad_check_letter, upn, slot, code),
        st.builds(mk("upn malformed", upn="A343"), upn, slot, code),
        st.builds(mk("unknown pupil", upn=UNKNOWN), upn, slot, code),
        st.builds(mk("left"), st.just(LEFT), st.sampled_from(left_after[:30]), code),
        st.builds(mk("not yet joined"), st.just(JOINED), st.sampled_from(joined_before[-30:]), code),
        st.builds(mk("X at compulsory school age", code="X"), upn, slot, code),
        st.builds(wrong_slot, upn, slot, code, st.sampled_from(NOT_SESSIONS)),
        st.builds(bad_code, upn, slot, code, st.sampled_from(BAD_CODES)),
        st.builds(
            bad_date, upn, slot, code, st.sampled_from(["2024-13-01", "2024-02-30", "03/09/2024", "", "soon"])
        ),
        st.builds(bad_session, upn, slot, code, st.sampled_from(["XM", "", "AMPM", "am", "ALL"])),
        st.builds(bad_late, upn, slot, code, st.sampled_from([-1, 301, "ten"])),
        # A junk line of one or three values (never four or five, which would be a parsable mark).
        st.builds(garbage, text.filter(lambda s: s.strip() != "")),
        st.builds(
            garbage, st.tuples(text, text, text).filter(lambda t: any(s.strip() for s in t)).map(",".join)
        ),
    )


@dataclass
class Batch:
    rows: list[Row]
    broken: str | None  # a whole-body defect: "utf8" | "quote" (JSON: cut short) | None


batches = st.builds(
    Batch,
    st.lists(st.one_of(good_row(), good_row(), junk_row()), min_size=1, max_size=40),
    st.sampled_from([None, None, None, None, "utf8", "quote"]),
)


def json_body(rows: list[Row]) -> bytes:
    marks: list[Any] = []
    for r in rows:
        if r.raw_csv is not None:
            marks.append(r.raw_csv)  # not an object: rejected on its own
            continue
        mark: dict[str, Any] = {"upn": r.upn, "date": r.date, "session": r.session, "code": r.code}
        if r.minutes_late is not None:
            mark["minutes_late"] = r.minutes_late
        marks.append(mark)
    return orjson.dumps({"marks": marks})


def csv_body(rows: list[Row]) -> bytes:
    lines = ["upn,date,session,code,minutes_late"]
    for r in rows:
        if r.raw_csv is not None:
            lines.append(r.raw_csv)
        else:
            late = "" if r.minutes_late is None else str(r.minutes_late)
            lines.append(f"{r.upn},{r.date},{r.session},{r.code},{late}")
    return ("\r\n".join(lines) + "\r\n").encode()


def break_body(body: bytes, broken: str | None, kind: str) -> bytes:
    if broken == "utf8":
        return body[: len(body) // 2] + b"\xff\xfe\x80" + body[len(body) // 2 :]
    if broken == "quote" and kind == "csv":
        # An unterminated quote after the header would swallow every later line into one "row".
        header, _, rest = body.partition(b"\r\n")
        return header + b'\r\n"' + ON_ROLL[0].encode() + b",2024-09-03,AM,/,\r\n" + rest
    if broken == "quote":
        return body[:-2]  # JSON cut short
    return body


class Register:
    """The test's own model of the school's register: (upn, date, session) -> code."""

    def __init__(self) -> None:
        self.marks: dict[tuple[str, str, str], str] = {}

    def apply(self, rows: list[Row]) -> tuple[int, int, int]:
        accepted = amended = unchanged = 0
        for r in rows:
            if not r.good:
                continue
            key = (r.upn, r.date, r.session)
            before = self.marks.get(key)
            if before is None:
                accepted += 1
            elif before == r.code:
                unchanged += 1
            else:
                amended += 1
            self.marks[key] = r.code
        return accepted, amended, unchanged


async def stored(live: LiveService) -> dict[tuple[str, str, str], str]:
    engine = live.app.state.runtime.engine
    m = t.marks.c
    async with engine.connect() as conn:
        rows = await conn.execute(select(m.upn, m.date, m.session, m.code).where(m.school_urn == URN))
        return {(r.upn, r.date.isoformat(), r.session): r.code for r in rows}


@pytest.fixture(params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)])
def ingest(request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path: Path) -> Iterator[LiveService]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'ingest.db'}"
    else:
        make: Callable[[], Awaitable[str]] = request.getfixturevalue("postgres_databases")
        url = asyncio.run(make())
    settings = {"rate_limit_enabled": False, "consumer_group": f"batches-{uuid.uuid4().hex[:8]}"}
    with LiveService("ingest", url, kafka_bootstrap, **settings) as live:
        assert live.client is not None
        client = live.client
        roll = [pupil(n, ESTAB) for n in (1, 2, 3)]
        roll.append(pupil(4, ESTAB, leaving_date="2024-10-31"))
        roll.append(pupil(5, ESTAB, admission_date="2025-01-06"))
        live.run(setup_school(client, URN, roll))
        yield live


@pytest.mark.parametrize("kind", ["json", "csv"])
def test_junk_rows_never_stored_good_rows_never_lost(ingest: LiveService, kind: str) -> None:
    register = Register()
    headers = bearer("marks:write", [URN])
    assert ingest.client is not None
    client = ingest.client
    seen = {"batches": 0, "rows": 0, "good": 0, "junk": 0, "whole_body_400": 0}
    content_type = "application/json" if kind == "json" else "text/csv"

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(batch=batches)
    def check(batch: Batch) -> None:
        rows = batch.rows
        body = break_body(json_body(rows) if kind == "json" else csv_body(rows), batch.broken, kind)
        r = ingest.run(
            client.post(
                f"/v1/schools/{URN}/marks", content=body, headers={**headers, "Content-Type": content_type}
            )
        )
        seen["batches"] += 1
        seen["rows"] += len(rows)
        if batch.broken is not None:
            assert r.status_code == 400, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            seen["whole_body_400"] += 1
        else:
            assert r.status_code == 200, r.text
            result = r.json()
            bad = {i for i, row in enumerate(rows) if not row.good}
            rejected = {x["index"]: x for x in result["rejected"]}
            assert set(rejected) == bad, [(i, rows[i].why, rejected.get(i)) for i in bad ^ set(rejected)]
            for i in bad:
                assert rejected[i]["detail"]
            accepted, amended, unchanged = register.apply(rows)
            assert (result["accepted"], result["amended"], result["unchanged"]) == (
                accepted,
                amended,
                unchanged,
            )
            assert accepted + amended + unchanged + len(bad) == len(rows)
            seen["good"] += len(rows) - len(bad)
            seen["junk"] += len(bad)
        # The database holds exactly the model's register: nothing bad stored, nothing good lost.
        assert ingest.run(stored(ingest)) == register.marks

    check()
    print(f"\n[batches {kind}] {seen}, register holds {len(register.marks)} marks")
    assert seen["good"] > 0
    assert seen["junk"] > 0
    assert seen["whole_body_400"] > 0
