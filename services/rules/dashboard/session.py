"""Who is looking at the dashboard, and what they may see.

Sign-in stores the user's bearer token (the same JWT the APIs take) in an HttpOnly, SameSite=Strict
cookie scoped to ``/dashboard``; every page verifies it exactly as the APIs do. Forms that change
something carry a CSRF value derived from the token, so another site cannot submit them.

Roles (the decision is written in the README "Dashboard"):
* a token with a ``schools`` claim is a **school user**: their schools only;
* an LA-wide token whose ``sub`` is a social worker or Early Help lead in the notifications
  directory is a **social worker**: only the pupils allocated to them;
* any other LA-wide token is an **LA officer**: everything in their LA.
The social-worker check reads the rules service's local copy of notifications' directory
(``shared.directory``, fed from ``rollcall.directory.v1``): no HTTP call per page. Until that copy
has been read to the end once, a non-admin user is refused (503, fail closed) rather than shown the
whole borough.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum

from fastapi import Request

from services.rules import tables as t
from shared.auth import Principal, Scope, TokenVerifier
from shared.directory import directory_of
from shared.problems import Problem
from shared.service import Runtime

COOKIE = "rollcall_session"


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
    rt: Runtime = request.app.state.runtime
    async with rt.reads.connect() as conn:
        # The local copy of notifications' directory; a 503 until it has been read (fail closed).
        pupils = await directory_of(rt.state, t.directory).allowed_pupils(conn, principal)
    if pupils is not None:
        return Viewer(principal, token, Role.SOCIAL_WORKER, pupils)
    return Viewer(principal, token, Role.LA, None)
