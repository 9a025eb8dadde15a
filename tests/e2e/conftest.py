"""The e2e stack, shared by the e2e modules: its own Kafka broker, the four services under uvicorn
on loopback (SQLite), and a slice of the synthetic borough loaded through the public API by
``python -m borough load`` acting as the schools' MIS.

Every service believes today is ``TODAY``, the school day after the loaded slice, so a test can
mark a session "this morning" and see first-day alerts.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from deploy.kafka import Broker
from shared.kafka import ensure_topics
from shared.migrate import upgrade

ROOT = Path(__file__).resolve().parents[2]
SEED, SCALE, START, END, TODAY = 11, 0.01, "2024-09-02", "2024-10-24", "2024-10-25"
SERVICES = ("ingest", "rules", "legal", "notifications")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    urls: dict[str, str]
    dbs: dict[str, Path]
    logs: list[Path]
    artifacts: Path

    @property
    def ingest(self) -> str:
        return self.urls["ingest"]

    @property
    def rules(self) -> str:
        return self.urls["rules"]

    @property
    def ingest_db(self) -> Path:
        return self.dbs["ingest"]


def start(
    service: str, db: Path, bootstrap: str, log: Path, port: int, **env_extra: str
) -> subprocess.Popen[bytes]:
    url = f"sqlite+aiosqlite:///{db}"
    upgrade(service, url)
    env = dict(
        os.environ,
        ROLLCALL_ENV="dev",
        ROLLCALL_SERVICE=service,
        ROLLCALL_DATABASE_URL=url,
        ROLLCALL_KAFKA_BOOTSTRAP=bootstrap,
        ROLLCALL_CONSUMER_GROUP=f"e2e-{service}-{port}",
        ROLLCALL_TODAY=TODAY,
        ROLLCALL_PURGE_INTERVAL_SECONDS="15",  # the daily purge job, soon enough to be in the logs
        **env_extra,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", f"services.{service}.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
        cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"{base} did not become ready: {log.read_text()[-2000:]}")


@pytest.fixture(scope="package")
def e2e_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker of the e2e run's own: the stack consumes its topics from the beginning, so other
    tests' events must not be there."""
    broker = Broker(tmp_path_factory.mktemp("e2e-kafka"), free_port(), free_port(), heap="512m")
    broker.start()
    asyncio.run(ensure_topics(broker.bootstrap, partitions=3))
    yield broker.bootstrap
    broker.kill()


@pytest.fixture(scope="package")
def stack(e2e_kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    ports = {s: free_port() for s in SERVICES}
    urls = {s: f"http://127.0.0.1:{p}" for s, p in ports.items()}
    dbs = {s: tmp / f"{s}.db" for s in SERVICES}
    logs = {s: tmp / f"{s}.log" for s in SERVICES}
    partners = {"ROLLCALL_LEGAL_URL": urls["legal"], "ROLLCALL_NOTIFICATIONS_URL": urls["notifications"],
                "ROLLCALL_FIGURES_MAX_AGE_SECONDS": "1"}  # fmt: skip
    procs = {s: start(s, dbs[s], e2e_kafka, logs[s], ports[s], **(partners if s == "rules" else {}))
             for s in SERVICES}  # fmt: skip
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    try:
        for s in SERVICES:
            wait_ready(urls[s], procs[s], logs[s])
        loader = subprocess.run(
            [sys.executable, "-m", "borough", "load", "--ingest", urls["ingest"], "--seed", str(SEED),
             "--scale", str(SCALE), "--from", START, "--to", END, "--no-progress"],
            cwd=ROOT, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert loader.returncode == 0, loader.stdout[-2000:] + loader.stderr[-2000:]
        yield Stack(urls, dbs, [logs[s] for s in SERVICES], artifacts)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(timeout=30)
