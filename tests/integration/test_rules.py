"""The rules service against real Kafka and a real database: ingest → Kafka → rules.

Marks POSTed to ingest are consumed by rules, which recomputes the pupil and publishes signals.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.rules import reports, worker
from tests.conftest import bearer, token
from tests.integration.ingest_fixtures import pupil, read_topic, service_client, setup_school

pytestmark = pytest.mark.integration
_urns = itertools.count(120001)
READ = "attendance:read"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_urls(request: pytest.FixtureRequest, tmp_path: Any) -> tuple[str, str]:
    """A database for ingest and one for rules: each service owns its own."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'ingest.db'}", f"sqlite+aiosqlite:///{tmp_path / 'rules.db'}"
    make = request.getfixturevalue("postgres_databases")
    return await make(), await make()


@pytest.fixture
async def clients(
    db_urls: tuple[str, str], kafka_bootstrap: str
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    ingest_url, rules_url = db_urls
    async with (
        service_client("ingest", ingest_url, kafka_bootstrap) as ingest,
        service_client("rules", rules_url, kafka_bootstrap, consumer_group=f"test-{uuid.uuid4().hex[:8]}",
                       scheduler_seconds=3600) as rules,
    ):  # fmt: skip
        yield ingest, rules


async def wait_for(
    rules: httpx.AsyncClient, upn: str, possible: int, school: str, seconds: float = 60
) -> dict[str, Any]:
    """The pupil's attendance once rules has consumed ``possible`` sessions."""
    deadline = asyncio.get_running_loop().time() + seconds
    body: dict[str, Any] = {}
    while asyncio.get_running_loop().time() < deadline:
        r = await rules.get(
            f"/v1/pupils/{upn}/attendance", params={"from": "2024-09-01"}, headers=bearer(READ, [school])
        )
        if r.status_code == 200:
            body = r.json()
            if body["sessions"]["possible"] >= possible:
                return body
        await asyncio.sleep(0.3)
    raise AssertionError(f"rules did not reach {possible} possible sessions: {body}")


def days(start: str, n: int) -> list[dt.date]:
    d, out = dt.date.fromisoformat(start), []
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d += dt.timedelta(days=1)
    return out


async def test_marks_flow_to_attendance_and_signals(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], kafka_bootstrap: str
) -> None:
    ingest, rules = clients
    urn = str(next(_urns))
    cla = pupil(1, 3000 + int(urn) % 1000)
    regular = pupil(2, 3000 + int(urn) % 1000)
    await setup_school(ingest, urn, [cla, regular])
    r = await ingest.put(f"/v1/pupils/{cla['upn']}/care", json={"cin": False, "cp": False, "cla": True,
                         "early_help": False, "etac": False}, headers=bearer("care:write"))  # fmt: skip
    assert r.status_code == 200, r.text
    # Ten school days from Tue 3 Sep 2024: the CLA pupil misses the first morning (N), the
    # regular pupil has 12 unauthorised sessions (G, then U) and is otherwise present.
    sessions = [(d, s) for d in days("2024-09-03", 10) for s in ("AM", "PM")]
    sessions = [x for x in sessions if x != (dt.date(2024, 9, 13), "PM")]  # closed PM in the fixture calendar
    marks = []
    for i, (d, s) in enumerate(sessions):
        marks.append({"upn": cla["upn"], "date": d.isoformat(), "session": s, "code": "N" if i == 0 else "/"})
        marks.append({"upn": regular["upn"], "date": d.isoformat(), "session": s,
                      "code": "G" if i < 8 else ("U" if i < 12 else "/")})  # fmt: skip
    r = await ingest.post(
        f"/v1/schools/{urn}/marks", json={"marks": marks}, headers=bearer("marks:write", [urn])
    )
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == len(marks)

    body = await wait_for(rules, regular["upn"], len(sessions), urn)
    assert body["school_urn"] == urn
    assert body["sessions"] == {"possible": 19, "present": 7, "aea": 0, "authorised": 0, "unauthorised": 12,
                                "not_counted": 0}  # fmt: skip
    assert body["attendance_rate"] == pytest.approx(7 / 19 * 100)
    assert body["band"] == "severe"
    assert body["severe_absence"] is True
    assert body["penalty_window"]["unauthorised_sessions"] == 12
    assert body["penalty_window"]["threshold_met"] is True
    cla_body = await wait_for(rules, cla["upn"], len(sessions), urn)
    assert cla_body["sessions"]["unauthorised"] == 1

    def mine(e: dict[str, Any]) -> bool:
        return e["data"]["school_urn"] == urn

    signals = await read_topic(kafka_bootstrap, "rollcall.signals.v1", mine, 4, wait_seconds=30)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for key, event, headers in signals:
        by_type.setdefault(event["type"], []).append(event)
        assert key.decode() == event["data"]["upn"]
        assert headers["ce_type"].decode() == event["type"]
    first_day = by_type["signal.first_day_absence"]
    assert [e["data"]["upn"] for e in first_day] == [cla["upn"]]
    assert first_day[0]["data"]["started_on"] == "2024-09-03"
    assert "signal.penalty_threshold_met" in by_type
    assert by_type["signal.penalty_threshold_met"][0]["data"]["upn"] == regular["upn"]
    assert "signal.severe_absence_started" in by_type

    # The same signals through the API, cursor-paginated, newest last.
    r = await rules.get("/v1/signals", params={"school": urn, "limit": 2}, headers=bearer(READ))
    page = r.json()
    assert len(page["items"]) == 2
    r2 = await rules.get(
        "/v1/signals", params={"school": urn, "cursor": page["next_cursor"]}, headers=bearer(READ)
    )
    seqs = [i["id"] for i in page["items"] + r2.json()["items"]]
    assert len(seqs) == len(set(seqs)) == len([s for s in signals if s[1]["data"]["school_urn"] == urn])

    # School and LA figures sum sessions over enrolments.
    r = await rules.get(f"/v1/schools/{urn}/attendance", params={"from": "2024-09-01", "to": "2024-09-30"},
                        headers=bearer(READ, [urn]))  # fmt: skip
    school = r.json()
    assert school["sessions"]["possible"] == 38
    assert school["severe_absence"] == 1
    assert school["pupils_by_band"]["severe"] == 1
    r = await rules.get(f"/v1/schools/{urn}/attendance", headers=bearer(READ, ["999999"]))
    assert r.status_code == 403

    # The dashboard (same data, HTML): the school user's KPIs and pupil page; another school's
    # user gets the same 404 page as for an unknown pupil.
    def session(*args: Any) -> dict[str, str]:
        return {"Cookie": f"rollcall_session={token(*args)}"}

    page = await rules.get("/dashboard", headers=session(READ, [urn]))
    assert page.status_code == 200, page.text
    assert f">{13 / 38 * 100:.1f}%<" in page.text  # unauthorised absence: 12 + 1 of 38 sessions
    assert page.text.count('<svg class="chart"') == 4
    assert page.headers["server-timing"].startswith("app;dur=")
    page = await rules.get(f"/dashboard/pupils/{regular['upn']}", headers=session(READ, [urn]))
    assert page.text.count('class="session unauthorised"') == 12
    other = await rules.get(f"/dashboard/pupils/{regular['upn']}", headers=session(READ, ["999999"]))
    unknown = await rules.get("/dashboard/pupils/A999999999999", headers=session(READ, ["999999"]))
    assert other.status_code == unknown.status_code == 404
    r = await rules.get("/dashboard", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/dashboard/sign-in?next=%2Fdashboard")
    period = {"schools": urn, "before_from": "2024-09-03", "before_to": "2024-09-06",
              "after_from": "2024-09-09", "after_to": "2024-09-30"}  # fmt: skip
    page = await rules.get("/dashboard/compare", params=period, headers=session(f"{READ} admin"))
    assert page.status_code == 200, page.text
    # Tue 3 – Fri 6 Sep: 16 sessions, of which 8 G (regular) + 1 N (CLA) are absences.
    assert f"<td>{9 / 16 * 100:.1f}%</td>" in page.text


async def test_amendment_ends_the_threshold_episode(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], kafka_bootstrap: str
) -> None:
    ingest, rules = clients
    urn = str(next(_urns))
    p = pupil(7, 3000 + int(urn) % 1000)
    await setup_school(ingest, urn, [p])
    sessions = [(d, s) for d in days("2024-09-03", 5) for s in ("AM", "PM")]
    marks = [{"upn": p["upn"], "date": d.isoformat(), "session": s, "code": "N"} for d, s in sessions]
    headers = bearer("marks:write", [urn])
    assert (
        await ingest.post(f"/v1/schools/{urn}/marks", json={"marks": marks}, headers=headers)
    ).status_code == 200
    body = await wait_for(rules, p["upn"], 10, urn)
    assert body["penalty_window"]["threshold_met"] is True
    # The school learns the pupil was ill: N → I for one session un-meets the threshold.
    amend = [{**marks[0], "code": "I"}]
    r = await ingest.post(f"/v1/schools/{urn}/marks", json={"marks": amend}, headers=headers)
    assert r.json()["amended"] == 1
    for _ in range(100):
        body = (await rules.get(f"/v1/pupils/{p['upn']}/attendance", headers=bearer(READ, [urn]))).json()
        if body["penalty_window"]["unauthorised_sessions"] == 9:
            break
        await asyncio.sleep(0.3)
    assert body["penalty_window"]["threshold_met"] is False
    # The daily sums behind the weekly trend moved the session from unauthorised to authorised.
    async with rules.app.state.runtime.engine.connect() as conn:  # type: ignore[attr-defined]
        by_day = await reports.day_counts(conn, dt.date(2024, 9, 1), dt.date(2024, 9, 30), [urn])
    week = reports.by_week(by_day)
    assert [(w["week_start"], w["sessions"]["unauthorised"], w["sessions"]["authorised"]) for w in week] == [
        ("2024-09-02", 7, 1),  # Tue 3 – Fri 6 September: 8 sessions, the first amended to I
        ("2024-09-09", 2, 0),
    ]
    async with rules.app.state.runtime.engine.connect() as conn:  # type: ignore[attr-defined]
        (pupil_weeks,) = await reports.enrolments_in_weeks(
            conn, dt.date(2024, 9, 2), dt.date(2024, 9, 9), [urn]
        )
    c = pupil_weeks.counts
    assert (c.possible, c.unauthorised, c.authorised) == (10, 9, 1)

    def mine(e: dict[str, Any]) -> bool:
        return e["data"]["school_urn"] == urn and "penalty" in e["type"]

    events = await read_topic(kafka_bootstrap, "rollcall.signals.v1", mine, 2, wait_seconds=30)
    assert [e["type"] for _, e, _ in events] == [
        "signal.penalty_threshold_met",
        "signal.penalty_threshold_met_ended",
    ]


