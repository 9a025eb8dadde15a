"""The legal service against real Kafka and a real database (SQLite and PostgreSQL).

Registry, register and signal events are produced to their topics as ingest and rules would; the
legal service consumes them with its own consumer group (the inbox makes a redelivered event a
no-op), opens a case for review, and publishes its own events through the outbox to
``rollcall.legal.v1`` keyed by case id — including ``deadline.approaching`` once per deadline.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from services.legal import worker
from shared import kafka
from shared.events import CloudEvent
from shared.upn import make_upn
from tests.conftest import bearer
from tests.integration.ingest_fixtures import read_topic, service_client
from tests.integration.test_legal_api import (
    JAN,
    SEPT,
    TERMS,
    event,
    mark_events,
    pupil_event,
    school_event,
    threshold_signal,
    weekdays,
)

pytestmark = pytest.mark.integration
READ, WRITE = "legal:read", "legal:read legal:write"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def legal(
    request: pytest.FixtureRequest, tmp_path: Any, kafka_bootstrap: str
) -> AsyncIterator[httpx.AsyncClient]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'legal.db'}"
    else:
        url = await request.getfixturevalue("postgres_databases")()
    group = f"test-legal-{uuid.uuid4().hex[:8]}"
    async with service_client(
        "legal", url, kafka_bootstrap, consumer_group=group, scheduler_seconds=3600
    ) as client:
        yield client


async def produce(bootstrap: str, topic: str, events: list[CloudEvent]) -> None:
    producer = kafka.producer(bootstrap)
    await producer.start()
    try:
        for e in events:
            key = str(e.data.get("upn") or e.data.get("urn") or e.data.get("school_urn")).encode()
            await producer.send_and_wait(topic, orjson.dumps(e.model_dump(mode="json")), key=key)
    finally:
        await producer.stop()


async def poll(client: httpx.AsyncClient, path: str, until: Any, seconds: float = 30, **params: Any) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    body: Any = None
    while asyncio.get_running_loop().time() < deadline:
        r = await client.get(path, params=params, headers=bearer(READ))
        if r.status_code == 200:
            body = r.json()
            if until(body):
                return body
        await asyncio.sleep(0.25)
    raise AssertionError(f"{path} never satisfied the condition: {body}")


async def test_signals_from_kafka_open_a_case_and_legal_events_are_published(
    legal: httpx.AsyncClient, kafka_bootstrap: str
) -> None:
    serial = uuid.uuid4().int % 900 + 50
    urn = str(140000 + serial)
    upn = make_upn(343, 5000 + serial, 18, serial)
    present = [(d, s, "/") for d in weekdays("2024-09-03", "2024-09-13") for s in ("AM", "PM")]
    await produce(
        kafka_bootstrap,
        "rollcall.registry.v1",
        [
            school_event(urn),
            event("calendar.updated", {"school_urn": urn, "year": "2024-25", "terms": TERMS, "closed": []}),
            pupil_event(upn, urn),
        ],
    )
    await produce(kafka_bootstrap, "rollcall.marks.v1", mark_events(upn, urn, present + SEPT + JAN))
    signal = threshold_signal(upn, urn, "2024-09-20", "2024-09-02", SEPT)
    await produce(kafka_bootstrap, "rollcall.signals.v1", [signal, signal])  # the second is a redelivery

    listed = await poll(legal, "/v1/cases", lambda b: len(b["items"]) == 1, upn=upn)
    cid = listed["items"][0]["id"]
    case = await poll(
        legal,
        f"/v1/cases/{cid}",
        # The school's event is on another partition of the registry topic: it may come later.
        lambda b: (
            len(b["offences"]) == 1
            and b["pupil"]["date_of_birth"] is not None
            and b["school"]["la_code"] is not None
        ),
    )
    assert case["state"] == "support"
    assert [h["kind"] for h in case["history"]] == ["opened"]  # the duplicate had no effect
    # The register consumed from Kafka is in the evidence pack.
    ev = await poll(legal, f"/v1/cases/{cid}/evidence", lambda b: len(b["register"]) == 28)
    assert sum(1 for x in ev["register"] if x["code"] == "G") == 4

    r = await legal.post(
        f"/v1/cases/{cid}/penalty-notices",
        json={"parent_id": "P1", "issued_on": "2025-02-24"},
        headers=bearer(WRITE),
    )
    assert r.status_code == 201, r.text
    notice = r.json()
    runtime = legal.app.state.runtime  # type: ignore[attr-defined]
    # Day 21 (17 Mar) is 10 school days away on 3 Mar: announced now (once: see the events below).
    # Other tests' signals on the session broker may open cases here too, so count at least one.
    assert await worker.tick(runtime) >= 1
    assert await worker.tick(runtime) == 0

    def mine(e: dict[str, Any]) -> bool:
        return e["data"].get("case_id") == cid

    events = await read_topic(kafka_bootstrap, "rollcall.legal.v1", mine, 4, wait_seconds=30)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for key, e, headers in events:
        assert key.decode() == cid
        assert headers["ce_type"].decode() == e["type"]
        by_type.setdefault(e["type"], []).append(e)
    assert sorted(by_type) == [
        "case.opened",
        "case.transitioned",
        "deadline.approaching",
        "penalty_notice.issued",
    ]
    assert all(len(v) == 1 for v in by_type.values())
    assert by_type["case.opened"][0]["data"]["trigger"] == "signal.penalty_threshold_met"
    issued = by_type["penalty_notice.issued"][0]["data"]
    assert (issued["notice_id"], issued["amount_if_paid_by_day_21"], issued["pay_reduced_by"]) == (
        notice["id"],
        80,
        "2025-03-17",
    )
    approaching = by_type["deadline.approaching"][0]["data"]
    assert (approaching["kind"], approaching["due_on"], approaching["school_days_left"]) == (
        "penalty_reduced_rate_ends",
        "2025-03-17",
        10,
    )
