"""The legal API over httpx's ASGI transport, on real SQLite and PostgreSQL databases.

No broker here: the app's relay is off and Kafka unreachable, registry/register/signal events are
fed through ``projection.apply`` (the consumer's own handler), and what the service would publish
is read from its outbox. Every refusal is checked as a 409 problem naming its rule.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from services.legal import projection, worker
from services.legal import tables as t
from services.legal.app import create_app
from shared.codes import lookup
from shared.events import CloudEvent, new_event
from shared.migrate import upgrade
from shared.outbox import pending_events
from shared.service import Runtime
from shared.settings import Settings
from shared.upn import make_upn
from tests.conftest import bearer, postgres_admin_url

pytestmark = pytest.mark.integration

NOW = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.UTC)
TODAY = NOW.date()
WRITE = "legal:read legal:write"
READ = "legal:read"
TERMS = [
    {"start": "2024-09-03", "end": "2024-10-25"},
    {"start": "2024-11-04", "end": "2024-12-20"},
    {"start": "2025-01-06", "end": "2025-02-14"},
    {"start": "2025-02-24", "end": "2025-04-04"},
    {"start": "2025-04-22", "end": "2025-05-23"},
    {"start": "2025-06-02", "end": "2025-07-22"},
]
_serials = itertools.count(1)


# --- the app -----------------------------------------------------------------------------------


@asynccontextmanager
async def legal_app(db_url: str, **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """The legal app on ``db_url`` (migrated), relay off, clock at ``NOW``."""
    await asyncio.to_thread(upgrade, "legal", db_url)
    config = Settings(
        service="legal",
        env="test",
        database_url=db_url,
        kafka_bootstrap="127.0.0.1:9",
        relay_enabled=False,
        scheduler_seconds=3600,
        **settings,
    )
    app = create_app(config)
    async with app.router.lifespan_context(app):
        rt: Runtime = app.state.runtime
        rt.clock = lambda: NOW
        # No Kafka here, so the directory of social workers never arrives and every non-admin
        # request would be refused (fail closed): these tests declare it read, and empty.
        rt.state["directory"].loaded.set()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://legal"
        ) as client:
            yield client, rt


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    base = postgres_admin_url()
    assert base is not None
    dsn = base.replace("postgresql+asyncpg://", "postgresql://")
    name = f"rollcall_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield base.rsplit("/", 1)[0] + f"/{name}"
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            # An autovacuum worker on the new database cannot be terminated by a non-superuser:
            # wait for it rather than fail the run.
            for attempt in range(20):
                try:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    break
                except asyncpg.InsufficientPrivilegeError:
                    if attempt == 19:
                        raise
                    await asyncio.sleep(0.5)
        finally:
            await conn.close()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """One legal app per database for the module; tests use their own schools and pupils."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('legal') / 'legal.db'}"
        async with legal_app(url) as pair:
            yield pair
        return
    if not postgres_admin_url():
        pytest.skip("ROLLCALL_TEST_POSTGRES_URL is not set (run `make test`)")
    async with postgres_database() as url, legal_app(url) as pair:
        yield pair


@pytest.fixture
def clock(api: tuple[httpx.AsyncClient, Runtime]) -> Iterator[Any]:
    """Set the app's today for one test (restored afterwards)."""
    rt = api[1]

    def set_today(day: dt.date) -> None:
        rt.clock = lambda: dt.datetime.combine(day, dt.time(9), tzinfo=dt.UTC)

    yield set_today
    rt.clock = lambda: NOW


# --- feeding events ----------------------------------------------------------------------------


def event(type_: str, data: dict[str, Any]) -> CloudEvent:
    return CloudEvent.model_validate(new_event(type_, "urn:test", data))


async def feed(rt: Runtime, *events: CloudEvent) -> None:
    async with rt.engine.begin() as conn:
        await projection.apply(conn, list(events), rt.policy, rt.now())


def school_event(urn: str, la: str = "343", type_: str = "maintained") -> CloudEvent:
    data = {"urn": urn, "name": "Test <Primary> & Co", "la_code": la, "phase": "primary", "type": type_}
    return event("school.updated", data)


def pupil_event(upn: str, urn: str, dob: str = "2016-05-01", home_la: str = "343") -> CloudEvent:
    return event(
        "pupil.updated",
        {
            "upn": upn,
            "school_urn": urn,
            "date_of_birth": dob,
            "sex": "F",
            "year_group": "3",
            "home_la_code": home_la,
            "ward": None,
            "admission_date": "2022-09-01",
            "leaving_date": None,
            "fsm": False,
            "sen": "none",
            "ehcp_la_code": None,
            "parent_ids": ["P1", "P2"],
        },
    )