async def test_pupil_of_another_school_is_not_found(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    ingest, rules = clients
    urn = str(next(_urns))
    p = pupil(9, 3000 + int(urn) % 1000)
    await setup_school(ingest, urn, [p])
    marks = [{"upn": p["upn"], "date": "2024-09-03", "session": "AM", "code": "/"}]
    await ingest.post(f"/v1/schools/{urn}/marks", json={"marks": marks}, headers=bearer("marks:write", [urn]))
    await wait_for(rules, p["upn"], 1, urn)
    other = await rules.get(f"/v1/pupils/{p['upn']}/attendance", headers=bearer(READ, ["100000"]))
    missing = await rules.get("/v1/pupils/A343200018999/attendance", headers=bearer(READ, ["100000"]))
    assert other.status_code == missing.status_code == 404
    assert other.json()["detail"] == missing.json()["detail"]
    assert (await rules.get(f"/v1/pupils/{p['upn']}/attendance")).status_code == 401
    assert (
        await rules.get(f"/v1/pupils/{p['upn']}/attendance", headers=bearer("marks:write"))
    ).status_code == 403


async def test_scheduler_raises_unresolved_n_with_time(
    db_urls: tuple[str, str], kafka_bootstrap: str
) -> None:
    """An N on Mon 24 Feb, still N with the register kept up to Mon 3 Mar (5 school days later):
    unresolved from 3 Mar. Rules' clock starts on Fri 28 Feb and the scheduler moves it on."""
    ingest_url, rules_url = db_urls
    friday = dt.datetime(2025, 2, 28, 9, 0, tzinfo=dt.UTC)
    async with (
        service_client("ingest", ingest_url, kafka_bootstrap) as ingest,
        service_client("rules", rules_url, kafka_bootstrap, clock=lambda: friday,
                       consumer_group=f"test-{uuid.uuid4().hex[:8]}", scheduler_seconds=3600) as rules,
    ):  # fmt: skip
        urn = str(next(_urns))
        p = pupil(11, 3000 + int(urn) % 1000)
        await setup_school(ingest, urn, [p])
        sessions = [(d, s) for d in days("2025-02-24", 6) for s in ("AM", "PM")]
        marks = [{"upn": p["upn"], "date": d.isoformat(), "session": s, "code": "/"} for d, s in sessions]
        marks[0]["code"] = "N"
        await ingest.post(
            f"/v1/schools/{urn}/marks", json={"marks": marks}, headers=bearer("marks:write", [urn])
        )
        await wait_for(rules, p["upn"], 10, urn)  # up to Friday: 10 sessions
        runtime = rules.app.state.runtime  # type: ignore[attr-defined]
        query = {"upn": p["upn"], "type": "unresolved_n"}
        assert (await rules.get("/v1/signals", params=query, headers=bearer(READ))).json()["items"] == []
        runtime.clock = lambda: friday + dt.timedelta(days=3)
        outcome = await worker.tick(runtime)
        assert outcome.signals >= 1
        items = (await rules.get("/v1/signals", params=query, headers=bearer(READ))).json()["items"]
        assert [i["occurred_on"] for i in items] == ["2025-02-24"]
