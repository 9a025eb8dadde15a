"""End to end over real HTTP: the ingest service under uvicorn, the demo loader as an MIS, Kafka.

The synthetic borough (a small slice of it) is pushed through the public API by
``python -m borough load``; then every mark in the register must be on ``rollcall.marks.v1``,
read by a consumer that is not this project's code when Debian's ``kcat`` is installed (CI
installs it), and by aiokafka otherwise.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from shared.migrate import upgrade
from tests.integration.ingest_fixtures import read_topic

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ingest_url(kafka_bootstrap: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    db = tmp_path / "ingest.db"
    url = f"sqlite+aiosqlite:///{db}"
    upgrade("ingest", url)
    port = free_port()
    env = dict(
        os.environ,
        ROLLCALL_ENV="dev",
        ROLLCALL_SERVICE="ingest",
        ROLLCALL_DATABASE_URL=url,
        ROLLCALL_KAFKA_BOOTSTRAP=kafka_bootstrap,
    )
    log = (tmp_path / "ingest.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "services.ingest.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        yield base, db
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def kcat_events(bootstrap: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kcat", "-b", bootstrap, "-t", "rollcall.marks.v1", "-C", "-e", "-q", "-f", "%s\n"],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


def test_demo_load_reaches_kafka(ingest_url: tuple[str, Path], kafka_bootstrap: str) -> None:
    base, db = ingest_url
    assert httpx.get(f"{base}/readyz").status_code == 200
    loader = subprocess.run(
        [
            sys.executable,
            "-m",
            "borough",
            "load",
            "--ingest",
            base,
            "--seed",
            "11",
            "--scale",
            "0.01",
            "--from",
            "2024-09-02",
            "--to",
            "2024-09-13",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert loader.returncode == 0, loader.stdout[-2000:] + loader.stderr[-2000:]

    with sqlite3.connect(db) as conn:
        register = {
            (urn, upn, d, s): code
            for urn, upn, d, s, code in conn.execute("SELECT school_urn, upn, date, session, code FROM marks")
        }
        schools = {r[0] for r in conn.execute("SELECT urn FROM schools")}
    assert len(register) > 1000
    assert len(schools) > 50

    mine = lambda e: e["data"]["school_urn"] in schools  # noqa: E731
    if shutil.which("kcat"):
        events = [e for e in kcat_events(kafka_bootstrap) if mine(e)]
        if len(events) < len(register):  # the relay may still be publishing: read once more
            time.sleep(3)
            events = [e for e in kcat_events(kafka_bootstrap) if mine(e)]
    else:
        found = asyncio.run(read_topic(kafka_bootstrap, "rollcall.marks.v1", mine, len(register), 60))
        events = [e for _, e, _ in found]

    latest: dict[tuple[str, str, str, str], str] = {}
    for e in events:  # partitions are per pupil, so each pupil's events are in order
        d = e["data"]
        assert e["specversion"] == "1.0"
        assert e["type"] in ("mark.recorded", "mark.amended")
        latest[(d["school_urn"], d["upn"], d["date"], d["session"])] = d["code"]
    assert latest == register
