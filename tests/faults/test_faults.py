"""The fault-injection suite at a tiny scale (`python -m faults`): two weeks of a few schools while
each service is SIGKILLed, Kafka and PostgreSQL restarted and notifications killed mid-webhook;
nothing may be lost or duplicated."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.path.isdir("/usr/lib/postgresql"), reason="needs PostgreSQL's binaries"),
]


def test_faults_lose_and_duplicate_nothing() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "faults", "--scale", "0.003", "--from", "2024-10-14", "--to", "2024-10-25",
         "--rounds", "1", "--gap-min", "1", "--gap-max", "3", "--fault-seed", "7", "--timeout", "600"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "total lost / duplicated" in run.stdout
    table = run.stdout
    for kind in ("kill-ingest", "kill-rules", "kill-legal", "kill-notifications", "restart-kafka",
                 "restart-postgres", "kill-notifications-mid-webhook"):  # fmt: skip
        assert f"  {kind} " in table, table
    assert "0 / 0\nduration" in table.replace("  total lost / duplicated", "total lost / duplicated") or (
        table.splitlines()[-2].rstrip().endswith("0 / 0")
    ), table
