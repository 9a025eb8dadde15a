"""The legal and notifications services, read over their public HTTP APIs with the user's token."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson

from services.rules.settings import RulesSettings
from shared.audit import PURPOSE_HEADER
from shared.service import Runtime

# The purpose the partners' audit logs record for what the dashboard reads on a user's behalf.
DASHBOARD_PURPOSE = "dashboard"


class PartnerUnavailable(Exception):
    """A partner service did not answer (down, timed out, or a 5xx)."""


class Partners:
    def __init__(self, settings: RulesSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._legal = settings.legal_url.rstrip("/")
        self._notifications = settings.notifications_url.rstrip("/")
        self._client = httpx.AsyncClient(timeout=settings.partner_timeout_seconds, transport=transport)

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, url: str, token: str, **kw: Any) -> tuple[int, Any]:
        try:
            headers = {"Authorization": f"Bearer {token}", PURPOSE_HEADER: DASHBOARD_PURPOSE}
            r = await self._client.request(method, url, headers=headers, **kw)
        except httpx.HTTPError as exc:
            raise PartnerUnavailable(type(exc).__name__) from exc
        if r.status_code >= 500:
            raise PartnerUnavailable(f"{r.status_code}")
        return r.status_code, orjson.loads(r.content) if r.content else None

    async def legal(self, path: str, token: str, **params: Any) -> tuple[int, Any]:
        return await self._call("GET", self._legal + path, token, params=params)

    async def notifications(self, path: str, token: str, **params: Any) -> tuple[int, Any]:
        return await self._call("GET", self._notifications + path, token, params=params)

    async def acknowledge(self, alert_id: str, by: str, token: str) -> tuple[int, Any]:
        url = f"{self._notifications}/v1/alerts/{alert_id}/ack"
        return await self._call("POST", url, token, json={"by": by})


def partners_of(rt: Runtime) -> Partners:
    """The process's partner client, made on first use (closed by ``close_partners`` at shutdown)."""
    partners = rt.state.get("partners")
    if partners is None:
        assert isinstance(rt.settings, RulesSettings)
        partners = rt.state["partners"] = Partners(rt.settings)
    assert isinstance(partners, Partners)
    return partners


async def close_partners(rt: Runtime) -> None:
    """A worker that only waits for shutdown, then closes the partner client's connections."""
    try:
        await asyncio.Event().wait()
    finally:
        partners = rt.state.pop("partners", None)
        if isinstance(partners, Partners):
            await partners.close()
