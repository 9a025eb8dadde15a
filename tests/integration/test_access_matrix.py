"""The access matrix, part one: every operation of every service's OpenAPI (and every dashboard
page) against the tokens that must never get in — none, expired, wrongly signed, and valid but
without any of the operation's scopes. Each must be refused with the right problem before anything
else happens (no 422 for a body it never read, no 404 revealing whether something exists).

The per-school, per-LA and social-worker rows of the matrix are tested where the data lives
(test_rules, test_legal_api, test_notifications, the dashboard e2e).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest

from shared.settings import DEV_JWT_SECRET
from tests.integration.ingest_fixtures import service_client

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
