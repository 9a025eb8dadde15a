"""deploy/kafka.py formats KRaft storage with any cluster id, including the one in 64 that starts
with "-" (the StorageTool's argument parser once took such an id for an option and the benchmark
failed to start its broker). Real Kafka jars and Java; the broker is not started."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest

from deploy import kafka

pytestmark = pytest.mark.integration


def test_a_cluster_id_starting_with_a_dash_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dashed = next(u for u in iter(uuid.uuid4, None) if base64.urlsafe_b64encode(u.bytes).startswith(b"-"))
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: dashed)
    broker = kafka.Broker(tmp_path / "kafka", 1, 2)
    broker.format(kafka.fetch())
    meta = (tmp_path / "kafka" / "logs" / "meta.properties").read_text()
    assert f"cluster.id={base64.urlsafe_b64encode(dashed.bytes).decode().rstrip('=')}\n" in meta
