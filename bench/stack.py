"""Starting the services under uvicorn and setting up schools, for benchmarks."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import orjson

from shared.auth import mint_token
from shared.migrate import upgrade
from shared.settings import DEV_JWT_SECRET
from shared.upn import make_upn

ROOT = Path(__file__).resolve().parent.parent
TERMS = [
    {"start": "2024-09-03", "end": "2024-10-25"},
    {"start": "2024-11-04", "end": "2024-12-20"},
    {"start": "2025-01-06", "end": "2025-02-14"},
    {"start": "2025-02-24", "end": "2025-04-04"},
    {"start": "2025-04-22", "end": "2025-05-23"},
    {"start": "2025-06-02", "end": "2025-07-22"},
]
ADMIN = {"Authorization": f"Bearer {mint_token(DEV_JWT_SECRET, 'bench', ['admin'], ttl_seconds=86400)}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def school_days(n: int, first: dt.date = dt.date(2024, 9, 3)) -> list[dt.date]:
    """The first ``n`` school days of TERMS from ``first``."""
    days: list[dt.date] = []
    d = first
    while len(days) < n:
        if d.weekday() < 5 and any(
            dt.date.fromisoformat(t["start"]) <= d <= dt.date.fromisoformat(t["end"]) for t in TERMS
        ):
            days.append(d)
        d += dt.timedelta(days=1)
    return days


async def start_service(
    service: str, db_url: str, bootstrap: str, **env: str
) -> tuple[subprocess.Popen[bytes], str]:
    """Migrate, start ``service`` under uvicorn on a free loopback port and wait for /readyz."""
    return await start_processes(service, db_url, bootstrap, 1, env)


async def start_processes(
    service: str, db_url: str, bootstrap: str, processes: int, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    """``start_service`` with ``processes`` uvicorn worker processes on the one port (> 1)."""
    await asyncio.to_thread(upgrade, service, db_url)
    port = free_port()
    environ = dict(
        os.environ,
        ROLLCALL_ENV="test",
        ROLLCALL_SERVICE=service,
        ROLLCALL_DATABASE_URL=db_url,
        ROLLCALL_KAFKA_BOOTSTRAP=bootstrap,
        ROLLCALL_LOG_LEVEL="WARNING",
        **env,
    )
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        f"services.{service}.app:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        *(["--workers", str(processes)] if processes > 1 else []),
    ]
    proc = await asyncio.to_thread(
        subprocess.Popen, command, cwd=ROOT, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(240):
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return proc, base
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
    proc.kill()
    raise RuntimeError(f"{service} did not become ready")


async def register_school(
    client: httpx.AsyncClient, urn: str, establishment: int, pupils: int
) -> tuple[dict[str, str], list[str]]:
    """A secondary school with ``pupils`` pupils; returns its MIS headers and the UPNs. Each
    school's MIS is a client of its own (token subject ``mis-<urn>``), as each school's system is,
    so the per-client rate limit applies per school (it was one "mis" for all: the single-mark
    measure of 1,000 POSTs/s from 20 schools was then partly refused with 429s)."""
    mis = mint_token(DEV_JWT_SECRET, f"mis-{urn}", ["marks:write", "pupils:write"], [urn], ttl_seconds=86400)
    headers = {"Authorization": f"Bearer {mis}", "Content-Type": "application/json"}
    school = {"name": f"Bench {urn}", "la_code": "343", "phase": "secondary", "type": "academy"}
    (await client.put(f"/v1/schools/{urn}", json=school, headers=ADMIN)).raise_for_status()
    calendar = {"terms": TERMS, "closed": []}
    (
        await client.put(f"/v1/schools/{urn}/calendar/2024-25", json=calendar, headers=headers)
    ).raise_for_status()
    # A UPN has a 3-digit serial: past 1,000 pupils the issue year moves on (20, 21, …).
    upns = [make_upn(343, establishment, 20 + n // 1000, n % 1000) for n in range(pupils)]
    for start in range(0, len(upns), 5000):
        roster = [
            {
                "upn": u,
                "given_name": "A",
                "family_name": "B",
                "date_of_birth": "2011-01-01",
                "year_group": "9",
                "home_la_code": "343",
                "admission_date": "2020-09-01",
                "fsm": False,
                "sen": "none",
            }
            for u in upns[start : start + 5000]
        ]
        r = await client.put(
            f"/v1/schools/{urn}/pupils", content=orjson.dumps({"pupils": roster}), headers=headers
        )
        r.raise_for_status()
    return headers, upns
