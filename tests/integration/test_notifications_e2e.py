"""Marks to webhooks: ingest → Kafka → rules → Kafka → notifications → real HTTP receivers.

Two looked-after children with an allocated social worker are marked ``N`` at AM registration
today (every service's clock reads the same morning). The social worker's, the Virtual School's
and the school attendance officer's receivers each get one correctly signed CloudEvent per child.
The social worker acknowledges the first child's alert: it is never escalated; nobody
acknowledges the second's: it is escalated to SAST duty once, after the (shortened) delay.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.conftest import bearer
from tests.integration.ingest_fixtures import pupil, service_client, setup_school
from tests.integration.notifications_fixtures import (
    ADMIN,
    TODAY,
    Clock,
    alerts_of,
    headers_for,
    new_secret,
    notifications_client,
    receiver,
    verify_webhook,
    wait_alerts,
    wait_registry,
)

pytestmark = pytest.mark.integration
ESCALATION_SECONDS = 3


async def test_marked_n_today_pages_three_people_and_escalates_only_the_unacknowledged(
    tmp_path: Any, kafka_bootstrap: str
) -> None:
    clock = Clock()  # TODAY, 08:30 in London: before the AM register deadline, so no register_missing
    urn = "160123"
    acked, ignored = pupil(1, 6123), pupil(2, 6123)
    db = {name: f"sqlite+aiosqlite:///{tmp_path / name}.db" for name in ("ingest", "rules", "notifications")}
    group = f"test-{uuid.uuid4().hex[:8]}"
    with receiver() as rx:
        async with (
            service_client("ingest", db["ingest"], kafka_bootstrap, clock=clock) as ingest,
            service_client("rules", db["rules"], kafka_bootstrap, clock=clock, consumer_group=group,
                           scheduler_seconds=3600),
            notifications_client(db["notifications"], kafka_bootstrap, clock=clock,
                                 escalation_seconds=ESCALATION_SECONDS) as notifications,
        ):  # fmt: skip
            # The borough: a school, two looked-after children (registry and care through ingest).
            await setup_school(ingest, urn, [acked, ignored])
            care = {"cin": False, "cp": False, "cla": True, "early_help": False, "etac": False}
            for p in (acked, ignored):
                r = await ingest.put(f"/v1/pupils/{p['upn']}/care", json=care, headers=bearer("care:write"))
                assert r.status_code == 200, r.text

            # Who is told: allocated social worker, the Virtual School, the school's officer, SAST duty.
            secrets: dict[str, str] = {}
            for rid, role in (("sw-1", "social_worker"), ("vs", "virtual_school"),
                              ("ao-1", "attendance_officer"), ("duty", "sast_duty")):  # fmt: skip
                r = await notifications.put(
                    f"/v1/recipients/{rid}", json={"name": rid, "role": role}, headers=ADMIN
                )
                assert r.status_code == 200, r.text
                secrets[rid] = new_secret()
                sub = {"url": rx.url(rid), "secret": secrets[rid], "recipient": rid}
                assert (
                    await notifications.post("/v1/subscriptions", json=sub, headers=ADMIN)
                ).status_code == 201
            r = await notifications.put(f"/v1/allocations/schools/{urn}", json={"attendance_officer": "ao-1"},
                                        headers=ADMIN)  # fmt: skip
            assert r.status_code == 200
            for p in (acked, ignored):
                allocation = {"social_worker": "sw-1"}
                path = f"/v1/allocations/pupils/{p['upn']}"
                r = await notifications.put(path, json=allocation, headers=bearer("care:write"))
                assert r.status_code == 200
                await wait_registry(notifications, p["upn"])

            # AM registration, today: both children are N.
            marks = [
                {"upn": p["upn"], "date": TODAY.isoformat(), "session": "AM", "code": "N"}
                for p in (acked, ignored)
            ]
            r = await ingest.post(
                f"/v1/schools/{urn}/marks", json={"marks": marks}, headers=bearer("marks:write", [urn])
            )
            assert r.json()["accepted"] == 2, r.text

            # The social worker acknowledges the first child's alert as soon as it arrives.
            (first,) = await rx.wait("sw-1", acked["upn"], seconds=60)
            event = verify_webhook(secrets["sw-1"], first)
            sw = headers_for("sw-1", "alerts:read alerts:write")
            r = await notifications.post(
                f"/v1/alerts/{event['id']}/ack", json={"by": "Sam Worker"}, headers=sw
            )
            assert r.status_code == 200, r.text

            for p in (acked, ignored):
                for rid in ("sw-1", "vs", "ao-1"):
                    (got,) = await rx.wait(rid, p["upn"], seconds=60)
                    body = verify_webhook(secrets[rid], got)
                    assert body["type"] == "uk.rollcall.alert.first_day_absence"
                    assert body["data"]["pupil"] == {"upn": p["upn"], "school_urn": urn}
                    assert body["data"]["recipient"] == rid

            # Past the delay: the unacknowledged child's alerts go to SAST duty once; the other's never.
            (escalation,) = await rx.wait("duty", ignored["upn"], seconds=ESCALATION_SECONDS + 20)
            assert len(verify_webhook(secrets["duty"], escalation)["data"]["escalated_from"]) == 3
            await asyncio.sleep(ESCALATION_SECONDS + 1)
            assert len(rx.at("duty", ignored["upn"])) == 1
            assert rx.at("duty", acked["upn"]) == []
            statuses = sorted(a["status"] for a in await alerts_of(notifications, acked["upn"]))
            assert statuses == ["acknowledged", "delivered", "delivered"]
            items = await wait_alerts(notifications, ignored["upn"], lambda xs: len(xs) == 4)
            assert sorted(a["status"] for a in items) == ["delivered", "escalated", "escalated", "escalated"]
            for rid in ("sw-1", "vs", "ao-1", "duty"):
                assert len(rx.at(rid, acked["upn"])) + len(rx.at(rid, ignored["upn"])) == (
                    1 if rid == "duty" else 2
                )