def mark_events(upn: str, urn: str, marks: list[tuple[str, str, str]]) -> list[CloudEvent]:
    return [
        event(
            "mark.recorded",
            {
                "school_urn": urn,
                "upn": upn,
                "date": d,
                "session": s,
                "code": c,
                "category": lookup(c, dt.date.fromisoformat(d)).category.value,
            },
        )
        for d, s, c in marks
    ]


def weekdays(start: str, end: str) -> list[str]:
    d, last, out = dt.date.fromisoformat(start), dt.date.fromisoformat(end), []
    while d <= last:
        if d.weekday() < 5:
            out.append(d.isoformat())
        d += dt.timedelta(days=1)
    return out


def threshold_signal(
    upn: str, urn: str, met_on: str, window_from: str, codes: list[tuple[str, str, str]], **extra: Any
) -> CloudEvent:
    return event(
        "signal.penalty_threshold_met",
        {
            "signal": "penalty_threshold_met",
            "upn": upn,
            "school_urn": urn,
            "episode": f"penalty_threshold_met:{urn}:{met_on}",
            "started_on": met_on,
            "ended_on": None,
            "occurred_on": met_on,
            "current": False,
            "withdrawn": False,
            "detail": {
                "sessions": len(codes),
                "threshold": 10,
                "school_weeks": 10,
                "window_from": window_from,
            },
            "evidence": [list(c) for c in codes],
            **extra,
        },
    )


def absences(days: list[str], code: str | list[str]) -> list[tuple[str, str, str]]:
    codes = [code] * (2 * len(days)) if isinstance(code, str) else code
    sessions = [(d, s) for d in days for s in ("AM", "PM")]
    return [(d, s, c) for (d, s), c in zip(sessions, codes, strict=True)]


# First offence: G/U in 16–20 Sep 2024 (met Fri 20 Sep); second: U in 13–17 Jan 2025.
SEPT = absences(weekdays("2024-09-16", "2024-09-20"), ["G"] * 4 + ["U"] * 6)
JAN = absences(weekdays("2025-01-13", "2025-01-17"), "U")


async def seed(
    rt: Runtime,
    *,
    school_type: str = "maintained",
    school_la: str = "343",
    home_la: str = "343",
    dob: str = "2016-05-01",
    cla: bool = False,
) -> tuple[str, str]:
    """A school, its calendar, a pupil with parents P1 and P2 and their September register."""
    serial = next(_serials)
    urn = str(130000 + serial)
    upn = make_upn(343, 4000 + serial, 18, serial % 1000)
    present = [
        (d, s, "/" if s == "AM" else "\\") for d in weekdays("2024-09-03", "2024-09-13") for s in ("AM", "PM")
    ]
    await feed(
        rt,
        school_event(urn, school_la, school_type),
        event("calendar.updated", {"school_urn": urn, "year": "2024-25", "terms": TERMS, "closed": []}),
        pupil_event(upn, urn, dob, home_la),
        event(
            "care.updated",
            {"upn": upn, "cin": False, "cp": False, "cla": cla, "early_help": False, "etac": False},
        ),
        *mark_events(upn, urn, present + SEPT),
    )
    return upn, urn


