"""The access matrix, part one: every operation of every service's OpenAPI (and every dashboard
page) against the tokens that must never get in — none, expired, wrongly signed, and valid but
without any of the operation's scopes. Each must be refused with the right problem before anything
else happens (no 422 for a body it never read, no 404 revealing whether something exists).

Part two (below) is the per-school, per-LA and social-worker rows, over a seeded borough.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import orjson
import pytest
from sqlalchemy import select

from services.notifications import tables as notification_tables
from shared.settings import DEV_JWT_SECRET
from shared.upn import make_upn
from tests.integration.ingest_fixtures import TERMS_2024_25, pupil, school_body, service_client, setup_school

pytestmark = pytest.mark.integration
SERVICES = ("ingest", "rules", "legal", "notifications")
OPEN = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
SAMPLES = {
    "urn": "104001",
    "upn": "A343200018001",
    "year": "2024-25",
    "id": "x-1",
    "case_id": str(uuid.uuid4()),
    "notice_id": str(uuid.uuid4()),
    "seq": "1",
    "alert_id": str(uuid.uuid4()),
}


def token(scope: str, *, secret: str = DEV_JWT_SECRET, expired: bool = False) -> str:
    now = int(time.time())
    exp = now - 60 if expired else now + 600
    return jwt.encode(
        {"sub": "matrix", "scope": scope, "iat": now - 120, "exp": exp}, secret, algorithm="HS256"
    )


BAD = {
    "no token": None,
    "expired": token("admin", expired=True),
    "wrong signature": token("admin", secret="not-the-secret-" + "x" * 32),
    "not a JWT": "abc.def.ghi",
}


def operations(app: Any) -> list[tuple[str, str]]:
    out = []
    for path, item in app.openapi()["paths"].items():
        if path in OPEN:
            continue
        for method in item:
            concrete = path
            for name, value in SAMPLES.items():
                concrete = concrete.replace("{" + name + "}", value)
            assert "{" not in concrete, f"no sample for a parameter of {path}"
            out.append((method.upper(), concrete))
    return out


@pytest.mark.parametrize("service", SERVICES)
async def test_every_operation_refuses_bad_and_scopeless_tokens(
    service: str, tmp_path: Any, kafka_bootstrap: str
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / f'{service}.db'}"
    async with service_client(service, url, kafka_bootstrap, rate_limit_enabled=False) as client:
        ops = operations(client.app)  # type: ignore[attr-defined]
        assert len(ops) >= 4
        checked = 0
        for method, path in ops:
            for case, bad in BAD.items():
                headers = {"Authorization": f"Bearer {bad}"} if bad else {}
                r = await client.request(method, f"{path}", headers=headers, json={})
                assert r.status_code == 401, (service, method, path, case, r.status_code, r.text[:200])
                assert r.headers["content-type"] == "application/problem+json"
                assert r.headers["www-authenticate"] == "Bearer"
                checked += 1
            r = await client.request(
                method, path, headers={"Authorization": f"Bearer {token('none')}"}, json={}
            )
            assert r.status_code == 403, (service, method, path, r.status_code, r.text[:200])
            assert r.json()["type"] == "urn:rollcall:problem:forbidden"
            checked += 1
        print(f"{service}: {len(ops)} operations, {checked} refusals checked")


async def test_dashboard_pages_need_a_valid_session(tmp_path: Any, kafka_bootstrap: str) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'rules.db'}"
    async with service_client("rules", url, kafka_bootstrap, rate_limit_enabled=False) as client:
        pages = ["/dashboard", "/dashboard/hotspots", "/dashboard/pupils", "/dashboard/pupils/A343200018001",
                 "/dashboard/inbox", "/dashboard/compare", "/dashboard/report"]  # fmt: skip
        for page in pages:
            for case, bad in BAD.items():
                cookies = {"Cookie": f"rollcall_session={bad}"} if bad else {}
                r = await client.get(page, headers=cookies, follow_redirects=False)
                assert r.status_code == 303, (page, case)
                assert r.headers["location"].startswith("/dashboard/sign-in")
            r = await client.get(page, headers={"Cookie": f"rollcall_session={token('alerts:read')}"})
            assert r.status_code == 403, page  # a valid token without attendance:read
        ack = await client.post(
            "/dashboard/inbox/x/ack",
            data={"csrf": "forged"},
            headers={"Cookie": f"rollcall_session={token('attendance:read admin')}"},
        )
        assert ack.status_code == 403  # the CSRF value does not match the session
        assert "out of date" in ack.text


# --- part two: right scope, wrong reach --------------------------------------------------------
#
# A seeded borough (school A and school B in LA 343, through the real pipeline: ingest → Kafka →
# rules, legal, notifications) and, for EVERY operation of every service, three callers holding
# the operation's own scope: (a) school B only, (b) LA-wide for another LA (340), (c) a social
# worker (a directory recipient) with no allocation for school A's pupil P1. Each operation is
# classified below; an operation missing from the table fails the test, so coverage cannot rot.
#
# FORBID: 403 (school or aggregate level, or acting on a pupil the caller may not act for);
# HIDDEN: 404, and the body must equal the answer for an unknown id (apart from ``instance``);
# SAME: 200, and the body must equal the answer for an unknown id (nothing reveals the pupil);
# FILTERED: 2xx, filtered to what the caller may see;
# a string: not applicable, and why. Every response body is checked for school A's pupils' UPNs
# and names (P2 is allocated to the social worker, so the social worker may see P2 only).

FORBID, HIDDEN, SAME, FILTERED = 403, 404, "same", "filtered"
ADMIN_ONLY = "n/a: an admin token is never restricted to allocated pupils"
NO_DIRECTORY = "n/a: ingest takes writes from MIS and social-care systems; it holds no directory"
Expect = tuple[Any, Any, Any]  # (school B, another LA, unallocated social worker)

EXPECT: dict[tuple[str, str, str], Expect] = {
    ("ingest", "PUT", "/v1/schools/{urn}"): (FORBID, FORBID, ADMIN_ONLY),
    ("ingest", "PUT", "/v1/schools/{urn}/calendar/{year}"): (FORBID, FORBID, NO_DIRECTORY),
    ("ingest", "PUT", "/v1/schools/{urn}/pupils"): (FORBID, FORBID, NO_DIRECTORY),
    ("ingest", "PUT", "/v1/pupils/{upn}/care"): (FORBID, FORBID, NO_DIRECTORY),
    ("ingest", "POST", "/v1/schools/{urn}/marks"): (FORBID, FORBID, NO_DIRECTORY),
    ("rules", "GET", "/v1/pupils/{upn}/attendance"): (HIDDEN, HIDDEN, HIDDEN),
    ("rules", "GET", "/v1/schools/{urn}/attendance"): (FORBID, FORBID, FORBID),
    ("rules", "GET", "/v1/la/attendance"): (FORBID, FILTERED, FORBID),
    ("rules", "GET", "/v1/signals"): (FILTERED, FILTERED, FILTERED),
    ("rules", "GET", "/v1/returns/attendance"): (FILTERED, FILTERED, FILTERED),
    ("rules", "GET", "/v1/returns/sickness"): (FILTERED, FILTERED, FILTERED),
    ("legal", "POST", "/v1/cases"): (FORBID, FORBID, FORBID),
    ("legal", "GET", "/v1/cases"): (FILTERED, FILTERED, FILTERED),
    ("legal", "GET", "/v1/cases/{case_id}"): (HIDDEN, HIDDEN, HIDDEN),
    ("legal", "PATCH", "/v1/cases/{case_id}"): (HIDDEN, HIDDEN, HIDDEN),
    ("legal", "POST", "/v1/cases/{case_id}/transitions"): (HIDDEN, HIDDEN, HIDDEN),
    ("legal", "POST", "/v1/cases/{case_id}/penalty-notices"): (HIDDEN, HIDDEN, HIDDEN),
    ("legal", "POST", "/v1/cases/{case_id}/penalty-notices/{notice_id}/payments"): (HIDDEN, HIDDEN, HIDDEN),
    ("legal", "POST", "/v1/cases/{case_id}/penalty-notices/{notice_id}/withdrawal"): (HIDDEN, HIDDEN, HIDDEN),
    ("legal", "POST", "/v1/cases/{case_id}/records"): (HIDDEN, HIDDEN, HIDDEN),
    ("legal", "POST", "/v1/cases/{case_id}/offences"): (HIDDEN, HIDDEN, HIDDEN),
    ("legal", "GET", "/v1/cases/{case_id}/evidence"): (HIDDEN, HIDDEN, HIDDEN),
    ("legal", "GET", "/v1/figures"): (FILTERED, FILTERED, FORBID),
    ("legal", "GET", "/v1/deadlines"): (FILTERED, FILTERED, FILTERED),
    ("notifications", "PUT", "/v1/recipients/{id}"): (FORBID, FORBID, ADMIN_ONLY),
    ("notifications", "GET", "/v1/recipients"): (FORBID, FORBID, ADMIN_ONLY),
    ("notifications", "GET", "/v1/recipients/{id}"): (HIDDEN, HIDDEN, HIDDEN),
    ("notifications", "GET", "/v1/recipients/{id}/pupils"): (HIDDEN, HIDDEN, HIDDEN),
    ("notifications", "PUT", "/v1/allocations/pupils/{upn}"): (FORBID, FORBID, FORBID),
    ("notifications", "GET", "/v1/allocations/pupils/{upn}"): (FORBID, SAME, SAME),
    ("notifications", "PUT", "/v1/allocations/schools/{urn}"): (FORBID, FORBID, ADMIN_ONLY),
    ("notifications", "GET", "/v1/allocations/schools/{urn}"): (FORBID, FORBID, ADMIN_ONLY),
    ("notifications", "POST", "/v1/subscriptions"): (FORBID, FORBID, FORBID),
    ("notifications", "GET", "/v1/subscriptions"): (FILTERED, FILTERED, FILTERED),
    ("notifications", "DELETE", "/v1/subscriptions/{id}"): (HIDDEN, HIDDEN, HIDDEN),
    ("notifications", "GET", "/v1/alerts"): (FILTERED, FILTERED, FILTERED),
    ("notifications", "GET", "/v1/alerts/stream"): (FILTERED, FILTERED, FILTERED),
    ("notifications", "GET", "/v1/alerts/{id}"): (HIDDEN, HIDDEN, HIDDEN),
    ("notifications", "POST", "/v1/alerts/{id}/ack"): (HIDDEN, HIDDEN, HIDDEN),
    ("notifications", "GET", "/v1/deliveries"): (FORBID, FORBID, ADMIN_ONLY),
    ("notifications", "POST", "/v1/deliveries/{seq}/retry"): (FORBID, FORBID, ADMIN_ONLY),
}

LA_ADMIN = (FORBID, FORBID, ADMIN_ONLY)  # never filtered by school or LA: refused outright
for _service in SERVICES:  # the audit log and the subject-access export (shared.audit), in every service
    EXPECT[(_service, "GET", "/v1/audit")] = LA_ADMIN
    EXPECT[(_service, "GET", "/v1/pupils/{upn}/export")] = LA_ADMIN

# Query parameters an operation requires (and a filter pointing at school A's pupil where useful).
QUERIES: dict[str, dict[str, str]] = {
    "/v1/returns/attendance": {"month": "2025-01"},
    "/v1/returns/sickness": {"month": "2025-01"},
    "/v1/figures": {"from": "2024-09-01", "to": "2025-07-31"},
}
NAMES = {  # distinctive, so a leak cannot hide among common words
    1: ("Zebedee", "Quillfeather", "Perpetua Quillfeather"),
    2: ("Ottoline", "Marchbanks", "Barnaby Marchbanks"),
}


@dataclass
class World:
    """The seeded borough: ids of school A's records, by path parameter."""

    uid: str
    urn_a: str
    urn_b: str
    p1: dict[str, Any]
    p2: dict[str, Any]
    sw: str
    ao: str
    case_id: str = ""
    notice_id: str = ""
    alert_id: str = ""
    subscription_id: str = ""
    delivery_seq: str = ""

    def params(self, template: str) -> dict[str, str]:
        if template.startswith("/v1/recipients/"):
            rid = self.ao
        elif template.startswith("/v1/subscriptions/"):
            rid = self.subscription_id
        else:
            rid = self.alert_id
        return {"urn": self.urn_a, "upn": self.p1["upn"], "year": "2024-25", "case_id": self.case_id,
                "notice_id": self.notice_id, "id": rid, "seq": self.delivery_seq}  # fmt: skip

    def unknown(self, template: str) -> dict[str, str]:
        """The same parameters naming nothing that exists."""
        return self.params(template) | {
            "upn": make_upn(343, 9990, 18, 999),
            "case_id": str(uuid.uuid4()),
            "notice_id": str(uuid.uuid4()),
            "id": f"nobody-{self.uid}" if template.startswith("/v1/recipients/") else str(uuid.uuid4()),
        }

    def body(self, method: str, template: str) -> Any:
        """A valid body for the operation, aimed at school A and P1."""
        p1, a = self.p1["upn"], self.urn_a
        bodies: dict[str, Any] = {
            "/v1/schools/{urn}": school_body("343"),
            "/v1/schools/{urn}/calendar/{year}": {"terms": TERMS_2024_25, "closed": []},
            "/v1/schools/{urn}/pupils": {"pupils": [self.p1]},
            "/v1/pupils/{upn}/care": {"cin": True, "cp": True, "cla": True, "early_help": True, "etac": True},
            "/v1/schools/{urn}/marks": {"marks": [{"upn": p1, "date": "2025-01-20", "session": "AM", "code": "/"}]},  # noqa: E501
            "/v1/cases": {"upn": p1, "school_urn": a, "parents": [{"id": "X1", "name": "Matrix Parent"}], "lead_officer": "lo-m"},  # noqa: E501
            "/v1/cases/{case_id}": {"lead_officer": "lo-matrix"},
            "/v1/cases/{case_id}/transitions": {"to": "notice_to_improve", "reason": "matrix"},
            "/v1/cases/{case_id}/penalty-notices": {"parent_id": self.p1["parents"][0]["id"], "issued_on": "2025-03-03"},  # noqa: E501
            "/v1/cases/{case_id}/penalty-notices/{notice_id}/payments": {"paid_on": "2025-03-03", "amount": 80},  # noqa: E501
            "/v1/cases/{case_id}/penalty-notices/{notice_id}/withdrawal": {"reason": "matrix"},
            "/v1/cases/{case_id}/records": {"kind": "note", "text": "matrix"},
            "/v1/cases/{case_id}/offences": {"from": "2025-01-06", "to": "2025-01-17", "reason": "matrix"},
            "/v1/recipients/{id}": {"name": "Matrix", "role": "attendance_officer"},
            "/v1/allocations/pupils/{upn}": {"social_worker": self.sw},
            "/v1/allocations/schools/{urn}": {"attendance_officer": self.ao},
            "/v1/subscriptions": {"url": "http://127.0.0.1:9/hook", "secret": "whsec_" + "A" * 32, "recipient": self.ao},  # noqa: E501
            "/v1/alerts/{id}/ack": {"by": "matrix"},
        }  # fmt: skip
        return bodies.get(template) if method in ("POST", "PUT", "PATCH") else None


