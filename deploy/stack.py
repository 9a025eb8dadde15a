"""Run the whole Rollcall stack on this machine: ``python -m deploy.stack up`` (``make run``).

Starts real Apache Kafka on 127.0.0.1:9092 (fetched from Maven Central on first use), creates the
contract's topics, migrates each service's database (SQLite files under ``data/`` unless
``ROLLCALL_DATABASE_URL`` names PostgreSQL), starts every service that exists under uvicorn on its
contract port, waits for ``/readyz``, then loads the synthetic borough through the public ingest
API. It stays in the foreground until Ctrl-C, then stops everything it started.
``python -m deploy.stack down`` stops a stack left running with ``--detach``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from deploy.kafka import Broker
from shared.kafka import ensure_topics
from shared.migrate import upgrade
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PORTS = {"ingest": 8001, "rules": 8002, "legal": 8003, "notifications": 8004}


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # reap it if it is our own child
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def available_services() -> list[str]:
    """The services built so far (those with an app factory)."""
    return [name for name in PORTS if importlib.util.find_spec(f"services.{name}.app") is not None]


class Stack:
    def __init__(self, data: Path) -> None:
        self.data = data.resolve()
        self.run_dir = self.data / "run"
        self.log_dir = self.data / "logs"
        self.broker = Broker(self.data / "kafka")

    def pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def start_kafka(self) -> None:
        print(
            f"kafka: starting on {self.broker.bootstrap} (first run fetches it from Maven Central)…",
            flush=True,
        )
        self.broker.start()
        created = asyncio.run(ensure_topics(self.broker.bootstrap))
        print(f"kafka: ready; topics created: {', '.join(created) or 'already there'}", flush=True)

    def service_env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("ROLLCALL_ENV", "dev")
        env["ROLLCALL_SERVICE"] = name
        env["ROLLCALL_DATA_DIR"] = str(self.data)
        env.setdefault("ROLLCALL_KAFKA_BOOTSTRAP", self.broker.bootstrap)
        per_service = os.environ.get(f"ROLLCALL_{name.upper()}_DATABASE_URL")
        if per_service:
            env["ROLLCALL_DATABASE_URL"] = per_service
        return env

    def start_service(self, name: str) -> None:
        env = self.service_env(name)
        settings = Settings(service=name, data_dir=self.data, database_url=env.get("ROLLCALL_DATABASE_URL"))
        upgrade(name, settings.db_url)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                f"services.{name}.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(PORTS[name]),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pidfile(name).write_text(str(proc.pid))
        print(
            f"{name}: starting on http://127.0.0.1:{PORTS[name]} (log {self.log_dir / (name + '.log')})",
            flush=True,
        )

    def wait_ready(self, name: str, timeout: float = 60) -> None:
        url = f"http://127.0.0.1:{PORTS[name]}/readyz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    print(f"{name}: ready", flush=True)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"{name} did not become ready in {timeout}s; see {self.log_dir / (name + '.log')}")

    def stop_services(self, timeout: float = 30) -> None:
        """SIGTERM every service, then wait for them: each drains its outbox while Kafka is up."""
        pids: list[int] = []
        for name in PORTS:
            pidfile = self.pidfile(name)
            if not pidfile.exists():
                continue
            with contextlib.suppress(ProcessLookupError, ValueError):
                pid = int(pidfile.read_text())
                os.killpg(pid, signal.SIGTERM)
                pids.append(pid)
            pidfile.unlink(missing_ok=True)
        deadline = time.monotonic() + timeout
        for pid in pids:
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.2)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)

    def down(self) -> None:
        self.stop_services()
        self.broker.stop()


def load_demo(args: argparse.Namespace) -> None:
    cmd = [
        sys.executable,
        "-m",
        "borough",
        "load",
        "--ingest",
        f"http://127.0.0.1:{PORTS['ingest']}",
        "--seed",
        str(args.seed),
        "--scale",
        str(args.scale),
        "--from",
        args.demo_from,
        "--to",
        args.demo_to,
    ]
    print("demo: loading the synthetic borough through the ingest API:", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument(
        "--data", type=Path, default=ROOT / "data", help="folder for databases, Kafka and logs"
    )
    parser.add_argument("--no-demo", action="store_true", help="start the stack without loading demo data")
    parser.add_argument("--detach", action="store_true", help="leave the stack running and return")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the borough's pupils to load")
    parser.add_argument("--demo-from", default="2024-09-02", help="first date of demo marks")
    parser.add_argument(
        "--demo-to", default="2024-09-30", help="last date of demo marks (2025-07-22: whole year)"
    )
    args = parser.parse_args()
    stack = Stack(args.data)
    if args.action == "down":
        stack.down()
        return
    stack.start_kafka()
    if not args.no_demo:
        # The demo is a past school year: every service behaves as if today were its last day.
        os.environ.setdefault("ROLLCALL_TODAY", args.demo_to)
    names = available_services()
    try:
        for name in names:
            stack.start_service(name)
        for name in names:
            stack.wait_ready(name)
        if not args.no_demo:
            load_demo(args)
        if "rules" in names:
            print(f"dashboard: http://127.0.0.1:{PORTS['rules']}/dashboard (development sign-in)", flush=True)
        if args.detach:
            print("stack running; stop it with: python -m deploy.stack down", flush=True)
            return
        print("stack running; Ctrl-C stops it", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except BaseException:
        stack.down()
        raise
    stack.down()


if __name__ == "__main__":
    main()
