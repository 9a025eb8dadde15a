"""End to end through ingest, rules and legal, each with its own database, over real Kafka.

A school's register with two penalty-threshold episodes (10 G sessions in September, 10 U sessions
in January) is POSTed to ingest; rules raises ``penalty_threshold_met`` twice; legal opens one case
for review. An officer then issues a first notice (paid at £80 by day 21) and a second (£160 flat,
28 days), is refused a third within 3 years, moves the case to prosecution, and reads the
evidence pack (JSON and HTML) with the register of the offence period.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import bearer
from tests.integration.ingest_fixtures import pupil, read_topic, service_client, setup_school

pytestmark = pytest.mark.integration
READ, WRITE = "legal:read", "legal:read legal:write"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def stack(
    request: pytest.FixtureRequest, tmp_path: Any, kafka_bootstrap: str
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    if request.param == "sqlite":
        urls = [f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}" for name in ("ingest", "rules", "legal")]
    else:
        make = request.getfixturevalue("postgres_databases")
        urls = [await make() for _ in range(3)]
    tag = uuid.uuid4().hex[:8]
    async with (
        service_client("ingest", urls[0], kafka_bootstrap) as ingest,
        service_client(
            "rules", urls[1], kafka_bootstrap, consumer_group=f"test-rules-{tag}", scheduler_seconds=3600
        ),
        service_client(
            "legal", urls[2], kafka_bootstrap, consumer_group=f"test-legal-{tag}", scheduler_seconds=3600
        ) as legal,
    ):
        yield ingest, legal


def school_sessions(start: str, end: str) -> list[tuple[str, str]]:
    """The fixture calendar's sessions (ingest_fixtures.setup_school): terms, minus 13 Sep PM."""
    breaks = [("2024-10-26", "2024-11-03"), ("2024-12-21", "2025-01-05"), ("2025-02-15", "2025-02-23")]
    d, last, out = dt.date.fromisoformat(start), dt.date.fromisoformat(end), []
    while d <= last:
        iso = d.isoformat()
        if d.weekday() < 5 and not any(a <= iso <= b for a, b in breaks):
            out.extend((iso, s) for s in ("AM", "PM") if (iso, s) != ("2024-09-13", "PM"))
        d += dt.timedelta(days=1)
    return out


async def poll(client: httpx.AsyncClient, path: str, until: Any, seconds: float = 60, **params: Any) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    body: Any = None
    while asyncio.get_running_loop().time() < deadline:
        r = await client.get(path, params=params, headers=bearer(READ))
        if r.status_code == 200:
            body = r.json()
            if until(body):
                return body
        await asyncio.sleep(0.3)
    raise AssertionError(f"{path} never satisfied the condition: {body}")


