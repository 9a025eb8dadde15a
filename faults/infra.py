"""The suite's own processes on loopback: a private PostgreSQL cluster, the services under uvicorn
(with a supervisor that restarts the ones killed) and a webhook receiver that can hold requests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from shared.migrate import upgrade

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("ingest", "rules", "legal", "notifications")


_TAKEN: set[int] = set()


def free_port(lo: int = 29400, hi: int = 29500) -> int:
    """A free loopback port, preferably in [lo, hi), never one this process handed out before."""
    for port in range(lo, hi):
        if port in _TAKEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            with socket.socket() as probe:  # the controller port must be free too
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    continue
            _TAKEN.add(port)
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    """A private PostgreSQL cluster (initdb in ``home``, trust auth, loopback) so restarting it
    disturbs nobody else's databases."""

    def __init__(self, home: Path, port: int) -> None:
        versions = sorted(os.listdir("/usr/lib/postgresql"), key=lambda v: [int(x) for x in v.split(".")])
        self.bin = Path("/usr/lib/postgresql") / versions[-1] / "bin"
        self.home = home
        self.data = home / "pgdata"
        self.port = port
        self.restarts = 0

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def url(self, db: str) -> str:
        return f"postgresql+asyncpg://rollcall@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self.home.parent.chmod(0o755)  # mkdtemp's 0700 would keep the postgres user out
            shutil.chown(self.home, "postgres")
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", "rollcall", "--auth=trust", "-E", "UTF8")
        self._pg_ctl("start")

    def _pg_ctl(self, action: str, *extra: str) -> None:
        opts = (
            f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.home / "postgres.log"), "-w", "-o", opts,
                  *extra, action)  # fmt: skip

    def restart(self) -> None:
        """``-m immediate``: the server is stopped as if it crashed, and recovers from its WAL."""
        self._pg_ctl("restart", "-m", "immediate")
        self.restarts += 1

    def create(self, db: str) -> None:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "rollcall", db)

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "fast")


@dataclass
class Service:
    name: str
    port: int
    db_url: str
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = dict(os.environ, ROLLCALL_SERVICE=self.name, ROLLCALL_DATABASE_URL=self.db_url, **self.env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", f"services.{self.name}.app:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log"],
            cwd=ROOT, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.ready():
                return
            time.sleep(0.3)  # a dead process is the supervisor's to restart
        raise RuntimeError(f"{self.name} not ready in {seconds:.0f} s; see {self.log}")


class Supervisor:
    """Restarts any service whose process has died (the suite kills them; so could a crash)."""

    def __init__(self, services: dict[str, Service]) -> None:
        self.services = services
        self.restarts = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.3):
            with self._lock:
                for s in self.services.values():
                    if not s.alive():
                        s.start()
                        self.restarts += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for s in self.services.values():
            if s.proc is not None and s.proc.poll() is None:
                s.proc.terminate()
        for s in self.services.values():
            if s.proc is not None:
                try:
                    s.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    s.proc.kill()


@dataclass
class Receiver:
    """A webhook receiver on loopback: records every request's ``webhook-id`` and answer; while
    ``hold`` is set, requests wait (up to 30 s) before being answered, so a delivery can be
    caught in flight."""

    requests: list[tuple[str, int]] = field(default_factory=list)
    in_flight: int = 0
    hold: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        outer = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                wid = self.headers.get("webhook-id", "")
                with lock:
                    outer.in_flight += 1
                try:
                    if outer.hold.is_set():
                        outer.release.wait(30)
                    self.send_response(204)
                    self.end_headers()
                    with lock:
                        outer.requests.append((wid, 204))
                except OSError:  # the sender died mid-request
                    with lock:
                        outer.requests.append((wid, 0))
                finally:
                    with lock:
                        outer.in_flight -= 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def delivered_ids(self) -> list[str]:
        return [wid for wid, status in list(self.requests) if status == 204]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


def migrate(service: str, url: str) -> None:
    upgrade(service, url)
