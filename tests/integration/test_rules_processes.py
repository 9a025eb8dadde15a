"""Rules as two processes on one database (``ROLLCALL_WORKERS``, README "Scaling out"): one runs
the first-day fast path and the outbox relay, the other the bulk consumer and everything else with
its relay off. Real Kafka, SQLite and PostgreSQL, both apps built by the service's own factory.

What it shows: the fast process alone raises a looked-after pupil's first-day absence while the
bulk process is down, and stores nothing else (the register is the bulk consumer's); the bulk
process's signals are published by the other process's relay; when the bulk process comes back
and consumes the same mark, the signal is not raised a second time."""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.conftest import bearer
from tests.integration.ingest_fixtures import pupil, read_topic, service_client, setup_school
from tests.integration.test_rules import days, wait_for

pytestmark = pytest.mark.integration
TODAY = "2025-03-03"  # ingest_fixtures.NOW's date: a Monday in term
FAST = {"workers": "consume_first_day,consume_directory"}
BULK = {"workers": "-consume_first_day", "relay_enabled": False}


async def test_first_day_process_and_bulk_process(
    make_url: Callable[[str], Awaitable[str]], kafka_bootstrap: str
) -> None:
    ingest_url, rules_url = await make_url("ingest"), await make_url("rules")
    group = f"test-{uuid.uuid4().hex[:8]}"
    estab = random.randrange(5000, 6000)  # the signals topic is shared by the whole test run
    urn = str(130000 + estab)
    cla, regular = pupil(1, estab), pupil(2, estab)
    upns = {cla["upn"], regular["upn"]}
    school = bearer("marks:write", [urn])

    def rules(**settings: Any) -> Any:
        return service_client(
            "rules", rules_url, kafka_bootstrap, consumer_group=group, scheduler_seconds=3600, **settings
        )

    def signals_of(kind: str) -> Any:
        return lambda e: (
            e["type"] == f"signal.{kind}" and e["data"]["school_urn"] == urn and e["data"]["upn"] in upns
        )

    async with service_client("ingest", ingest_url, kafka_bootstrap) as ingest, rules(**FAST) as fast:
        await setup_school(ingest, urn, [cla, regular])
        r = await ingest.put(f"/v1/pupils/{cla['upn']}/care", json={"cin": False, "cp": False, "cla": True,
                             "early_help": False, "etac": False}, headers=bearer("care:write"))  # fmt: skip
        assert r.status_code == 200, r.text
        # Last week: the looked-after pupil present, the other pupil absent unauthorised (O) every
        # session, which meets the penalty notice threshold (10 sessions).
        week = [(d.isoformat(), s) for d in days("2025-02-24", 5) for s in ("AM", "PM")]
        marks = [{"upn": cla["upn"], "date": d, "session": s, "code": "/"} for d, s in week]
        marks += [{"upn": regular["upn"], "date": d, "session": s, "code": "O"} for d, s in week]

        async with rules(**BULK) as bulk:
            r = await ingest.post(f"/v1/schools/{urn}/marks", json={"marks": marks}, headers=school)
            assert r.status_code == 200, r.text
            await wait_for(bulk, cla["upn"], 10, urn)
            # Raised by the bulk process (relay off), published by the fast process's relay.
            threshold = await read_topic(
                kafka_bootstrap, "rollcall.signals.v1", signals_of("penalty_threshold_met"), 1
            )
            assert [e["data"]["upn"] for _, e, _ in threshold] == [regular["upn"]]

        # The bulk process is down: this morning's absence is raised by the fast process alone.
        absent = {"upn": cla["upn"], "date": TODAY, "session": "AM", "code": "N"}
        r = await ingest.post(f"/v1/schools/{urn}/marks", json={"marks": [absent]}, headers=school)
        assert r.status_code == 200, r.text
        first_day = await read_topic(
            kafka_bootstrap, "rollcall.signals.v1", signals_of("first_day_absence"), 1
        )
        assert [(e["data"]["upn"], e["data"]["started_on"]) for _, e, _ in first_day] == [(cla["upn"], TODAY)]
        # ... and the register is not the fast process's to write: still last week's 10 sessions.
        body = await attendance(fast, cla["upn"], urn)
        assert body["sessions"]["possible"] == 10

        async with rules(**BULK) as bulk:
            await wait_for(bulk, cla["upn"], 11, urn)  # the bulk process has consumed this morning
            # Once: the bulk consumer found the fast path's episode stored.
            kind = signals_of("first_day_absence")
            again = await read_topic(kafka_bootstrap, "rollcall.signals.v1", kind, 2, wait_seconds=5)
            assert len(again) == 1


async def attendance(client: httpx.AsyncClient, upn: str, urn: str) -> dict[str, Any]:
    r = await client.get(
        f"/v1/pupils/{upn}/attendance",
        params={"from": "2024-09-01"},
        headers=bearer("attendance:read", [urn]),
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body
