"""Issue 7, data protection, through all four services (real Kafka; SQLite, then PostgreSQL).

Two looked-after pupils of one school, each with a week's holiday in September (a penalty-notice
threshold: rules raises ``penalty_threshold_met``, legal opens a case) and an ``N`` this morning (a
first-day absence: notifications raises alerts). Then:

- every read of pupil-level data leaves one audit row in the service that answered — who (token
  ``sub``, schools, LA), when, the route template, the UPNs returned, the ``Rollcall-Purpose``
  header as sent (``unspecified`` without one), the status — and aggregate reads leave none;
- ``GET /v1/audit`` is admin only, filters by UPN, ``sub`` and time, pages with a cursor, and
  is audited itself;
- each service's ``GET /v1/pupils/{upn}/export`` holds the pupil's own marks, signals, case and
  alerts and nothing about the other pupil, and ``shared.sar`` gathers the four into one document.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from shared import sar
from shared.audit import PURPOSE_HEADER
from tests.conftest import bearer, token
from tests.integration.ingest_fixtures import pupil, service_client, setup_school
from tests.integration.notifications_fixtures import ADMIN, TODAY, Clock, notifications_client, wait_registry

pytestmark = pytest.mark.integration
_schools = itertools.count(7000 + os.getpid() % 900 * 3)
SERVICES = ("ingest", "rules", "legal", "notifications")


@dataclass
class Flow:
    clients: dict[str, httpx.AsyncClient]
    urn: str
    a: dict[str, Any]  # the pupil whose data is read and exported
    b: dict[str, Any]  # another pupil of the same school
    case_a: str


def sessions(start: str, end: str) -> list[tuple[str, str]]:
    """The fixture calendar's sessions (ingest_fixtures.setup_school): terms, minus 13 Sep PM."""
    breaks = [("2024-10-26", "2024-11-03"), ("2024-12-21", "2025-01-05"), ("2025-02-15", "2025-02-23")]
    d, last, out = dt.date.fromisoformat(start), dt.date.fromisoformat(end), []
    while d <= last:
        iso = d.isoformat()
        if d.weekday() < 5 and not any(x <= iso <= y for x, y in breaks):
            out.extend((iso, s) for s in ("AM", "PM") if (iso, s) != ("2024-09-13", "PM"))
        d += dt.timedelta(days=1)
    return out


