"""Token verification: HS256 in development, RS256 against a real JWKS served on loopback."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from shared.auth import Principal, TokenVerifier, mint_token
from shared.problems import Problem
from shared.settings import DEV_JWT_SECRET, Settings


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture(scope="module")
def jwks_url(signing_key: rsa.RSAPrivateKey) -> Iterator[str]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()


def rs256(key: rsa.RSAPrivateKey, kid: str = "k1", **claims: Any) -> str:
    base = {"sub": "sw-1", "scope": "alerts:read", "exp": int(time.time()) + 60}
    base.update(claims)
    return jwt.encode(base, key, algorithm="RS256", headers={"kid": kid})


async def test_rs256_token_verified_against_jwks(signing_key: rsa.RSAPrivateKey, jwks_url: str) -> None:
    verifier = TokenVerifier(Settings(env="production", jwks_url=jwks_url))
    principal = await verifier.verify(rs256(signing_key, schools=["104001"], la="343"))
    assert principal == Principal("sw-1", frozenset({"alerts:read"}), frozenset({"104001"}), "343")


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda key: rs256(rsa_key()), id="signed-by-another-key"),
        pytest.param(lambda key: rs256(key, exp=int(time.time()) - 5), id="expired"),
        pytest.param(lambda key: mint_token(DEV_JWT_SECRET, "x", ["admin"]), id="hs256-when-jwks-configured"),
        pytest.param(lambda key: rs256(key, kid="unknown"), id="unknown-kid"),
    ],
)
async def test_rs256_refusals(make: Any, signing_key: rsa.RSAPrivateKey, jwks_url: str) -> None:
    verifier = TokenVerifier(Settings(env="production", jwks_url=jwks_url))
    with pytest.raises(Problem) as exc:
        await verifier.verify(make(signing_key))
    assert exc.value.status == 401


async def test_hs256_needs_the_shared_secret() -> None:
    verifier = TokenVerifier(Settings(env="test"))
    ok = await verifier.verify(mint_token(DEV_JWT_SECRET, "mis", ["marks:write"], ["104001"]))
    assert ok.schools == frozenset({"104001"})
    with pytest.raises(Problem) as exc:
        await verifier.verify(mint_token("another-secret-of-enough-length-000000", "mis", ["marks:write"]))
    assert exc.value.status == 401


async def test_a_remembered_token_still_expires() -> None:
    """The verified-token cache never outlives the token's exp (nor CACHE_SECONDS)."""
    verifier = TokenVerifier(Settings(env="test"))
    token = mint_token(DEV_JWT_SECRET, "ao-1", ["attendance:read"], ttl_seconds=2)
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first  # remembered: the same principal, no second check
    await asyncio.sleep(2.2)  # exp = int(now) + 2: at least one second after the first check
    with pytest.raises(Problem) as exc:
        await verifier.verify(token)
    assert (exc.value.status, exc.value.detail) == (401, "the token has expired")
    long_lived = mint_token(DEV_JWT_SECRET, "ao-1", ["attendance:read"], ttl_seconds=3600)
    await verifier.verify(long_lived)
    assert verifier._verified[long_lived][1] <= time.time() + TokenVerifier.CACHE_SECONDS


def test_production_refuses_the_default_secret() -> None:
    with pytest.raises(ValidationError, match="ROLLCALL_JWKS_URL"):
        Settings(env="production")
    Settings(env="production", jwt_secret="a-real-secret-from-the-vault-0123456789")  # type: ignore[arg-type]
    Settings(env="dev")
