"""Bearer-token authentication and authorisation (CONTRACT.md "Auth").

Tokens are JWTs with ``sub``, ``scope`` (space-separated), optional ``schools`` (URNs the caller
may act for; absent = LA-wide) and optional ``la``. Development and tests sign with HS256 and the
shared secret ``ROLLCALL_JWT_SECRET``; production verifies RS256 against ``ROLLCALL_JWKS_URL``
(PyJWT's JWKS client, keys cached). A missing or invalid token is a 401; a valid token without the
scope, or for a school it may not act for, is a 403.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jwt
from fastapi import Request

from shared.problems import Problem
from shared.settings import Settings


class Scope(StrEnum):
    MARKS_WRITE = "marks:write"
    PUPILS_WRITE = "pupils:write"
    CARE_WRITE = "care:write"
    ATTENDANCE_READ = "attendance:read"
    LEGAL_READ = "legal:read"
    LEGAL_WRITE = "legal:write"
    ALERTS_READ = "alerts:read"
    ALERTS_WRITE = "alerts:write"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the verified claims of their token."""

    sub: str
    scopes: frozenset[str]
    schools: frozenset[str] | None  # None: LA-wide
    la: str | None

    def has(self, scope: Scope) -> bool:
        return scope.value in self.scopes or Scope.ADMIN.value in self.scopes

    def may_act_for_school(self, urn: str, school_la: str | None = None) -> bool:
        """A school-scoped token acts only for its schools; an LA token only for its LA's schools."""
        if self.schools is not None and urn not in self.schools:
            return False
        return not (self.la is not None and school_la is not None and self.la != school_la)


def unauthenticated(detail: str) -> Problem:
    return Problem(
        401, "unauthenticated", "Authentication required", detail, headers={"WWW-Authenticate": "Bearer"}
    )


def forbidden(detail: str) -> Problem:
    return Problem(403, "forbidden", "Forbidden", detail)


class TokenVerifier:
    """Verifies bearer tokens: HS256 with the shared secret, or RS256 against a JWKS endpoint.

    A verified token is remembered for at most ``CACHE_SECONDS`` (and never past its ``exp``), so
    a client sending the same token on every request, and the rate limiter and the endpoint
    reading the same request, pay for one signature check (RS256 costs ~0.1 ms, a JWKS miss an
    HTTP call). A key withdrawn from the JWKS stops working within ``CACHE_SECONDS``. Failures are
    never cached. The cache is bounded: it is emptied when it reaches ``CACHE_SIZE`` tokens.
    """

    CACHE_SECONDS = 60.0
    CACHE_SIZE = 10_000

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._verified: dict[str, tuple[Principal, float]] = {}
        self._jwks: jwt.PyJWKClient | None = (
            jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=3600) if settings.jwks_url else None
        )

    async def verify(self, token: str) -> Principal:
        now = time.time()
        hit = self._verified.get(token)
        if hit is not None:
            if hit[1] > now:
                return hit[0]
            del self._verified[token]
        claims = await self._decode(token)
        principal = principal_from_claims(claims)
        if len(self._verified) >= self.CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, min(float(claims["exp"]), now + self.CACHE_SECONDS))
        return principal

    async def _decode(self, token: str) -> dict[str, Any]:
        options: jwt.types.Options = {"require": ["exp", "sub"]}
        try:
            if self._jwks is not None:
                # The JWKS client does blocking HTTP on a cache miss: keep it off the event loop.
                signing_key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
                claims = jwt.decode(
                    token,
                    signing_key.key,
                    algorithms=["RS256"],
                    audience=self._settings.jwt_audience,
                    issuer=self._settings.jwt_issuer,
                    options=options,
                )
            else:
                claims = jwt.decode(
                    token,
                    self._settings.jwt_secret.get_secret_value(),
                    algorithms=["HS256"],
                    audience=self._settings.jwt_audience,
                    issuer=self._settings.jwt_issuer,
                    options=options,
                )
        except jwt.ExpiredSignatureError as exc:
            raise unauthenticated("the token has expired") from exc
        except (jwt.PyJWTError, ValueError) as exc:
            raise unauthenticated("the token is not valid") from exc
        return claims


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    scope = claims.get("scope", "")
    schools = claims.get("schools")
    if not isinstance(scope, str) or (schools is not None and not isinstance(schools, list)):
        raise unauthenticated("the token's scope or schools claim is malformed")
    la = claims.get("la")
    return Principal(
        sub=str(claims["sub"]),
        scopes=frozenset(scope.split()),
        schools=frozenset(str(s) for s in schools) if schools is not None else None,
        la=str(la) if la is not None else None,
    )


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated("send Authorization: Bearer <token>")
    return token.strip()


def require(*scopes: Scope) -> Callable[[Request], Coroutine[Any, Any, Principal]]:
    """A FastAPI dependency: the caller, verified, holding at least one of ``scopes``.

    Use as ``Annotated[Principal, Depends(require(Scope.MARKS_WRITE))]``.
    """

    async def dependency(request: Request) -> Principal:
        verifier: TokenVerifier = request.app.state.verifier
        principal = await verifier.verify(bearer_token(request))
        if not any(principal.has(s) for s in scopes):
            raise forbidden(f"the token lacks the scope {' or '.join(s.value for s in scopes)}")
        request.state.principal = principal
        return principal

    return dependency


def require_la_admin() -> Callable[[Request], Coroutine[Any, Any, Principal]]:
    """``admin`` for what belongs to the LA running Rollcall as a whole (the directory, the delivery
    queue, the audit log, subject-access exports): a token with a ``schools`` claim, or with an
    ``la`` claim naming another LA than the policy's, is refused (403) — none of these is filtered
    by school or LA."""
    admin = require(Scope.ADMIN)

    async def dependency(request: Request) -> Principal:
        principal = await admin(request)
        own_la = request.app.state.runtime.policy.la_code
        if principal.schools is not None or principal.la not in (None, own_la):
            raise forbidden(
                "this needs an admin token of the LA running Rollcall, not a school's or another LA's"
            )
        return principal

    return dependency


def mint_token(
    secret: str,
    sub: str,
    scopes: Iterable[str],
    schools: Iterable[str] | None = None,
    la: str | None = None,
    ttl_seconds: int = 3600,
) -> str:
    """An HS256 token for development, tests, the demo loader and benchmarks."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "scope": " ".join(scopes), "iat": now, "exp": now + ttl_seconds}
    if schools is not None:
        claims["schools"] = list(schools)
    if la is not None:
        claims["la"] = la
    return jwt.encode(claims, secret, algorithm="HS256")


def main() -> None:
    """``python -m shared.auth --scope marks:write --school 104001``: print a development token."""
    parser = argparse.ArgumentParser(description="Mint an HS256 development token with ROLLCALL_JWT_SECRET.")
    parser.add_argument("--sub", default="dev")
    parser.add_argument("--scope", action="append", default=[], help="repeatable, e.g. --scope marks:write")
    parser.add_argument("--school", action="append", help="repeatable URN; omit for an LA-wide token")
    parser.add_argument("--la")
    parser.add_argument("--ttl", type=int, default=8 * 3600)
    args = parser.parse_args()
    settings = Settings()
    if settings.jwks_url:
        raise SystemExit("with ROLLCALL_JWKS_URL set, tokens come from the identity provider")
    print(
        mint_token(
            settings.jwt_secret.get_secret_value(), args.sub, args.scope, args.school, args.la, args.ttl
        )
    )


if __name__ == "__main__":
    main()