async def poll(
    client: httpx.AsyncClient, path: str, until: Any, headers: dict[str, str], **params: Any
) -> Any:
    body: Any = None
    for _ in range(300):
        r = await client.get(path, params=params, headers=headers)
        if r.status_code == 200:
            body = r.json()
            if until(body):
                return body
        await asyncio.sleep(0.3)
    raise AssertionError(f"{path} never satisfied the condition: {body}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def flow(request: pytest.FixtureRequest, tmp_path: Any, kafka_bootstrap: str) -> AsyncIterator[Flow]:
    if request.param == "sqlite":
        urls = {s: f"sqlite+aiosqlite:///{tmp_path / f'{s}.db'}" for s in SERVICES}
    else:
        make = request.getfixturevalue("postgres_databases")
        urls = {s: await make() for s in SERVICES}
    tag = uuid.uuid4().hex[:8]
    clock = Clock()
    estab = next(_schools)
    urn = f"17{estab:04d}"
    a = pupil(1, estab, given_name="Adaeze", family_name="Okonkwo", home_postcode="L21 4PQ",
              date_of_birth="2016-02-11")  # fmt: skip
    b_parents = [{"id": "PARENT-B-77", "name": "Morwenna Quigley"}]
    b = pupil(2, estab, given_name="Bartholomew", family_name="Quigley", home_postcode="PR9 7ZX",
              date_of_birth="2016-07-23", parents=b_parents)  # fmt: skip
    async with (
        service_client("ingest", urls["ingest"], kafka_bootstrap, clock=clock) as ingest,
        service_client("rules", urls["rules"], kafka_bootstrap, clock=clock, consumer_group=f"t-rules-{tag}",
                       scheduler_seconds=3600) as rules,
        service_client("legal", urls["legal"], kafka_bootstrap, clock=clock, consumer_group=f"t-legal-{tag}",
                       scheduler_seconds=3600) as legal,
        notifications_client(urls["notifications"], kafka_bootstrap, clock=clock) as notifications,
    ):  # fmt: skip
        await setup_school(ingest, urn, [a, b])
        care = {"cin": False, "cp": False, "cla": True, "early_help": False, "etac": False}
        for rid, role in (
            ("sw-1", "social_worker"),
            ("vs", "virtual_school"),
            ("ao-1", "attendance_officer"),
        ):
            r = await notifications.put(
                f"/v1/recipients/{rid}", json={"name": rid, "role": role}, headers=ADMIN
            )
            assert r.status_code == 200, r.text
        r = await notifications.put(f"/v1/allocations/schools/{urn}", json={"attendance_officer": "ao-1"},
                                    headers=ADMIN)  # fmt: skip
        assert r.status_code == 200
        for p in (a, b):
            r = await ingest.put(f"/v1/pupils/{p['upn']}/care", json=care, headers=bearer("care:write"))
            assert r.status_code == 200, r.text
            path = f"/v1/allocations/pupils/{p['upn']}"
            assert (
                await notifications.put(path, json={"social_worker": "sw-1"}, headers=bearer("care:write"))
            ).status_code == 200
            await wait_registry(notifications, p["upn"])
        holiday = {(d, s) for d, s in sessions("2024-09-16", "2024-09-20")}
        marks = [
            {
                "upn": p["upn"],
                "date": d,
                "session": s,
                "code": "G" if (d, s) in holiday else "/" if s == "AM" else "\\",
            }
            for p in (a, b)
            for d, s in sessions("2024-09-03", "2025-02-28")
        ] + [{"upn": p["upn"], "date": TODAY.isoformat(), "session": "AM", "code": "N"} for p in (a, b)]
        r = await ingest.post(
            f"/v1/schools/{urn}/marks", json={"marks": marks}, headers=bearer("marks:write", [urn])
        )
        assert r.json()["accepted"] == len(marks), r.text

        legal_read = bearer("legal:read")
        cases = await poll(legal, "/v1/cases", lambda x: len(x["items"]) == 1, legal_read, upn=a["upn"])
        await poll(legal, "/v1/cases", lambda x: len(x["items"]) == 1, legal_read, upn=b["upn"])
        # The signal can open the case before legal has read the pupil's record (another topic):
        # its parents join the case when the record arrives.
        await poll(legal, f"/v1/cases/{cases['items'][0]['id']}", lambda x: x["parents"], legal_read)
        alerts_read = bearer("alerts:read")
        for p in (a, b):
            await poll(notifications, "/v1/alerts", lambda x: len(x["items"]) >= 4, alerts_read, upn=p["upn"])
            await poll(rules, "/v1/signals", lambda x: len(x["items"]) >= 2, bearer("attendance:read"),
                       upn=p["upn"], school=urn)  # fmt: skip
        yield Flow({"ingest": ingest, "rules": rules, "legal": legal, "notifications": notifications},
                   urn, a, b, cases["items"][0]["id"])  # fmt: skip


async def audit_rows(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every audit row, straight from the database (not through the API, which audits itself)."""
    app = client.app  # type: ignore[attr-defined]
    tables = __import__(f"services.{app.state.runtime.settings.service}.tables", fromlist=["audit"]).audit
    async with app.state.runtime.engine.connect() as conn:
        rows = [dict(r._mapping) for r in await conn.execute(select(tables.log).order_by(tables.log.c.id))]
        subjects = (await conn.execute(select(tables.subjects))).all()
    for row in rows:
        row["upns"] = sorted(s.upn for s in subjects if s.audit_id == row["id"])
    return rows


async def count(client: httpx.AsyncClient) -> int:
    app = client.app  # type: ignore[attr-defined]
    tables = __import__(f"services.{app.state.runtime.settings.service}.tables", fromlist=["audit"]).audit
    async with app.state.runtime.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(tables.log))).scalar_one())


def who(
    sub: str, scopes: str, schools: list[str] | None = None, purpose: str | None = None
) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token(scopes, schools, sub=sub)}"}
    if purpose is not None:
        headers[PURPOSE_HEADER] = purpose
    return headers


async def test_reads_are_audited_and_the_export_holds_one_pupil(flow: Flow) -> None:
    rules, legal, notifications = flow.clients["rules"], flow.clients["legal"], flow.clients["notifications"]
    a, b, urn = flow.a["upn"], flow.b["upn"], flow.urn

    # A pupil's attendance, read by a school user with a purpose: one row, with everything.
    before = await count(rules)
    headers = who("teacher-7", "attendance:read", [urn], purpose="Weekly attendance review, Y3")
    r = await rules.get(f"/v1/pupils/{a}/attendance", headers=headers)
    assert r.status_code == 200
    row = (await audit_rows(rules))[-1]
    assert await count(rules) == before + 1
    fields = ("sub", "schools", "la", "service", "method", "route", "purpose", "status", "upns")
    assert {k: row[k] for k in fields} == {
        "sub": "teacher-7", "schools": [urn], "la": None, "service": "rules", "method": "GET",
        "route": "/v1/pupils/{upn}/attendance", "purpose": "Weekly attendance review, Y3", "status": 200,
        "upns": [a],
    }  # fmt: skip
    # No purpose header: "unspecified". A refused look-up is on the record with its status.
    r = await rules.get(f"/v1/pupils/{a}/attendance", headers=who("nosy", "attendance:read", ["100001"]))
    assert r.status_code == 404
    row = (await audit_rows(rules))[-1]
    assert (row["sub"], row["purpose"], row["status"], row["upns"]) == ("nosy", "unspecified", 404, [a])
    # A purpose longer than 200 characters is refused before anything is read.
    r = await rules.get(f"/v1/pupils/{a}/attendance", headers=who("x", "attendance:read", purpose="x" * 201))
    assert r.status_code == 422
    # Lists record the UPNs of the page.
    r = await rules.get(
        "/v1/signals", params={"school": urn}, headers=who("la-1", "attendance:read", purpose="SA")
    )
    assert r.status_code == 200
    assert {s["upn"] for s in r.json()["items"]} == {a, b}
    row = (await audit_rows(rules))[-1]
    assert (row["route"], row["upns"]) == ("/v1/signals", sorted([a, b]))
    assert sorted(row["resources"]) == sorted(s["id"] for s in r.json()["items"])
    # Aggregate reads leave no row.
    before = await count(rules)
    assert (
        await rules.get(f"/v1/schools/{urn}/attendance", headers=bearer("attendance:read"))
    ).status_code == 200
    assert (await rules.get("/v1/la/attendance", headers=bearer("attendance:read"))).status_code == 200
    assert await count(rules) == before

    # Legal and notifications audit their pupil-level reads the same way.
    r = await legal.get(
        f"/v1/cases/{flow.case_a}", headers=who("officer-2", "legal:read", purpose="Case review")
    )
    assert r.status_code == 200
    row = (await audit_rows(legal))[-1]
    assert (row["route"], row["upns"], row["resources"], row["purpose"]) == (
        "/v1/cases/{case_id}",
        [a],
        [flow.case_a],
        "Case review",
    )
    r = await notifications.get("/v1/alerts", params={"upn": a}, headers=who("sys", "alerts:read"))
    assert r.status_code == 200
    row = (await audit_rows(notifications))[-1]
    assert (row["route"], row["upns"]) == ("/v1/alerts", [a])
    assert sorted(row["resources"]) == sorted(x["id"] for x in r.json()["items"])

    # The audit log: admin only; filters by UPN and sub; pages; reading it is audited too.
    assert (await rules.get("/v1/audit", headers=bearer("attendance:read"))).status_code == 403
    r = await rules.get(
        "/v1/audit", params={"upn": a, "sub": "teacher-7"}, headers=who("dpo", "admin", purpose="SAR")
    )
    assert r.status_code == 200
    (entry,) = r.json()["items"]
    assert (entry["sub"], entry["upns"], entry["purpose"], entry["route"]) == (
        "teacher-7",
        [a],
        "Weekly attendance review, Y3",
        "/v1/pupils/{upn}/attendance",
    )
    row = (await audit_rows(rules))[-1]
    assert (row["sub"], row["route"], row["upns"], row["purpose"]) == ("dpo", "/v1/audit", [a], "SAR")
    first = await rules.get("/v1/audit", params={"upn": a, "limit": 1}, headers=ADMIN)
    page2 = {"upn": a, "limit": 1, "cursor": first.json()["next_cursor"]}
    second = await rules.get("/v1/audit", params=page2, headers=ADMIN)
    assert first.json()["items"][0]["id"] < second.json()["items"][0]["id"]
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)).isoformat()
    assert (await rules.get("/v1/audit", params={"from": later}, headers=ADMIN)).json()["items"] == []
    assert (await rules.get("/v1/audit", params={"to": later, "upn": b}, headers=ADMIN)).json()["items"]

    # The subject-access export, gathered from the four services through shared.sar.
    class Route(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            app = flow.clients[request.url.host].app  # type: ignore[attr-defined]
            return await httpx.ASGITransport(app=app).handle_async_request(request)

    urls = {s: f"http://{s}" for s in SERVICES}
    assert (
        await flow.clients["ingest"].get(f"/v1/pupils/{a}/export", headers=bearer("attendance:read"))
    ).status_code == 403
    document = await sar.gather(a, urls, token("admin", sub="dpo"), "SAR 2025/117", transport=Route())
    ex = {name: body["tables"] for name, body in document["services"].items()}
    assert {m["date"] for m in ex["ingest"]["marks"]} >= {"2024-09-16", TODAY.isoformat()}
    assert ex["ingest"]["pupils"][0]["given_name"] == "Adaeze"
    assert (
        len(ex["ingest"]["marks"])
        == len(ex["rules"]["register"])
        == len(sessions("2024-09-03", "2025-02-28")) + 1
    )
    assert {s["type"] for s in ex["rules"]["signals"]} >= {"penalty_threshold_met", "first_day_absence"}
    assert [c["id"] for c in ex["legal"]["cases"]] == [flow.case_a]
    assert ex["legal"]["parents"]
    assert ex["legal"]["history"]
    assert len(ex["notifications"]["alerts"]) >= 4
    assert {x["upn"] for x in ex["notifications"]["alerts"]} == {a}
    assert any(x["route"] == "/v1/pupils/{upn}/attendance" for x in ex["rules"]["audit_log"])
    text = orjson.dumps(document).decode()
    for other in (b, "Bartholomew", "Quigley", "Morwenna", "PR9 7ZX", "2016-07-23", "PARENT-B-77"):
        assert other not in text, other
    for name in SERVICES:  # every export is audited with the purpose given
        row = (await audit_rows(flow.clients[name]))[-1]
        assert (row["sub"], row["route"], row["upns"], row["purpose"]) == (
            "dpo",
            "/v1/pupils/{upn}/export",
            [a],
            "SAR 2025/117",
        )


async def test_no_audit_row_no_data(tmp_path: Any, kafka_bootstrap: str) -> None:
    """If the audit row cannot be written, the answer is a 503 problem and the data is withheld."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'ingest.db'}"
    async with service_client("ingest", url, kafka_bootstrap) as ingest:
        child = pupil(1, 6999, given_name="Wilhelmina")
        await setup_school(ingest, "169999", [child])
        path = f"/v1/pupils/{child['upn']}/export"
        assert "Wilhelmina" in (await ingest.get(path, headers=ADMIN)).text
        engine = ingest.app.state.runtime.engine  # type: ignore[attr-defined]
        async with engine.begin() as conn:
            await conn.exec_driver_sql("DROP TABLE audit_subjects")  # the audit write now fails
        r = await ingest.get(path, headers=ADMIN)
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"] == "urn:rollcall:problem:unavailable"
        assert "Wilhelmina" not in r.text
