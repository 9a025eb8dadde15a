"""Who is looking at the dashboard, and what they may see.

Sign-in stores the user's bearer token (the same JWT the APIs take) in an HttpOnly, SameSite=Strict
cookie scoped to ``/dashboard``; every page verifies it exactly as the APIs do. Forms that change
something carry a CSRF value derived from the token, so another site cannot submit them.

Roles (the decision is written in the README "Dashboard"):
* a token with a ``schools`` claim is a **school user**: their schools only;
* an LA-wide token whose ``sub`` is a social worker or Early Help lead in the notifications
  directory is a **social worker**: only the pupils allocated to them;
* any other LA-wide token is an **LA officer**: everything in their LA.
The social-worker check asks the notifications service with the user's own token; if it cannot
answer, an LA-wide token is refused (fail closed) rather than shown the whole borough.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastapi import Request

from services.rules.dashboard.partners import Partners, PartnerUnavailable, partners_of
from shared.auth import Principal, Scope, TokenVerifier
from shared.problems import Problem

COOKIE = "rollcall_session"
ROLE_CACHE_SECONDS = 60.0


class Role(StrEnum):
    LA = "la_officer"
    SCHOOL = "school"
    SOCIAL_WORKER = "social_worker"


@dataclass(frozen=True, slots=True)
class Viewer:
    principal: Principal
    token: str
    role: Role
    pupils: frozenset[str] | None  # a social worker's allocated pupils

    @property
    def schools(self) -> frozenset[str] | None:
        return self.principal.schools

    @property
    def csrf(self) -> str:
        return csrf_for(self.token)

    def may_see(self, scope: Scope) -> bool:
        return self.principal.has(scope)


class SignInRequired(Exception):
    """No valid session: the page redirects to the sign-in form."""


def csrf_for(token: str) -> str:
    return hashlib.sha256(b"rollcall-csrf:" + token.encode()).hexdigest()[:32]


def check_csrf(viewer: Viewer, value: str) -> None:
    if not hmac.compare_digest(viewer.csrf, value or ""):
        raise Problem(403, "forbidden", "Forbidden", "the form is out of date: reload the page and try again")


_roles: dict[str, tuple[float, Role, frozenset[str] | None]] = {}


async def viewer_of(request: Request) -> Viewer:
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInRequired
    verifier: TokenVerifier = request.app.state.verifier
    try:
        principal = await verifier.verify(token)
    except Problem as exc:
        raise SignInRequired from exc
    request.state.principal = principal  # who, for the request log and the audit log
    if not principal.has(Scope.ATTENDANCE_READ):
        raise Problem(403, "forbidden", "Forbidden", "the dashboard needs a token with attendance:read")
    if principal.schools is not None:
        return Viewer(principal, token, Role.SCHOOL, None)
    key = hashlib.sha256(token.encode()).hexdigest()
    cached = _roles.get(key)
    if cached is None or time.monotonic() - cached[0] > ROLE_CACHE_SECONDS:
        partners = partners_of(request.app.state.runtime)
        try:
            role, pupils = await _role_from_directory(partners, principal, token)
        except PartnerUnavailable as exc:
            raise Problem(
                503, "unavailable", "Cannot confirm your access",
                "the notifications directory is not answering, so the dashboard cannot tell whether you "
                "are a social worker; try again shortly",
            ) from exc  # fmt: skip
        if len(_roles) > 10_000:  # one entry per live token: drop the stale ones
            for stale in [k for k, v in _roles.items() if time.monotonic() - v[0] > ROLE_CACHE_SECONDS]:
                del _roles[stale]
        cached = _roles[key] = (time.monotonic(), role, pupils)
    return Viewer(principal, token, cached[1], cached[2])


async def _role_from_directory(
    partners: Partners, principal: Principal, token: str
) -> tuple[Role, frozenset[str] | None]:
    if principal.has(Scope.ADMIN):
        return Role.LA, None
    status, body = await partners.notifications(f"/v1/recipients/{principal.sub}/pupils", token)
    if status == 404:
        return Role.LA, None
    if status != 200:
        # 401/403 (e.g. no alerts:read): the directory cannot vouch for an LA-wide view.
        raise PartnerUnavailable(f"directory answered {status}")
    data: dict[str, Any] = body
    if data.get("role") in ("social_worker", "early_help"):
        return Role.SOCIAL_WORKER, frozenset(data.get("pupils", []))
    return Role.LA, None
