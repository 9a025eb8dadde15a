"""What the audit log costs a read (issue 7): ``GET /v1/pupils/{upn}/attendance`` with the audit
row written before the answer (as served) against the same request with the write skipped.

A rules database is filled with a slice of the synthetic borough (``bench.rules.fill_rules_db``);
the rules app runs in-process behind httpx's ASGI transport (no Kafka is needed to read), and the
two variants alternate in rounds so a busy shared machine slows both alike. Prints p50/p95 per
variant and the difference, for SQLite and (with ``ROLLCALL_BENCH_POSTGRES_URL``) PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.ingest import drop_postgres, fresh_postgres
from bench.rules import fill_rules_db
from shared import audit
from shared.auth import mint_token
from shared.settings import DEV_JWT_SECRET, Settings


async def measure(url: str, scale: float, rounds: int, per_round: int) -> dict[str, list[float]]:
    from services.rules.app import create_app

    upns, _ = await fill_rules_db(url, 2024, scale)
    settings = Settings(service="rules", env="test", database_url=url, kafka_bootstrap="127.0.0.1:1",
                        rate_limit_enabled=False, today=dt.date(2025, 7, 22), workers="none",
                        relay_enabled=False, log_level="WARNING")  # fmt: skip
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {mint_token(DEV_JWT_SECRET, 'bench', ['attendance:read'])}",
               audit.PURPOSE_HEADER: "benchmark"}  # fmt: skip
    # The middleware writes through ``AuditWriter``: skipping its ``write`` skips the row (and the
    # rest of the middleware's work stays in both variants).
    real_write = audit.AuditWriter.write

    async def skip(*_: Any, **__: Any) -> None:
        return None

    times: dict[str, list[float]] = {"audited": [], "not audited": []}
    rng = random.Random(7)
    async with app.router.lifespan_context(app):
        # No broker here, so no directory of social workers to read: it is empty, and known to be.
        app.state.runtime.state["directory"].loaded.set()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rules") as client:
            for _ in range(20):  # warm up
                await client.get(f"/v1/pupils/{rng.choice(upns)}/attendance", headers=headers)
            for _ in range(rounds):
                for variant in ("audited", "not audited"):
                    audit.AuditWriter.write = real_write if variant == "audited" else skip  # type: ignore[method-assign]
                    for _ in range(per_round):
                        t0 = time.perf_counter()
                        r = await client.get(f"/v1/pupils/{rng.choice(upns)}/attendance", headers=headers)
                        times[variant].append((time.perf_counter() - t0) * 1000)
                        assert r.status_code == 200, r.text
    audit.AuditWriter.write = real_write  # type: ignore[method-assign]
    return times


def report(name: str, times: dict[str, list[float]]) -> None:
    def q(xs: list[float], p: float) -> float:
        return statistics.quantiles(xs, n=100)[int(p) - 1]

    a, n = times["audited"], times["not audited"]
    print(f"{name}: GET /v1/pupils/{{upn}}/attendance, {len(a)} requests per variant")
    for label, xs in (("audited", a), ("not audited", n)):
        mean = statistics.fmean(xs)
        print(f"  {label:12} p50 {q(xs, 50):6.2f} ms   p95 {q(xs, 95):6.2f} ms   mean {mean:6.2f} ms")
    cost = statistics.fmean(a) - statistics.fmean(n)
    print(f"  audit cost   p50 {q(a, 50) - q(n, 50):+6.2f} ms   mean {cost:+6.2f} ms")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=50)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'rules.db'}"
        report("SQLite", asyncio.run(measure(url, args.scale, args.rounds, args.per_round)))
    base = os.environ.get("ROLLCALL_BENCH_POSTGRES_URL")
    if base:
        url = asyncio.run(fresh_postgres(base))
        try:
            report("PostgreSQL", asyncio.run(measure(url, args.scale, args.rounds, args.per_round)))
        finally:
            asyncio.run(drop_postgres(base, url))
    else:
        print("PostgreSQL: skipped (ROLLCALL_BENCH_POSTGRES_URL not set; `make bench` sets it)")


if __name__ == "__main__":
    main()