def scoped_token(scope: str, sub: str = "matrix", **claims: Any) -> dict[str, str]:
    now = int(time.time())
    body = {"sub": sub, "scope": scope, "iat": now - 60, "exp": now + 3600, **claims}
    return {"Authorization": f"Bearer {jwt.encode(body, DEV_JWT_SECRET, algorithm='HS256')}"}


async def operation_scope(client: httpx.AsyncClient, method: str, path: str) -> str:
    """The scope the operation needs, as its 403 names it for a token without any."""
    r = await client.request(method, path, headers=scoped_token("none"), json={})
    assert r.status_code == 403, (method, path, r.status_code)
    detail = r.json()["detail"]
    assert detail.startswith("the token lacks the scope "), detail
    return str(detail.removeprefix("the token lacks the scope ").split(" or ")[0])


async def poll(check: Any, what: str, seconds: float = 90) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        got = await check()
        if got:
            return got
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


async def seed(clients: dict[str, httpx.AsyncClient]) -> World:
    ingest, rules, legal, notes = (clients[s] for s in SERVICES)
    uid = uuid.uuid4().hex[:6]
    n = int(uid, 16)  # the topics are shared by every test of the run: ids of this run's own
    estab = 7000 + (n + os.getpid()) % 2000
    urn_a, urn_b = str(1100000 + 2 * (n % 400000)), str(1100001 + 2 * (n % 400000))
    serial = n % 990
    p1 = pupil(serial + 1, estab, given_name=NAMES[1][0], family_name=NAMES[1][1],
               parents=[{"id": f"PQ{uid}", "name": NAMES[1][2]}])  # fmt: skip
    p2 = pupil(serial + 2, estab, given_name=NAMES[2][0], family_name=NAMES[2][1],
               parents=[{"id": f"PM{uid}", "name": NAMES[2][2]}])  # fmt: skip
    pb = pupil(serial + 3, estab + 1)
    w = World(uid, urn_a, urn_b, p1, p2, sw=f"sw-m-{uid}", ao=f"ao-m-{uid}")
    admin = scoped_token("admin", sub=f"admin-{uid}")
    await setup_school(ingest, urn_a, [p1, p2])
    await setup_school(ingest, urn_b, [pb])
    # Ten school days of unauthorised absence: attendance_return_due and the penalty threshold
    # (legal opens a case, notifications alerts school A's attendance officer).
    days = [dt.date(2025, 1, 6) + dt.timedelta(days=i) for i in range(12)]
    days = [d for d in days if d.weekday() < 5][:10]
    # The directory first (a signal routed before it exists pages nobody): school A's attendance
    # officer (with a webhook, so deliveries exist) and a social worker allocated P2 only.
    for rid, role in ((w.ao, "attendance_officer"), (w.sw, "social_worker")):
        r = await notes.put(f"/v1/recipients/{rid}", json={"name": rid, "role": role}, headers=admin)
        assert r.status_code == 200, r.text
    r = await notes.put(f"/v1/allocations/schools/{urn_a}", json={"attendance_officer": w.ao}, headers=admin)
    assert r.status_code == 200, r.text
    r = await notes.put(f"/v1/allocations/pupils/{p2['upn']}", json={"social_worker": w.sw}, headers=admin)
    assert r.status_code == 200, r.text
    sub = {"url": "http://127.0.0.1:9/hook", "secret": "whsec_" + "B" * 32, "recipient": w.ao}
    r = await notes.post("/v1/subscriptions", json=sub, headers=admin)
    assert r.status_code == 201, r.text
    w.subscription_id = r.json()["id"]

    async def school_known() -> bool:  # routing reads the school's LA from the registry topic
        async with notes.app.state.runtime.engine.connect() as conn:  # type: ignore[attr-defined]
            q = select(notification_tables.schools.c.urn).where(notification_tables.schools.c.urn == urn_a)
            return (await conn.execute(q)).first() is not None

    await poll(school_known, "notifications to know school A")
    for urn, who, code in ((urn_a, p1, "O"), (urn_a, p2, "O"), (urn_b, pb, "O")):
        marks = [{"upn": who["upn"], "date": d.isoformat(), "session": s, "code": code}
                 for d in days for s in ("AM", "PM")]  # fmt: skip
        r = await ingest.post(f"/v1/schools/{urn}/marks", json={"marks": marks}, headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 20, r.text

    async def case() -> str | None:
        r = await legal.get("/v1/cases", params={"upn": p1["upn"]}, headers=admin)
        items = r.json()["items"]
        return str(items[0]["id"]) if items else None

    w.case_id = await poll(case, "legal to open P1's case")
    r = await legal.post(f"/v1/cases/{w.case_id}/penalty-notices", headers=admin,
                         json={"parent_id": f"PQ{uid}", "issued_on": "2025-03-03"})  # fmt: skip
    w.notice_id = r.json()["id"] if r.status_code == 201 else str(uuid.uuid4())

    async def alert() -> str | None:
        r = await notes.get("/v1/alerts", params={"upn": p1["upn"]}, headers=admin)
        items = r.json()["items"]
        return str(items[0]["id"]) if items else None

    w.alert_id = await poll(alert, "an alert for P1")

    async def delivery() -> str | None:
        r = await notes.get("/v1/deliveries", params={"alert": w.alert_id}, headers=admin)
        items = r.json()["items"]
        return str(items[0]["id"]) if items else None

    w.delivery_seq = await poll(delivery, "a delivery of P1's alert")

    async def signals() -> bool:
        r = await rules.get("/v1/signals", params={"upn": p1["upn"]}, headers=admin)
        return bool(r.json()["items"])

    await poll(signals, "rules' signals for P1")
    sw_token = scoped_token("attendance:read legal:read", sub=w.sw)

    async def directory_arrived() -> bool:  # the social worker is restricted at rules and legal
        a = await rules.get("/v1/la/attendance", headers=sw_token)
        b = await legal.get("/v1/figures", params=QUERIES["/v1/figures"], headers=sw_token)
        return a.status_code == 403 and b.status_code == 403

    await poll(directory_arrived, "the directory at rules and legal")
    return w


def secrets_for(w: World, caller: int) -> dict[str, str]:
    """What must never appear in the caller's responses (P2 is the social worker's own pupil)."""
    pupils = [w.p1] if caller == 2 else [w.p1, w.p2]
    out: dict[str, str] = {}
    for p in pupils:
        out[p["upn"]] = "upn"
        out[p["given_name"]] = "given name"
        out[p["family_name"]] = "family name"
        out[p["parents"][0]["name"]] = "parent name"
    return out


def without_instance(body: bytes) -> Any:
    data = orjson.loads(body)
    if isinstance(data, dict):
        data.pop("instance", None)
        if "upn" in data:
            data["upn"] = "<upn>"
    return data


async def snapshot(clients: dict[str, httpx.AsyncClient], w: World) -> list[Any]:
    """What the matrix must not have changed, read as admin."""
    admin = scoped_token("admin")
    reads = [
        ("ingest", "/readyz"),
        ("legal", f"/v1/cases/{w.case_id}"),
        ("notifications", f"/v1/allocations/pupils/{w.p1['upn']}"),
        ("notifications", f"/v1/allocations/schools/{w.urn_a}"),
        ("notifications", f"/v1/recipients/{w.ao}"),
        ("notifications", f"/v1/alerts/{w.alert_id}"),
        ("notifications", "/v1/subscriptions"),
    ]
    out = []
    for service, path in reads:
        r = await clients[service].get(path, headers=admin)
        body = r.json()
        if isinstance(body, dict):
            body.pop("checks", None)
            body.pop("today", None)
        out.append((service, path, r.status_code, body))
    return out


async def settled(clients: dict[str, httpx.AsyncClient], w: World) -> list[Any]:
    """The snapshot once the seeded world is quiet: the signals of the seed's marks may still be
    reaching legal's case when the seed returns, so two reads a second apart must agree."""
    last = await snapshot(clients, w)
    for _ in range(30):
        await asyncio.sleep(1)
        now = await snapshot(clients, w)
        if now == last:
            return now
        last = now
    raise AssertionError("the seeded world did not settle in 30 s")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def matrix_dbs(request: pytest.FixtureRequest, tmp_path: Any) -> dict[str, str]:
    if request.param == "sqlite":
        return {s: f"sqlite+aiosqlite:///{tmp_path / s}.db" for s in SERVICES}
    make = request.getfixturevalue("postgres_databases")
    return {s: await make() for s in SERVICES}


async def test_no_caller_reaches_another_school_another_la_or_an_unallocated_pupil(
    matrix_dbs: dict[str, str], kafka_bootstrap: str
) -> None:
    group = f"test-matrix-{uuid.uuid4().hex[:8]}"
    async with (
        service_client("ingest", matrix_dbs["ingest"], kafka_bootstrap, rate_limit_enabled=False) as ingest,
        service_client("rules", matrix_dbs["rules"], kafka_bootstrap, rate_limit_enabled=False,
                       consumer_group=f"{group}-rules", scheduler_seconds=3600) as rules,
        service_client("legal", matrix_dbs["legal"], kafka_bootstrap, rate_limit_enabled=False,
                       consumer_group=f"{group}-legal", scheduler_seconds=3600) as legal,
        service_client("notifications", matrix_dbs["notifications"], kafka_bootstrap,
                       rate_limit_enabled=False, consumer_group=f"{group}-notifications",
                       sse_max_seconds=1, delivery_poll_seconds=0.2) as notes,
    ):  # fmt: skip
        clients = {"ingest": ingest, "rules": rules, "legal": legal, "notifications": notes}
        w = await seed(clients)
        before = await settled(clients, w)
        checks = 0
        for service, client in clients.items():
            app = client.app  # type: ignore[attr-defined]
            ops = [
                (m.upper(), p) for p, item in app.openapi()["paths"].items() if p not in OPEN for m in item
            ]
            unclassified = [op for op in ops if (service, *op) not in EXPECT]
            assert not unclassified, f"classify these operations in EXPECT: {unclassified}"
            stale = [k for k in EXPECT if k[0] == service and (k[1], k[2]) not in ops]
            assert not stale, f"EXPECT names operations that no longer exist: {stale}"
            for method, template in ops:
                scope = await operation_scope(client, method, template.format(**w.params(template)))
                callers = [
                    scoped_token(scope, schools=[w.urn_b]),
                    scoped_token(scope, la="340"),
                    scoped_token(scope, sub=w.sw),
                ]
                for index, (expected, headers) in enumerate(
                    zip(EXPECT[(service, method, template)], callers, strict=True)
                ):
                    if isinstance(expected, str) and expected.startswith("n/a"):
                        continue
                    where = (service, method, template, "abc"[index])
                    path = template.format(**w.params(template))
                    query = QUERIES.get(template)
                    body = w.body(method, template)
                    r = await client.request(method, path, params=query, json=body, headers=headers)
                    text = r.content.decode()
                    sent = path + (orjson.dumps(body).decode() if body is not None else "")
                    for secret, kind in secrets_for(w, index).items():
                        assert secret not in text or secret in sent, (
                            *where,
                            f"reveals P's {kind}",
                            text[:300],
                        )
                    if expected in (FORBID, HIDDEN):
                        assert r.status_code == expected, (*where, r.status_code, text[:300])
                        assert r.headers["content-type"] == "application/problem+json", where
                    elif expected == FILTERED:
                        assert 200 <= r.status_code < 300, (*where, r.status_code, text[:300])
                    if expected in (HIDDEN, SAME):
                        if expected == SAME:
                            assert r.status_code == 200, (*where, r.status_code, text[:300])
                        other = template.format(**w.unknown(template))
                        u = await client.request(method, other, params=query, json=body, headers=headers)
                        assert u.status_code == r.status_code, (*where, "unknown id answers", u.status_code)
                        assert without_instance(u.content) == without_instance(r.content), (
                            *where,
                            u.text,
                            text,
                        )
                        checks += 1
                    checks += 1
        assert await snapshot(clients, w) == before, "a refused request changed something"
        # The reach of an `la` care writer: its own LA's pupil yes; another's or an unknown UPN, the same 403.
        care = w.body("PUT", "/v1/pupils/{upn}/care")
        own = await ingest.put(
            f"/v1/pupils/{w.p1['upn']}/care", json=care, headers=scoped_token("care:write", la="343")
        )
        assert own.status_code == 200, own.text
        unknown = f"/v1/pupils/{w.unknown('')['upn']}/care"
        for path in (unknown, f"/v1/pupils/{w.p1['upn']}/care"):
            r = await ingest.put(path, json=care, headers=scoped_token("care:write", la="340"))
            assert r.status_code == 403, r.text
            assert (
                without_instance(r.content)["detail"] == "the token may write care only for pupils of its LA"
            )
        print(f"access matrix: {checks} checks over {len(EXPECT)} operations")
        assert checks >= 100


async def test_fail_closed_until_the_directory_is_read(tmp_path: Any) -> None:
    """With no broker, the directory of social workers never arrives: a non-admin caller is refused
    (503, Retry-After) rather than treated as an LA officer; admin is never restricted."""
    from services.legal.app import create_app
    from shared.migrate import upgrade
    from shared.settings import Settings

    url = f"sqlite+aiosqlite:///{tmp_path / 'legal.db'}"
    await asyncio.to_thread(upgrade, "legal", url)
    config = Settings(service="legal", env="test", database_url=url, kafka_bootstrap="127.0.0.1:9",
                      relay_enabled=False, scheduler_seconds=3600, rate_limit_enabled=False)  # fmt: skip
    app = create_app(config)
    async with app.router.lifespan_context(app):
        app.state.runtime.state["directory"].wait_seconds = 0.3
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://legal") as client:
            for claims in ({}, {"la": "343"}, {"schools": ["104001"]}):
                r = await client.get("/v1/cases", headers=scoped_token("legal:read", **claims))
                assert r.status_code == 503, (claims, r.text)
                assert r.headers["retry-after"] == "5"
                assert r.json()["type"] == "urn:rollcall:problem:unavailable"
            r = await client.get("/v1/cases", headers=scoped_token("admin"))
            assert r.status_code == 200, r.text
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["directory"] == "loading"


async def test_directory_events_replace_what_they_describe(tmp_path: Any) -> None:
    """The local copy: an allocation event replaces the pupil's whole set (an empty one clears it),
    a recipient event its role; an invalid event is skipped, not retried forever."""
    from services.rules import tables as rules_tables
    from shared import directory
    from shared.auth import Principal
    from shared.db import create_engine
    from shared.events import CloudEvent
    from shared.migrate import upgrade

    url = f"sqlite+aiosqlite:///{tmp_path / 'rules.db'}"
    await asyncio.to_thread(upgrade, "rules", url)
    engine = create_engine(url)
    d = directory.Directory(rules_tables.directory)
    d.loaded.set()

    def event(type_: str, data: dict[str, Any]) -> CloudEvent:
        return CloudEvent(
            id=str(uuid.uuid4()), source="/test", type=type_, time=dt.datetime.now(dt.UTC), data=data
        )

    def who(sub: str, scope: str = "attendance:read") -> Principal:
        return Principal(sub=sub, scopes=frozenset(scope.split()), schools=None, la=None)

    try:
        async with engine.begin() as conn:
            await directory.apply(conn, d.tables, [
                event("recipient.updated", {"id": "sw-d", "role": "social_worker"}),
                event("recipient.updated", {"id": "ao-d", "role": "attendance_officer"}),
                event("allocation.updated", {"upn": "A1", "recipients": ["sw-d"]}),
                event("allocation.updated", {"upn": "A2", "recipients": ["sw-d", "eh-d"]}),
                event("allocation.updated", {"upn": "A3", "recipients": ["ao-d"]}),
                event("recipient.updated", {"id": "sw-new", "role": "social_worker"}),
                event("allocation.updated", {"upn": 7}),  # invalid: skipped
            ])  # fmt: skip
        async with engine.connect() as conn:
            assert await d.allowed_pupils(conn, who("sw-d")) == {"A1", "A2"}
            assert await d.allowed_pupils(conn, who("sw-d", "admin")) is None
            assert await d.allowed_pupils(conn, who("ao-d")) is None  # allocated, but not restricted
            assert await d.allowed_pupils(conn, who("nobody")) is None
            assert await d.allowed_pupils(conn, who("sw-new")) == frozenset()  # restricted to nobody
        async with engine.begin() as conn:
            await directory.apply(
                conn, d.tables, [event("allocation.updated", {"upn": "A1", "recipients": []})]
            )
        async with engine.connect() as conn:
            assert await d.allowed_pupils(conn, who("sw-d")) == {"A2"}
    finally:
        await engine.dispose()
