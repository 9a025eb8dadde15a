"""Apache Kafka 4 (KRaft, single node) from Maven Central jars, run with the machine's Java.

``python -m deploy.kafka fetch|start|stop|status``. ``fetch`` resolves ``deploy/kafka/pom.xml``
(kafka_2.13 plus a log4j2 SLF4J binding) with Maven into a cache folder; ``start`` formats the
KRaft storage once (``kafka.tools.StorageTool format``), starts ``kafka.Kafka`` in the background
and waits until the broker accepts connections; the contract's topics are then created by
``shared.kafka.ensure_topics``. Tests use the same ``Broker`` class, once per test run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from shared.kafka import ensure_topics

HERE = Path(__file__).resolve().parent
KAFKA_DIR = HERE / "kafka"
CACHE = Path(os.environ.get("ROLLCALL_CACHE", Path.home() / ".cache" / "rollcall"))


def kafka_version() -> str:
    text = (KAFKA_DIR / "pom.xml").read_text()
    return text.split("<kafka.version>", 1)[1].split("</kafka.version>", 1)[0]


def libs_dir() -> Path:
    return CACHE / f"kafka-{kafka_version()}" / "libs"


def fetch() -> Path:
    """The folder of Kafka's jars, resolved from Maven Central on first use."""
    libs = libs_dir()
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise SystemExit("Maven (mvn) is needed to fetch Kafka from Maven Central: apt-get install -y maven")
    tmp = libs.with_name("libs.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(KAFKA_DIR / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ],
        check=True,
    )
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    marker.touch()
    return libs


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@dataclass
class Broker:
    """One KRaft broker+controller with its data under ``home``."""

    home: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "768m"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pidfile(self) -> Path:
        return self.home / "kafka.pid"

    def _java(self, libs: Path) -> list[str]:
        return [
            "java",
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
        ]

    def configure(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        props = (
            (KAFKA_DIR / "server.properties")
            .read_text()
            .format(port=self.port, controller_port=self.controller_port, log_dirs=self.home / "logs")
        )
        path = self.home / "server.properties"
        path.write_text(props)
        return path

    def format(self, libs: Path) -> None:
        """Format KRaft storage once; an already formatted folder is kept (its topics survive restarts)."""
        config = self.configure()
        if (self.home / "logs" / "meta.properties").exists():
            return
        # "--cluster-id=…" in one word: one id in 64 starts with "-", which argparse4j took for an option.
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        subprocess.run(
            [
                *self._java(libs),
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cid}",
                "-c",
                str(config),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None

    def start(self, timeout: float = 90) -> None:
        """Start the broker in the background (no-op if ours is running) and wait until it accepts."""
        if self.running_pid() is not None and port_open(self.port):
            return
        if port_open(self.port):
            raise SystemExit(f"port {self.port} is already in use by another process")
        libs = fetch()
        self.format(libs)
        log = (self.home / "kafka.log").open("ab")
        proc = subprocess.Popen(
            [*self._java(libs), "kafka.Kafka", str(self.home / "server.properties")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pidfile.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"Kafka exited with {proc.returncode}; see {self.home / 'kafka.log'}")
            if port_open(self.port):
                return
            time.sleep(0.25)
        raise SystemExit(f"Kafka did not open port {self.port} in {timeout}s; see {self.home / 'kafka.log'}")

    def stop(self, timeout: float = 30) -> None:
        pid = self.running_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, for fault-injection tests."""
        pid = self.running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            self.pidfile.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["fetch", "start", "stop", "status"])
    parser.add_argument("--home", type=Path, default=Path("data/kafka"))
    parser.add_argument("--port", type=int, default=9092)
    args = parser.parse_args()
    broker = Broker(args.home.resolve(), args.port, args.port + 1)
    if args.action == "fetch":
        print(fetch())
    elif args.action == "start":
        broker.start()
        created = asyncio.run(ensure_topics(broker.bootstrap))
        print(
            f"kafka {kafka_version()} on {broker.bootstrap}; topics created: {', '.join(created) or 'none'}"
        )
    elif args.action == "stop":
        broker.stop()
    else:
        print("running" if broker.running_pid() and port_open(broker.port) else "stopped")


if __name__ == "__main__":
    main()