async def open_case(
    client: httpx.AsyncClient, upn: str, urn: str, parents: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    body = {
        "upn": upn,
        "school_urn": urn,
        "parents": parents or [{"id": "P1", "name": "Sam Smith"}, {"id": "P2", "name": "Alex Smith"}],
        "lead_officer": "officer.one",
        "opened_on": "2024-09-20",
    }
    r = await client.post("/v1/cases", json=body, headers=bearer(WRITE))
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def case_with_offence(
    client: httpx.AsyncClient, rt: Runtime, codes: list[tuple[str, str, str]] = SEPT, **seed_args: Any
) -> tuple[dict[str, Any], str, str]:
    upn, urn = await seed(rt, **seed_args)
    case = await open_case(client, upn, urn)
    await feed(rt, threshold_signal(upn, urn, "2024-09-20", "2024-07-15", codes))
    return case, upn, urn


async def notice(
    client: httpx.AsyncClient, case_id: str, parent: str, issued_on: str, **kw: Any
) -> httpx.Response:
    return await client.post(
        f"/v1/cases/{case_id}/penalty-notices",
        json={"parent_id": parent, "issued_on": issued_on},
        headers=kw.get("headers") or bearer(WRITE),
    )


async def move(client: httpx.AsyncClient, case_id: str, to: str, **body: Any) -> httpx.Response:
    return await client.post(
        f"/v1/cases/{case_id}/transitions",
        json={"to": to, "reason": f"to {to}", **body},
        headers=bearer(WRITE),
    )


def assert_rule(r: httpx.Response, rule: str, status: int = 409) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["rule"] == rule, body
    assert body["status"] == status
    if status == 409:
        assert body["type"] == "urn:rollcall:problem:legal-rule"


async def outbox(rt: Runtime, type_: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    async with rt.engine.connect() as conn:
        rows = await pending_events(conn, t.outbox)
    found = [(key, orjson.loads(value)) for topic, key, _, _, value in rows if topic == "rollcall.legal.v1"]
    return [(k, e) for k, e in found if type_ is None or e["type"] == type_]


# --- tests -------------------------------------------------------------------------------------


async def test_first_second_and_third_notice(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    client, rt = api
    case, upn, urn = await case_with_offence(client, rt)
    cid = case["id"]
    assert case["state"] == "support"
    assert [h["kind"] for h in case["history"]] == ["opened"]
    assert case["parents"] == [{"id": "P1", "name": "Sam Smith"}, {"id": "P2", "name": "Alex Smith"}]

    r = await notice(client, cid, "P1", "2024-10-01")
    assert r.status_code == 201, r.text
    first = r.json()
    assert {
        k: first[k]
        for k in (
            "sequence",
            "amount_if_paid_by_day_21",
            "amount_if_paid_by_day_28",
            "pay_reduced_by",
            "pay_by",
        )
    } == {
        "sequence": 1,
        "amount_if_paid_by_day_21": 80,
        "amount_if_paid_by_day_28": 160,
        "pay_reduced_by": "2024-10-22",
        "pay_by": "2024-10-29",
    }
    assert first["status"] == "unpaid"  # today is long past day 28
    assert first["action_required"] == "prosecute_or_withdraw"
    # The other parent, for the same offence: their own first notice; paid on day 21 at £80.
    second_parent = (await notice(client, cid, "P2", "2024-10-01")).json()
    pay = f"/v1/cases/{cid}/penalty-notices/{second_parent['id']}/payments"
    assert_rule(
        await client.post(pay, json={"paid_on": "2024-10-22", "amount": 160}, headers=bearer(WRITE)),
        "payment_amount_incorrect",
    )
    r = await client.post(pay, json={"paid_on": "2024-10-22", "amount": "80.00"}, headers=bearer(WRITE))
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["amount_paid"]) == ("paid", 80)
    assert_rule(
        await client.post(pay, json={"paid_on": "2024-10-23", "amount": 160}, headers=bearer(WRITE)),
        "penalty_notice_already_paid",
    )
    # P1 pays on day 22: the full £160; on day 29 it is too late.
    pay1 = f"/v1/cases/{cid}/penalty-notices/{first['id']}/payments"
    assert_rule(
        await client.post(pay1, json={"paid_on": "2024-10-30", "amount": 160}, headers=bearer(WRITE)),
        "payment_after_final_day",
    )
    assert_rule(
        await client.post(pay1, json={"paid_on": "2024-10-23", "amount": 80}, headers=bearer(WRITE)),
        "payment_amount_incorrect",
    )
    r = await client.post(pay1, json={"paid_on": "2024-10-23", "amount": 160}, headers=bearer(WRITE))
    assert r.json()["status"] == "paid"

    # A second offence, then a second notice to P1 within 3 years: £160 flat, 28 days.
    assert_rule(await notice(client, cid, "P1", "2025-01-20"), "offence_already_penalised")
    await feed(rt, *mark_events(upn, urn, JAN), threshold_signal(upn, urn, "2025-01-17", "2024-11-11", JAN))
    r = await notice(client, cid, "P1", "2025-01-20")
    assert r.status_code == 201, r.text
    second = r.json()
    assert (second["sequence"], second["amount_if_paid_by_day_21"], second["amount_if_paid_by_day_28"]) == (
        2,
        160,
        160,
    )
    assert (second["pay_reduced_by"], second["pay_by"]) == (None, "2025-02-17")
    # A third to P1 within 3 years is refused, naming the rule; nothing is written.
    before = (await client.get(f"/v1/cases/{cid}", headers=bearer(READ))).json()
    assert_rule(await notice(client, cid, "P1", "2025-03-03"), "third_penalty_notice_in_3_years")
    after = (await client.get(f"/v1/cases/{cid}", headers=bearer(READ))).json()
    assert after["penalty_notices"] == before["penalty_notices"]
    assert after["history"] == before["history"]

    r = await move(client, cid, "prosecution")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "prosecution"
    last = body["history"][-1]
    assert (last["from"], last["to"], last["rule"], last["by"]) == (
        "penalty_notice",
        "prosecution",
        "prosecution_s444",
        "test",
    )
    assert last["data"]["skipped"] == ["attendance_contract", "education_supervision_order"]
    statuses = {n["id"]: n["status"] for n in body["penalty_notices"]}
    assert statuses[second["id"]] == "prosecuted"
    assert statuses[first["id"]] == statuses[second_parent["id"]] == "paid"
    laying = [d for d in body["deadlines"] if d["kind"] == "information_laying_limit"]
    assert [(d["due_on"], d["status"]) for d in laying] == [("2025-07-17", "met")]

    events = await outbox(rt)
    mine = [(k, e) for k, e in events if k == cid]
    types = [e["type"] for _, e in mine]
    assert types.count("penalty_notice.issued") == 3
    assert types[0] == "case.opened"
    assert [e["data"]["to"] for _, e in mine if e["type"] == "case.transitioned"] == [
        "penalty_notice",
        "prosecution",
    ]
    assert all(e["subject"] == cid for _, e in mine)


@pytest.mark.parametrize(
    ("setup", "rule"),
    [
        ({"dob": "2020-03-01"}, "not_compulsory_school_age"),
        ({"dob": "2008-05-01"}, "not_compulsory_school_age"),
        ({"school_type": "independent"}, "independent_school_penalty_notice"),
        ({"school_la": "312"}, "issuer_not_school_la"),
    ],
)
async def test_penalty_notice_refusals(
    api: tuple[httpx.AsyncClient, Runtime], setup: dict[str, Any], rule: str
) -> None:
    client, rt = api
    upn, urn = await seed(rt, **setup)
    case = await open_case(client, upn, urn)
    assert_rule(await notice(client, case["id"], "P1", "2024-10-01"), rule)


async def test_more_penalty_notice_refusals(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    client, rt = api
    upn, urn = await seed(rt)
    case = await open_case(client, upn, urn)
    assert_rule(await notice(client, case["id"], "P1", "2024-10-01"), "threshold_not_met")
    await feed(rt, threshold_signal(upn, urn, "2024-09-20", "2024-07-15", SEPT))
    assert_rule(await notice(client, case["id"], "P9", "2024-10-01"), "parent_not_on_case")
    assert_rule(await notice(client, case["id"], "P1", "2025-03-04"), "date_in_future", 422)
    assert_rule(await notice(client, case["id"], "P1", "2024-08-18"), "penalty_notice_before_framework")
    # An officer of the pupil's Home LA sees the case but may not issue: the School LA issues.
    home_upn, home_urn = await seed(rt, home_la="312")
    home_case = await open_case(client, home_upn, home_urn)
    await feed(rt, threshold_signal(home_upn, home_urn, "2024-09-20", "2024-07-15", SEPT))
    r = await notice(client, home_case["id"], "P1", "2024-10-01", headers=bearer(WRITE, la="312"))
    assert_rule(r, "issuer_not_school_la")
    ok = await notice(client, home_case["id"], "P1", "2024-10-01", headers=bearer(WRITE, la="343"))
    assert ok.status_code == 201, ok.text
    assert ok.json()["issuer_la"] == "343"


async def test_transition_refusals(api: tuple[httpx.AsyncClient, Runtime], clock: Any) -> None:
    client, rt = api
    holiday, _, _ = await case_with_offence(client, rt, absences(weekdays("2024-09-16", "2024-09-20"), "G"))
    assert_rule(await move(client, holiday["id"], "notice_to_improve"), "nti_for_holiday_case")
    nmss, _, _ = await case_with_offence(client, rt, school_type="non_maintained_special")
    assert_rule(await move(client, nmss["id"], "attendance_contract"), "contract_at_independent_or_nmss")
    independent, _, _ = await case_with_offence(client, rt, school_type="independent")
    assert_rule(
        await move(client, independent["id"], "attendance_contract"), "contract_at_independent_or_nmss"
    )
    in_care, _, _ = await case_with_offence(client, rt, cla=True)
    assert_rule(await move(client, in_care["id"], "education_supervision_order"), "eso_for_child_in_care")

    case, _, _ = await case_with_offence(client, rt)
    cid = case["id"]
    assert_rule(await move(client, cid, "support"), "already_in_state")
    assert_rule(await move(client, cid, "penalty_notice"), "penalty_notice_not_issued")
    assert_rule(await move(client, cid, "parenting_order"), "parenting_order_without_conviction")
    assert_rule(
        await move(client, cid, "notice_to_improve", improvement_school_weeks=7), "nti_period_out_of_range"
    )
    assert_rule(await move(client, cid, "closed", effective_on="2025-03-04"), "date_in_future", 422)
    r = await move(client, cid, "notice_to_improve", effective_on="2025-02-26", improvement_school_weeks=3)
    assert r.status_code == 200, r.text
    nti = r.json()
    assert nti["history"][-1]["data"]["improvement_ends_on"] == "2025-03-21"  # 3 school weeks after that week
    assert [d["kind"] for d in nti["deadlines"] if d["kind"].startswith("nti")] == [
        "nti_improvement_period_ends"
    ]
    assert_rule(
        await move(client, cid, "support", effective_on="2025-02-25"), "effective_date_before_last_move"
    )
    # Prosecution: the last absence was 20 Sep 2024, so 20 Mar 2025 is the last day to lay it.
    r = await client.post(
        f"/v1/cases/{cid}/records", json={"kind": "conviction", "text": "guilty"}, headers=bearer(WRITE)
    )
    assert_rule(r, "conviction_without_prosecution")
    clock(dt.date(2025, 3, 21))
    r = await move(client, cid, "prosecution", effective_on="2025-03-21")
    assert_rule(r, "prosecution_time_limit_passed")
    assert r.json()["laying_limit"] == "2025-03-20"
    assert (await move(client, cid, "prosecution", effective_on="2025-03-20")).status_code == 200
    r = await client.post(
        f"/v1/cases/{cid}/records", json={"kind": "conviction", "text": "s444(1)"}, headers=bearer(WRITE)
    )
    assert r.status_code == 201, r.text
    assert (await move(client, cid, "parenting_order")).status_code == 200
    assert (await move(client, cid, "closed")).status_code == 200
    assert_rule(await move(client, cid, "support"), "case_closed")
    assert_rule(await notice(client, cid, "P1", "2025-03-21"), "case_closed")
    listed = (
        await client.get("/v1/cases", params={"upn": case["upn"], "open": "false"}, headers=bearer(READ))
    ).json()
    assert [c["state"] for c in listed["items"]] == ["closed"]
    assert (await open_case(client, case["upn"], case["school_urn"]))["state"] == "support"  # a new case


async def test_payment_period_eso_and_withdrawal(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    client, rt = api
    case, _, _ = await case_with_offence(client, rt)
    cid = case["id"]
    pn = (await notice(client, cid, "P1", "2025-02-20")).json()
    assert_rule(await move(client, cid, "prosecution"), "penalty_notice_payment_period_running")
    r = await client.post(
        f"/v1/cases/{cid}/penalty-notices/{pn['id']}/withdrawal",
        json={"reason": "issued in error"},
        headers=bearer(WRITE),
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "withdrawn"
    assert_rule(
        await client.post(
            f"/v1/cases/{cid}/penalty-notices/{pn['id']}/payments",
            json={"paid_on": "2025-02-21", "amount": 80},
            headers=bearer(WRITE),
        ),
        "penalty_notice_withdrawn",
    )
    r = await move(client, cid, "education_supervision_order", effective_on="2025-02-21")
    assert r.status_code == 200, r.text
    kinds = {d["kind"]: d["due_on"] for d in r.json()["deadlines"]}
    assert kinds["eso_expires"] == "2026-02-20"
    assert kinds["eso_extension_window_opens"] == "2025-11-21"
    assert "penalty_payment_due" not in kinds  # the withdrawn notice's deadlines are gone
    extend = {"kind": "eso_extended", "text": "extended by the court", "years": 1}
    r = await client.post(f"/v1/cases/{cid}/records", json=extend, headers=bearer(WRITE))
    assert_rule(r, "eso_extension_outside_window")
    unknown = await client.post(
        f"/v1/cases/{cid}/penalty-notices/{uuid.uuid4()}/payments",
        json={"paid_on": "2025-02-21", "amount": 80},
        headers=bearer(WRITE),
    )
    assert unknown.status_code == 404


async def test_signals_open_a_case_for_review_and_never_issue(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    client, rt = api
    upn, urn = await seed(rt)
    await feed(rt, threshold_signal(upn, urn, "2024-09-20", "2024-07-15", SEPT))
    listed = (await client.get("/v1/cases", params={"upn": upn}, headers=bearer(READ))).json()["items"]
    assert len(listed) == 1
    case = (await client.get(f"/v1/cases/{listed[0]['id']}", headers=bearer(READ))).json()
    assert (case["state"], case["opened_by"], case["trigger"], case["opened_on"]) == (
        "support",
        "system",
        "signal.penalty_threshold_met",
        "2024-09-20",
    )
    assert case["lead_officer"] is None
    assert [p["id"] for p in case["parents"]] == ["P1", "P2"]
    assert case["penalty_notices"] == []
    assert [o["sessions"] for o in case["offences"]] == [10]
    assert [(d["kind"], d["due_on"]) for d in case["deadlines"]] == [
        ("information_laying_limit", "2025-03-20")
    ]
    # A second signal is noted on the open case; no second case, still no notice.
    await feed(
        rt,
        event(
            "signal.severe_absence_started",
            {
                "signal": "severe_absence_started",
                "upn": upn,
                "school_urn": urn,
                "episode": "sa",
                "started_on": "2024-09-20",
                "ended_on": None,
                "occurred_on": "2024-09-20",
                "withdrawn": False,
                "detail": {},
                "evidence": [],
            },
        ),
    )
    again = (await client.get(f"/v1/cases/{case['id']}", headers=bearer(READ))).json()
    assert [h["kind"] for h in again["history"]] == ["opened", "signal"]
    assert again["penalty_notices"] == []
    assert again["state"] == "support"
    # An amendment that removes the absences withdraws the offence.
    await feed(
        rt,
        event(
            "signal.penalty_threshold_met_ended",
            {
                "signal": "penalty_threshold_met_ended",
                "upn": upn,
                "school_urn": urn,
                "episode": "penalty_threshold_met:" + urn + ":2024-09-20",
                "started_on": "2024-09-20",
                "ended_on": "2024-09-23",
                "occurred_on": "2024-09-23",
                "withdrawn": True,
                "detail": {},
                "evidence": [],
            },
        ),
    )
    withdrawn = (await client.get(f"/v1/cases/{case['id']}", headers=bearer(READ))).json()
    assert [o["withdrawn"] for o in withdrawn["offences"]] == [True]
    assert_rule(await notice(client, case["id"], "P1", "2024-10-01"), "threshold_not_met")
    # Officers adopt the case: lead officer and parents' names.
    r = await client.patch(
        f"/v1/cases/{case['id']}",
        json={"lead_officer": "officer.two", "parents": [{"id": "P1", "name": "Sam Smith"}]},
        headers=bearer(WRITE),
    )
    assert r.status_code == 200, r.text
    assert r.json()["lead_officer"] == "officer.two"
    assert r.json()["parents"][0] == {"id": "P1", "name": "Sam Smith"}
    opened = [(k, e) for k, e in await outbox(rt, "case.opened") if k == case["id"]]
    assert len(opened) == 1
    assert opened[0][1]["data"]["trigger"] == "signal.penalty_threshold_met"
    # A malformed signal is skipped without holding up the rest of its batch.
    broken = event("signal.penalty_threshold_met", {"signal": "penalty_threshold_met", "upn": upn})
    note = event(
        "signal.attendance_return_due",
        {
            "signal": "attendance_return_due",
            "upn": upn,
            "school_urn": urn,
            "episode": "ar",
            "started_on": "2024-10-01",
            "occurred_on": "2024-10-01",
            "detail": {},
            "evidence": [],
        },
    )
    await feed(rt, broken, note)
    noted = (await client.get(f"/v1/cases/{case['id']}", headers=bearer(READ))).json()
    assert [h["data"].get("signal") for h in noted["history"]][-1] == "attendance_return_due"
    # No case for a pupil below compulsory school age.
    young, young_urn = await seed(rt, dob="2020-03-01")
    await feed(
        rt,
        event(
            "signal.severe_absence_started",
            {
                "signal": "severe_absence_started",
                "upn": young,
                "school_urn": young_urn,
                "episode": "sa",
                "started_on": "2024-09-20",
                "ended_on": None,
                "occurred_on": "2024-09-20",
                "withdrawn": False,
                "detail": {},
                "evidence": [],
            },
        ),
    )
    assert (await client.get("/v1/cases", params={"upn": young}, headers=bearer(READ))).json()["items"] == []
    # An officer opening a case for a pupil with an open one is told so.
    r = await client.post(
        "/v1/cases",
        json={"upn": upn, "school_urn": urn, "parents": [{"id": "P1", "name": "S"}], "lead_officer": "x"},
        headers=bearer(WRITE),
    )
    assert_rule(r, "case_already_open")
    assert r.json()["case_id"] == case["id"]


async def test_evidence_pack_json_and_html(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    client, rt = api
    upn, urn = await seed(rt)
    case = await open_case(client, upn, urn, [{"id": "P1", "name": "<script>alert(1)</script>"}])
    await feed(rt, threshold_signal(upn, urn, "2024-09-20", "2024-09-02", SEPT))
    cid = case["id"]
    await client.post(
        f"/v1/cases/{cid}/records",
        json={"kind": "support_offered", "text": "Early help <referral>", "on": "2024-09-25"},
        headers=bearer(WRITE),
    )
    assert (await notice(client, cid, "P1", "2024-10-01")).status_code == 201
    r = await client.get(f"/v1/cases/{cid}/evidence", headers=bearer(READ))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    ev = r.json()
    assert ev["offence_period"] == {"from": "2024-09-02", "to": "2024-09-20"}
    register = ev["register"]
    assert len(register) == 28  # 3–20 Sep: 14 school days
    assert register[0] == {
        "date": "2024-09-03",
        "session": "AM",
        "code": "/",
        "category": "present",
        "meaning": "present (AM)",
    }
    g = next(x for x in register if x["code"] == "G")
    assert (g["category"], g["meaning"]) == ("unauthorised", "holiday not granted by the school")
    assert ev["register_summary"]["penalty_code_sessions"] == 10
    assert ev["register_summary"]["possible"] == 28
    assert [s["type"] for s in ev["signals"]] == ["penalty_threshold_met"]
    assert [s["kind"] for s in ev["support"]] == ["support_offered"]
    assert len(ev["penalty_notices"]) == 1
    assert [s["taken_for"].split(":")[0] for s in ev["snapshots"]] == ["penalty_notice"]
    assert ev["snapshots"][0]["amended_since"] is False
    # A later amendment shows against the snapshot.
    await feed(rt, *mark_events(upn, urn, [("2024-09-16", "AM", "I")]))
    ev = (await client.get(f"/v1/cases/{cid}/evidence", headers=bearer(READ))).json()
    assert ev["snapshots"][0]["amended_since"] is True

    r = await client.get(f"/v1/cases/{cid}/evidence", headers=bearer(READ) | {"Accept": "text/html"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Test &lt;Primary&gt; &amp; Co" in html
    assert "Early help &lt;referral&gt;" in html
    assert len(re.findall(r"<tr><td>2024-09-\d\d</td><td>(?:AM|PM)</td>", html)) == 28
    assert "holiday not granted by the school" in html
    pref = {"Accept": "application/json;q=0.5, text/html;q=0.9"}
    assert (await client.get(f"/v1/cases/{cid}/evidence", headers=bearer(READ) | pref)).text.startswith(
        "<!DOCTYPE"
    )
    narrow = await client.get(
        f"/v1/cases/{cid}/evidence", params={"from": "2024-09-16", "to": "2024-09-16"}, headers=bearer(READ)
    )
    assert [x["session"] for x in narrow.json()["register"]] == ["AM", "PM"]
    bad = await client.get(
        f"/v1/cases/{cid}/evidence", params={"from": "2024-09-16", "to": "2024-09-15"}, headers=bearer(READ)
    )
    assert bad.status_code == 422


async def test_deadlines_are_listed_and_announced_once(
    api: tuple[httpx.AsyncClient, Runtime], clock: Any
) -> None:
    client, rt = api
    case, _, _ = await case_with_offence(client, rt)
    cid = case["id"]
    pn = (await notice(client, cid, "P1", "2025-02-24")).json()
    assert (pn["pay_reduced_by"], pn["pay_by"]) == ("2025-03-17", "2025-03-24")
    r = await client.get("/v1/deadlines", params={"before": "2025-03-20", "case": cid}, headers=bearer(READ))
    items = r.json()["items"]
    assert [(d["kind"], d["due_on"], d["announce_on"]) for d in items] == [
        ("penalty_reduced_rate_ends", "2025-03-17", "2025-03-03"),  # 10 school days before (3–14 Mar)
    ]
    assert items[0]["lead_officer"] == "officer.one"
    assert items[0]["upn"] == case["upn"]
    everything = (await client.get("/v1/deadlines", params={"case": cid}, headers=bearer(READ))).json()[
        "items"
    ]
    assert {d["kind"] for d in everything} == {
        "penalty_reduced_rate_ends",
        "penalty_payment_due",
        "penalty_counting_window_ends",
        "information_laying_limit",
    }

    async def announced() -> list[dict[str, Any]]:
        return [e["data"] for k, e in await outbox(rt, "deadline.approaching") if k == cid]

    await worker.tick(rt)
    assert [(d["kind"], d["school_days_left"]) for d in await announced()] == [
        ("penalty_reduced_rate_ends", 10)
    ]
    await worker.tick(rt)
    assert len(await announced()) == 1  # once per deadline
    clock(dt.date(2025, 3, 10))
    await worker.tick(rt)
    kinds = [d["kind"] for d in await announced()]
    # 20 Mar (laying limit for the 20 Sep offence) is announced on 6 Mar; 24 Mar on 10 Mar.
    assert kinds == ["penalty_reduced_rate_ends", "information_laying_limit", "penalty_payment_due"]
    assert all(d["lead_officer"] == "officer.one" for d in await announced())


async def test_auth_scoping_and_validation(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    client, rt = api
    upn, urn = await seed(rt)
    case = await open_case(client, upn, urn)
    cid = case["id"]
    assert (await client.get(f"/v1/cases/{cid}")).status_code == 401
    spec = (await client.get("/openapi.json")).json()
    assert {"/v1/cases", "/v1/cases/{case_id}/penalty-notices", "/v1/deadlines"} <= set(spec["paths"])
    assert (await client.get(f"/v1/cases/{cid}", headers=bearer("attendance:read"))).status_code == 403
    assert (await client.get(f"/v1/cases/{cid}", headers=bearer(READ, [urn]))).status_code == 200
    other = await client.get(f"/v1/cases/{cid}", headers=bearer(READ, ["999999"]))
    missing = await client.get(f"/v1/cases/{uuid.uuid4()}", headers=bearer(READ, ["999999"]))
    assert other.status_code == missing.status_code == 404
    assert other.json()["detail"] == missing.json()["detail"]
    assert (await client.get(f"/v1/cases/{cid}", headers=bearer(READ, la="312"))).status_code == 404
    assert (await client.get(f"/v1/cases/{cid}", headers=bearer(READ, la="343"))).status_code == 200
    listed = await client.get("/v1/cases", params={"upn": upn}, headers=bearer(READ, ["999999"]))
    assert listed.json()["items"] == []
    r = await move(client, cid, "closed")
    assert r.status_code == 200
    # Writing needs legal:write, and a school token acts only for its schools.
    body = {"upn": upn, "school_urn": urn, "parents": [{"id": "P1", "name": "S"}], "lead_officer": "x"}
    assert (await client.post("/v1/cases", json=body, headers=bearer(READ))).status_code == 403
    assert (await client.post("/v1/cases", json=body, headers=bearer(WRITE, ["999999"]))).status_code == 403
    # Bad input is a 4xx problem, never a 500.
    bad = [
        (body | {"upn": "A123"}, 422),
        (body | {"parents": []}, 422),
        (body | {"extra": 1}, 422),
        (body | {"parents": [{"id": "P1", "name": "a"}, {"id": "P1", "name": "b"}]}, 422),
    ]
    for payload, status in bad:
        r = await client.post("/v1/cases", json=payload, headers=bearer(WRITE))
        assert r.status_code == status, (payload, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = await client.post(
        "/v1/cases", content=b"{not json", headers=bearer(WRITE) | {"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    fresh = await open_case(client, upn, urn)
    r = await client.post(
        f"/v1/cases/{fresh['id']}/transitions", json={"to": "jail", "reason": "x"}, headers=bearer(WRITE)
    )
    assert r.status_code == 422
    r = await client.post(
        f"/v1/cases/{fresh['id']}/penalty-notices",
        json={"parent_id": "P1", "issued_on": "soon"},
        headers=bearer(WRITE),
    )
    assert r.status_code == 422
    r = await client.get("/v1/deadlines", params={"before": "tomorrow"}, headers=bearer(READ))
    assert r.status_code == 422
    r = await client.get("/v1/cases", params={"state": "nowhere"}, headers=bearer(READ))
    assert r.status_code == 422


async def test_a_signal_before_the_pupil_record(api: tuple[httpx.AsyncClient, Runtime]) -> None:
    """Signals and the registry are different topics: a case may open before legal knows the pupil."""
    client, rt = api
    serial = next(_serials)
    urn, upn = str(130000 + serial), make_upn(343, 4000 + serial, 18, serial % 1000)
    await feed(rt, threshold_signal(upn, urn, "2024-09-20", "2024-09-02", SEPT))
    cid = (await client.get("/v1/cases", params={"upn": upn}, headers=bearer(READ))).json()["items"][0]["id"]
    case = (await client.get(f"/v1/cases/{cid}", headers=bearer(READ))).json()
    assert (case["parents"], case["pupil"]["date_of_birth"], case["school"]["la_code"]) == ([], None, None)
    await client.patch(
        f"/v1/cases/{cid}", json={"parents": [{"id": "P1", "name": "Sam"}]}, headers=bearer(WRITE)
    )
    assert_rule(await notice(client, cid, "P1", "2024-10-01"), "pupil_not_known")
    await feed(rt, pupil_event(upn, urn))
    assert_rule(await notice(client, cid, "P1", "2024-10-01"), "school_not_known")
    await feed(rt, school_event(urn))
    case = (await client.get(f"/v1/cases/{cid}", headers=bearer(READ))).json()
    assert case["parents"] == [{"id": "P1", "name": "Sam"}, {"id": "P2", "name": ""}]
    assert case["pupil"]["compulsory_school_age"] == {"from": "2021-08-31", "to": "2032-06-25"}
    assert (await notice(client, cid, "P2", "2024-10-01")).status_code == 201
