"""A subject-access export: everything Rollcall holds about one pupil, from all four services.

``python -m shared.sar A343200018001 --purpose "SAR 2025/117" > sar.json`` (or ``make sar
UPN=A343200018001``) calls ``GET /v1/pupils/{upn}/export`` on ingest, rules, legal and
notifications (running services, URLs from ``--ingest`` … or ``ROLLCALL_<SERVICE>_URL``, default
the local stack's ports) with an admin token (``ROLLCALL_TOKEN``, else one minted with the
development secret, which only a dev/test deployment accepts) and prints one JSON document:
``{"upn", "generated_at", "services": {name: export}}``. Each export is audited by its service
with the given purpose. A service that does not answer 200 makes the command fail (exit 1): a
partial export must not be mistaken for a complete one.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from typing import Any

import httpx
import orjson

from shared.audit import PURPOSE_HEADER
from shared.auth import mint_token
from shared.settings import Settings

DEFAULT_URLS = {
    "ingest": "http://127.0.0.1:8001",
    "rules": "http://127.0.0.1:8002",
    "legal": "http://127.0.0.1:8003",
    "notifications": "http://127.0.0.1:8004",
}


async def gather(
    upn: str,
    urls: dict[str, str],
    token: str,
    purpose: str,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Any]:
    """The four exports in one document; raises ``RuntimeError`` naming every service that failed."""
    headers = {"Authorization": f"Bearer {token}", PURPOSE_HEADER: purpose}
    async with httpx.AsyncClient(timeout=60, transport=transport) as client:

        async def one(name: str, base: str) -> tuple[str, int, Any]:
            try:
                r = await client.get(f"{base.rstrip('/')}/v1/pupils/{upn}/export", headers=headers)
            except httpx.HTTPError as exc:
                return name, 0, type(exc).__name__
            return name, r.status_code, orjson.loads(r.content) if r.status_code == 200 else r.text[:300]

        results = await asyncio.gather(*(one(n, u) for n, u in urls.items()))
    failed = [f"{name}: {status or body}" for name, status, body in results if status != 200]
    if failed:
        raise RuntimeError("; ".join(failed))
    return {
        "upn": upn,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "services": {name: body for name, _, body in results},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("upn")
    parser.add_argument("--purpose", default="subject access request", help=f"sent as {PURPOSE_HEADER}")
    for name, url in DEFAULT_URLS.items():
        parser.add_argument(f"--{name}", default=os.environ.get(f"ROLLCALL_{name.upper()}_URL", url))
    parser.add_argument("--out", help="write the JSON here instead of stdout")
    args = parser.parse_args()
    token = os.environ.get("ROLLCALL_TOKEN") or mint_token(
        Settings().jwt_secret.get_secret_value(), "subject-access", ["admin"], ttl_seconds=600
    )
    urls = {name: getattr(args, name) for name in DEFAULT_URLS}
    try:
        document = asyncio.run(gather(args.upn.strip().upper(), urls, token, args.purpose))
    except RuntimeError as exc:
        print(f"subject-access export failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    data = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    if args.out:
        with open(args.out, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data + b"\n")


if __name__ == "__main__":
    main()
