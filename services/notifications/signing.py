"""Standard Webhooks signatures (CONTRACT.md "Webhook delivery"; standardwebhooks.com spec).

The secret is ``whsec_`` followed by the base64 of 24–64 random bytes; the HMAC key is those
decoded bytes. ``webhook-signature`` is ``v1,`` + base64(HMAC-SHA256(key, "id.timestamp.body")).
Computed with the standard library: it is five lines, and a dependency would be larger than that.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


class SecretError(ValueError):
    """A webhook secret that is not ``whsec_`` + base64 of 24–64 bytes."""


def secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret; raises ``SecretError`` naming what is wrong."""
    if not secret.startswith(SECRET_PREFIX):
        raise SecretError("the secret must start with 'whsec_'")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError("the secret after 'whsec_' must be standard base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise SecretError(
            f"the secret must encode {MIN_SECRET_BYTES}–{MAX_SECRET_BYTES} bytes, not {len(key)}"
        )
    return key


def new_secret(size: int = 32) -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(size)).decode()


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, msg_id, timestamp, body),
    }


def verify(secret: str, msg_id: str, timestamp: str, body: bytes, header: str) -> bool:
    """Whether any ``v1`` signature in ``header`` (space-separated) matches; for receivers and tests."""
    expected = signature(secret_key(secret), msg_id, int(timestamp), body)
    return any(hmac.compare_digest(expected, part) for part in header.split())