async def test_threshold_marks_to_prosecution_with_evidence(
    stack: tuple[httpx.AsyncClient, httpx.AsyncClient], kafka_bootstrap: str
) -> None:
    ingest, legal = stack
    urn = str(150000 + uuid.uuid4().int % 9000)
    child = pupil(int(urn) % 900 + 50, 6000 + int(urn) % 1000)
    upn, parent = child["upn"], child["parents"][0]["id"]
    await setup_school(ingest, urn, [child])
    sessions = school_sessions("2024-09-03", "2025-02-28")
    holiday = {(d, s) for d, s in sessions if "2024-09-16" <= d <= "2024-09-20"}
    late = {(d, s) for d, s in sessions if "2025-01-13" <= d <= "2025-01-17"}
    assert len(holiday) == len(late) == 10
    code = dict.fromkeys(holiday, "G") | dict.fromkeys(late, "U")
    marks = [
        {"upn": upn, "date": d, "session": s, "code": code.get((d, s), "/" if s == "AM" else "\\")}
        for d, s in sessions
    ]
    r = await ingest.post(
        f"/v1/schools/{urn}/marks", json={"marks": marks}, headers=bearer("marks:write", [urn])
    )
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == len(marks)

    # A case appears in legal for review, with both offences rules detected.
    listed = await poll(legal, "/v1/cases", lambda b: len(b["items"]) == 1, upn=upn)
    cid = listed["items"][0]["id"]
    # Signals and the registry are different topics: wait until legal also knows the pupil and school.
    case = await poll(
        legal,
        f"/v1/cases/{cid}",
        lambda b: len(b["offences"]) == 2 and b["pupil"]["date_of_birth"] and b["school"]["la_code"],
    )
    assert case["pupil"]["compulsory_school_age"] == {"from": "2021-08-31", "to": "2032-06-25"}
    assert (case["state"], case["opened_by"], case["opened_on"]) == ("support", "system", "2024-09-20")
    assert [o["met_on"] for o in case["offences"]] == ["2024-09-20", "2025-01-17"]
    assert case["penalty_notices"] == []  # legal never issues a notice by itself
    r = await legal.patch(
        f"/v1/cases/{cid}",
        json={"lead_officer": "officer.e2e", "parents": [{"id": parent, "name": "Sam Smith"}]},
        headers=bearer(WRITE),
    )
    assert r.status_code == 200, r.text

    async def issue(on: str) -> httpx.Response:
        return await legal.post(
            f"/v1/cases/{cid}/penalty-notices",
            json={"parent_id": parent, "issued_on": on},
            headers=bearer(WRITE, la="343"),
        )

    r = await issue("2024-10-01")
    assert r.status_code == 201, r.text
    first = r.json()
    assert (first["sequence"], first["amount_if_paid_by_day_21"], first["amount_if_paid_by_day_28"]) == (
        1,
        80,
        160,
    )
    assert (first["pay_reduced_by"], first["pay_by"]) == ("2024-10-22", "2024-10-29")
    paid = await legal.post(
        f"/v1/cases/{cid}/penalty-notices/{first['id']}/payments",
        json={"paid_on": "2024-10-22", "amount": 80},
        headers=bearer(WRITE),
    )
    assert paid.status_code == 200, paid.text
    r = await issue("2025-01-20")
    assert r.status_code == 201, r.text
    second = r.json()
    assert (second["sequence"], second["amount_if_paid_by_day_21"], second["amount_if_paid_by_day_28"]) == (
        2,
        160,
        160,
    )
    assert (second["pay_reduced_by"], second["pay_by"]) == (None, "2025-02-17")
    third = await issue("2025-03-03")
    assert third.status_code == 409
    assert third.json()["rule"] == "third_penalty_notice_in_3_years"

    r = await legal.post(
        f"/v1/cases/{cid}/transitions",
        json={"to": "prosecution", "reason": "second notice unpaid"},
        headers=bearer(WRITE),
    )
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "prosecution"
    assert {n["id"]: n["status"] for n in r.json()["penalty_notices"]} == {
        first["id"]: "paid",
        second["id"]: "prosecuted",
    }

    # The strategy's counts: two notices (one paid) and one prosecution this year; none for another school.
    year = {"from": "2024-09-01", "to": "2025-08-31"}
    fig = (await legal.get("/v1/figures", params=year, headers=bearer(READ))).json()
    assert fig["penalty_notices"] == {"issued": 2, "first": 1, "second": 1, "paid": 1, "withdrawn": 0}
    assert fig["interventions"]["prosecution"] == 1
    assert [(m["month"], m["penalty_notices"]) for m in fig["by_month"] if m["penalty_notices"]] == [
        ("2024-10", 1),
        ("2025-01", 1),
    ]
    other = (await legal.get("/v1/figures", params=year, headers=bearer(READ, ["999999"]))).json()
    assert other["penalty_notices"]["issued"] == 0
    assert other["by_school"] == []
    autumn = (await legal.get("/v1/figures", params={"from": "2024-09-01", "to": "2024-12-31"},
                              headers=bearer(READ))).json()  # fmt: skip
    assert autumn["penalty_notices"]["issued"] == 1

    ev = (await legal.get(f"/v1/cases/{cid}/evidence", headers=bearer(READ))).json()
    period = ev["offence_period"]
    assert period["to"] == "2025-01-17"
    expected = [(d, s) for d, s in sessions if period["from"] <= d <= period["to"]]
    assert [(x["date"], x["session"]) for x in ev["register"]] == expected
    assert [x["code"] for x in ev["register"] if x["category"] == "unauthorised"] == ["G"] * 10 + ["U"] * 10
    assert {s["type"] for s in ev["signals"]} >= {"penalty_threshold_met"}
    assert [n["status"] for n in ev["penalty_notices"]] == ["paid", "prosecuted"]
    html = (await legal.get(f"/v1/cases/{cid}/evidence", headers=bearer(READ) | {"Accept": "text/html"})).text
    rows = re.findall(r"<tr><td>(\d{4}-\d\d-\d\d)</td><td>(AM|PM)</td><td>([^<]*)</td>", html)
    assert [(d, s) for d, s, _ in rows] == expected
    assert [c for _, _, c in rows if c in ("G", "U")] == ["G"] * 10 + ["U"] * 10

    def mine(e: dict[str, Any]) -> bool:
        return e["data"].get("case_id") == cid

    events = await read_topic(kafka_bootstrap, "rollcall.legal.v1", mine, 5, wait_seconds=30)
    types = [e["type"] for _, e, _ in events]
    assert types.count("penalty_notice.issued") == 2
    assert types.count("case.opened") == 1
    assert [e["data"]["to"] for _, e, _ in events if e["type"] == "case.transitioned"] == [
        "penalty_notice",
        "prosecution",
    ]
    assert {k.decode() for k, _, _ in events} == {cid}
