"""The notifications service against real Kafka, a real database, real webhook receivers (HTTP on
loopback) and a real SMTP server: routing, signing, de-duplication, suppression of backfills,
acknowledgement, escalation, retries and dead letters, email, and the API's problems.

Signals and registry events are published straight to Kafka here, shaped as rules and ingest
publish them; test_notifications_e2e.py drives the same flow from marks through ingest and rules.
Every assertion is about this test's own pupils: other tests' events share the topics.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from typing import Any

import httpx
import orjson
import pytest

from shared.events import ALERT_EVENT_TYPES, AlertEventData, Topic, new_event
from tests.integration.ingest_fixtures import read_topic
from tests.integration.notifications_fixtures import (
    ADMIN,
    TODAY,
    Clock,
    Receiver,
    alerts_of,
    headers_for,
    new_secret,
    new_upn,
    notifications_client,
    publish,
    publish_registry,
    receiver,
    registry_events,
    signal_event,
    smtp_server,
    verify_webhook,
    wait_alerts,
    wait_registry,
)

pytestmark = pytest.mark.integration
_urns = itertools.count(140001)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'notifications.db'}"
    make = request.getfixturevalue("postgres_databases")
    url: str = await make()
    return url


@pytest.fixture
def sqlite_db(tmp_path: Any) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'notifications.db'}"


async def put(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], headers: dict[str, str] = ADMIN
) -> Any:
    r = await client.put(path, json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def subscribe(client: httpx.AsyncClient, url: str, recipient: str | None, **extra: Any) -> str:
    secret = new_secret()
    body = {"url": url, "secret": secret, "recipient": recipient, **extra}
    r = await client.post("/v1/subscriptions", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert "secret" not in r.json()
    return secret


async def directory(client: httpx.AsyncClient, rx: Receiver, urn: str) -> dict[str, str]:
    """A social worker, the Virtual School, the school's officer and SAST duty, each subscribed at
    its own path of ``rx``; returns each recipient's webhook secret."""
    await put(client, "/v1/recipients/sw-1", {"name": "Sam Worker", "role": "social_worker"})
    await put(client, "/v1/recipients/vs", {"name": "Sefton Virtual School", "role": "virtual_school"})
    await put(client, "/v1/recipients/ao-1", {"name": "Ann Officer", "role": "attendance_officer"})
    await put(client, "/v1/recipients/duty", {"name": "SAST duty", "role": "sast_duty", "la_code": "343"})
    await put(client, f"/v1/allocations/schools/{urn}", {"attendance_officer": "ao-1"})
    return {rid: await subscribe(client, rx.url(rid), rid) for rid in ("sw-1", "vs", "ao-1", "duty")}


async def test_first_day_absence_is_routed_signed_delivered_and_escalated_once(
    db_url: str, kafka_bootstrap: str
) -> None:
    clock = Clock()
    urn = str(next(_urns))
    absent, acked, corrected = new_upn(), new_upn(), new_upn()
    with receiver() as rx:
        async with notifications_client(
            db_url, kafka_bootstrap, clock=clock, escalation_seconds=60
        ) as client:
            secrets = await directory(client, rx, urn)
            for upn in (absent, acked, corrected):
                await put(client, f"/v1/allocations/pupils/{upn}", {"social_worker": "sw-1"},
                          headers=headers_for("care-system", "care:write"))  # fmt: skip
            await publish_registry(kafka_bootstrap, [e for u in (absent, acked, corrected)
                                                     for e in registry_events(u, urn, cla=True)])  # fmt: skip
            for upn in (absent, acked, corrected):  # keyed by UPN: each on a partition of its own
                await wait_registry(client, upn)
            first = signal_event("first_day_absence", absent, urn)
            await publish(kafka_bootstrap, Topic.SIGNALS, [first])

            # Each of the three recipients' receivers gets one correctly signed CloudEvent.
            events = {}
            for rid in ("sw-1", "vs", "ao-1"):
                (got,) = await rx.wait(rid, absent)
                events[rid] = verify_webhook(secrets[rid], got)
                assert events[rid]["data"]["recipient"] == rid
                assert events[rid]["data"]["pupil"] == {"upn": absent, "school_urn": urn}
                assert events[rid]["data"]["evidence_url"].endswith(
                    f"/v1/pupils/{absent}/attendance?school={urn}"
                )
            assert len({e["id"] for e in events.values()}) == 3
            items = await wait_alerts(client, absent, lambda xs: all(x["status"] == "delivered" for x in xs))
            assert sorted((x["recipient"], x["reason"]) for x in items) == [
                ("ao-1", "attendance_officer"), ("sw-1", "social_worker"), ("vs", "virtual_school")
            ]  # fmt: skip
            assert all(x["signal"] == "first_day_absence" and x["escalate_at"] for x in items)

            # The same signal again (republished, or re-raised for the same episode) raises nothing;
            # a backfill of an earlier day is routed but suppressed: nobody is paged.
            again = signal_event("first_day_absence", absent, urn)
            backfill = signal_event("first_day_absence", absent, urn, day=TODAY - dt.timedelta(days=7))
            await publish(kafka_bootstrap, Topic.SIGNALS, [again, backfill])
            items = await wait_alerts(client, absent, lambda xs: len(xs) >= 6)
            await asyncio.sleep(1)
            items = await alerts_of(client, absent)
            assert sorted(x["status"] for x in items) == ["delivered"] * 3 + ["suppressed"] * 3
            assert all(x["escalate_at"] is None for x in items if x["status"] == "suppressed")

            # A second pupil's alert is acknowledged by the social worker (their own token);
            # a third's mark is corrected by the school before anyone acts (rules withdraws it).
            two = [
                signal_event("first_day_absence", acked, urn),
                signal_event("first_day_absence", corrected, urn),
            ]
            await publish(kafka_bootstrap, Topic.SIGNALS, two)
            await rx.wait("sw-1", acked)
            await rx.wait("sw-1", corrected)
            sw = headers_for("sw-1", "alerts:read alerts:write")
            mine = (await client.get("/v1/alerts", params={"upn": acked}, headers=sw)).json()["items"]
            assert [x["recipient"] for x in mine] == ["sw-1"]  # a recipient sees only its own alerts
            other = next(x for x in await alerts_of(client, acked) if x["recipient"] == "vs")
            assert (
                await client.post(f"/v1/alerts/{other['id']}/ack", json={"by": "Sam"}, headers=sw)
            ).status_code == 404
            r = await client.post(f"/v1/alerts/{mine[0]['id']}/ack", json={"by": "Sam Worker"}, headers=sw)
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "acknowledged"
            assert r.json()["acknowledged_by"] == "Sam Worker"
            again_ack = await client.post(
                f"/v1/alerts/{mine[0]['id']}/ack", json={"by": "Someone else"}, headers=sw
            )
            assert again_ack.json()["acknowledged_by"] == "Sam Worker"
            withdrawn = signal_event("first_day_absence_ended", corrected, urn, withdrawn=True)
            await publish(kafka_bootstrap, Topic.SIGNALS, [withdrawn])
            await wait_alerts(client, corrected, lambda xs: all(x["status"] == "withdrawn" for x in xs))

            # Past the escalation delay: only the unacknowledged episode goes to SAST duty, once.
            clock.advance(61)
            (escalation,) = await rx.wait("duty", absent)
            duty_event = verify_webhook(secrets["duty"], escalation)
            assert sorted(duty_event["data"]["escalated_from"]) == sorted(e["id"] for e in events.values())
            clock.advance(600)
            await asyncio.sleep(1.5)
            assert len(rx.at("duty", absent)) == 1
            assert rx.at("duty", acked) == rx.at("duty", corrected) == []
            items = await alerts_of(client, absent)
            by_status = sorted(x["status"] for x in items if x["status"] != "suppressed")
            assert by_status == ["delivered", "escalated", "escalated", "escalated"]
            duty_alert = next(x for x in items if x["recipient"] == "duty")
            assert duty_alert["reason"] == "escalation"
            assert duty_alert["escalate_at"] is None
            acked_items = await alerts_of(client, acked)
            assert sorted(x["status"] for x in acked_items) == ["acknowledged", "delivered", "delivered"]

            # rollcall.alerts.v1 tells the same story, keyed by UPN.
            def about(upn: str) -> Any:
                return lambda e: e["data"]["pupil"]["upn"] == upn

            published = await read_topic(kafka_bootstrap, Topic.ALERTS, about(absent), 10)
            assert all(key.decode() == absent for key, _, _ in published)
            for _, e, _ in published:
                AlertEventData.model_validate(e["data"])
                assert e["type"] in ALERT_EVENT_TYPES
                assert e["subject"] == e["data"]["alert_id"]
            types = sorted(e["type"] for _, e, _ in published)
            assert types.count("alert.raised") == 4
            assert types.count("alert.escalated") == 3
            assert types.count("alert.delivered") == 4
            published = await read_topic(kafka_bootstrap, Topic.ALERTS, about(acked), 7)
            assert sorted(e["type"] for _, e, _ in published).count("alert.acknowledged") == 1


async def test_legal_deadline_goes_to_the_case_lead_officer(sqlite_db: str, kafka_bootstrap: str) -> None:
    upn, urn = new_upn(), str(next(_urns))
    with receiver() as rx:
        async with notifications_client(sqlite_db, kafka_bootstrap, clock=Clock()) as client:
            await put(client, "/v1/recipients/lo-7", {"name": "Lee Officer", "role": "attendance_officer"})
            secret = await subscribe(client, rx.url("lo"), "lo-7", types=["deadline_approaching"])
            data = {"case_id": "case-42", "upn": upn, "school_urn": urn, "lead_officer": "lo-7",
                    "kind": "notice_to_improve_end", "due_on": "2025-03-17"}  # fmt: skip
            event = new_event("deadline.approaching", "/rollcall/legal", data, subject="case-42")
            await publish(kafka_bootstrap, Topic.LEGAL, [("case-42", event), ("case-42", event)])
            (got,) = await rx.wait("lo", upn)
            body = verify_webhook(secret, got)
            assert body["type"] == "uk.rollcall.alert.deadline_approaching"
            assert body["data"]["deadline"] == {"case_id": "case-42", "kind": "notice_to_improve_end",
                                                "due_on": "2025-03-17"}  # fmt: skip
            assert body["data"]["evidence_url"].endswith("/v1/cases/case-42")
            (alert,) = await alerts_of(client, upn)
            assert alert["reason"] == "lead_officer"
            assert alert["escalate_at"] is None


async def test_failing_receiver_gets_the_alert_once_after_it_recovers(
    sqlite_db: str, kafka_bootstrap: str
) -> None:
    upn, urn = new_upn(), str(next(_urns))
    with receiver() as rx:
        rx.status["/sw"] = 500
        rx.status["/gone"] = 503
        settings = {"retry_base_seconds": 0.2, "retry_max_seconds": 0.5, "dead_letter_seconds": 3}
        async with notifications_client(sqlite_db, kafka_bootstrap, clock=Clock(), **settings) as client:
            await put(client, "/v1/recipients/ao-1", {"name": "Ann Officer", "role": "attendance_officer"})
            await put(client, f"/v1/allocations/schools/{urn}", {"attendance_officer": "ao-1"})
            secret = await subscribe(client, rx.url("sw"), "ao-1")
            await subscribe(client, rx.url("gone"), "ao-1")
            await publish(kafka_bootstrap, Topic.SIGNALS, [signal_event("penalty_threshold_met", upn, urn)])
            # The receiver fails for a while: retried with backoff, nothing delivered yet.
            for _ in range(100):
                if len(rx.at("sw", upn, ok_only=False)) >= 3:
                    break
                await asyncio.sleep(0.1)
            assert len(rx.at("sw", upn, ok_only=False)) >= 3
            assert rx.at("sw", upn) == []
            (alert,) = await alerts_of(client, upn)
            assert alert["status"] == "raised"
            rx.status["/sw"] = 200
            (ok,) = await rx.wait("sw", upn)
            verify_webhook(secret, ok)
            # Every attempt carried the same id and body; only the one 2xx counts, and it is the last.
            tries = rx.at("sw", upn, ok_only=False)
            assert {r.headers["webhook-id"] for r in tries} == {alert["id"]}
            assert {r.body for r in tries} == {ok.body}
            await asyncio.sleep(1)
            assert len(rx.at("sw", upn)) == 1
            assert (await alerts_of(client, upn))[0]["status"] == "delivered"

            # The other receiver never recovers: dead-lettered after the (shortened) 24 hours...
            for _ in range(100):
                r = await client.get(
                    "/v1/deliveries", params={"status": "dead", "alert": alert["id"]}, headers=ADMIN
                )
                if r.json()["items"]:
                    break
                await asyncio.sleep(0.1)
            (dead,) = r.json()["items"]
            assert dead["last_error"] == "HTTP 503"
            assert dead["attempts"] >= 2
            before = len(rx.at("gone", upn, ok_only=False))
            await asyncio.sleep(1)
            assert len(rx.at("gone", upn, ok_only=False)) == before  # no more attempts
            # ...and delivered once an operator re-queues it after the receiver is fixed.
            rx.status["/gone"] = 204
            r = await client.post(f"/v1/deliveries/{dead['id']}/retry", headers=ADMIN)
            assert r.status_code == 200
            assert r.json()["status"] == "pending"
            await rx.wait("gone", upn)
            r = await client.post(f"/v1/deliveries/{dead['id']}/retry", headers=ADMIN)
            assert r.status_code == 409
            assert r.headers["content-type"] == "application/problem+json"


async def test_email_reaches_a_real_smtp_server(sqlite_db: str, kafka_bootstrap: str) -> None:
    upn, urn = new_upn(), str(next(_urns))
    with smtp_server() as (mailbox, port):
        settings = {"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_from": "alerts@rollcall.test"}
        async with notifications_client(sqlite_db, kafka_bootstrap, clock=Clock(), **settings) as client:
            await put(client, "/v1/recipients/sw-9", {"name": "Sue", "role": "social_worker",
                                                      "email": "sue@social-care.test"})  # fmt: skip
            await put(client, "/v1/recipients/ao-9", {"name": "Al", "role": "attendance_officer"})
            await put(client, f"/v1/allocations/schools/{urn}", {"attendance_officer": "ao-9"})
            await put(client, f"/v1/allocations/pupils/{upn}", {"social_worker": "sw-9"})
            await publish_registry(kafka_bootstrap, registry_events(upn, urn, cp=True))
            await wait_registry(client, upn)
            await publish(kafka_bootstrap, Topic.SIGNALS, [signal_event("first_day_absence", upn, urn)])
            items = await wait_alerts(client, upn, lambda xs: any(x["status"] == "delivered" for x in xs))
            sue = next(x for x in items if x["recipient"] == "sw-9")
            assert sue["status"] == "delivered"
            mails = [m for m in mailbox.messages if upn.encode() in m[2]]
            assert len(mails) == 1
            sender, to, content = mails[0]
            assert sender == "alerts@rollcall.test"
            assert to == ["sue@social-care.test"]
            assert f"Message-ID: <{sue['id']}@alerts.rollcall>".encode() in content
            assert b"first_day_absence" in content
            assert urn.encode() in content
            r = await client.get("/v1/deliveries", params={"alert": sue["id"]}, headers=ADMIN)
            (delivery,) = r.json()["items"]
            assert delivery["channel"] == "email"
            assert delivery["status"] == "delivered"


async def test_api_answers_problems(sqlite_db: str, kafka_bootstrap: str) -> None:
    async with notifications_client(sqlite_db, kafka_bootstrap, clock=Clock()) as client:
        r = await client.get("/v1/alerts")
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        body = {"name": "X", "role": "social_worker"}
        r = await client.put("/v1/recipients/x", json=body, headers=headers_for("u", "alerts:write"))
        assert r.status_code == 403
        r = await client.put("/v1/recipients/x", json={"name": "X", "role": "wizard"}, headers=ADMIN)
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "role"
        await put(client, "/v1/recipients/sw-2", {"name": "S", "role": "social_worker"})
        await put(client, "/v1/recipients/eh-2", {"name": "E", "role": "early_help", "email": "e@x.test"})
        wrong = {"social_worker": "eh-2", "early_help": "nobody"}
        r = await client.put("/v1/allocations/pupils/A343200018001", json=wrong, headers=ADMIN)
        assert r.status_code == 422
        assert {(e["field"], e["code"]) for e in r.json()["errors"]} == {
            ("social_worker", "wrong_role"), ("early_help", "unknown_recipient")
        }  # fmt: skip
        await put(client, "/v1/allocations/pupils/A343200018001", {"social_worker": "sw-2"})
        mine = await client.get("/v1/recipients/sw-2/pupils", headers=headers_for("sw-2", "alerts:read"))
        assert mine.json() == {"recipient": "sw-2", "role": "social_worker", "pupils": ["A343200018001"]}
        theirs = await client.get("/v1/recipients/sw-2/pupils", headers=headers_for("eh-2", "alerts:read"))
        assert theirs.status_code == 404
        r = await client.put("/v1/allocations/pupils/not-a-upn", json={}, headers=ADMIN)
        assert r.status_code == 422
        r = await client.put(
            "/v1/allocations/pupils/A343200018001",
            content=b"{",
            headers={**ADMIN, "content-type": "application/json"},
        )
        assert r.status_code == 400

        sw = headers_for("sw-2", "alerts:read alerts:write")
        good = {"url": "http://127.0.0.1:9/hook", "secret": new_secret()}
        r = await client.post("/v1/subscriptions", json=good, headers=sw)
        assert r.status_code == 403  # every alert needs admin
        r = await client.post("/v1/subscriptions", json={**good, "recipient": "eh-2"}, headers=sw)
        assert r.status_code == 403  # another recipient's alerts
        r = await client.post("/v1/subscriptions", json={**good, "recipient": "ghost"}, headers=ADMIN)
        assert r.status_code == 422
        assert r.json()["errors"][0]["code"] == "unknown_recipient"
        for bad in ({**good, "secret": "whsec_c2hvcnQ="}, {**good, "secret": "hunter2"}, {**good, "url": "file:///x"},
                    {**good, "types": ["no_such_signal"]}):  # fmt: skip
            r = await client.post("/v1/subscriptions", json={**bad, "recipient": "sw-2"}, headers=sw)
            assert r.status_code == 422, bad
        r = await client.post("/v1/subscriptions", json={**good, "recipient": "sw-2"}, headers=sw)
        assert r.status_code == 201
        sub = r.json()
        listed = (await client.get("/v1/subscriptions", headers=sw)).json()["items"]
        assert [s["id"] for s in listed] == [sub["id"]]
        assert "secret" not in listed[0]
        assert (await client.get("/v1/subscriptions", headers=headers_for("eh-2", "alerts:read"))).json()[
            "items"
        ] == []
        r = await client.delete(f"/v1/subscriptions/{sub['id']}", headers=headers_for("eh-2", "alerts:write"))
        assert r.status_code == 404
        assert (await client.delete(f"/v1/subscriptions/{sub['id']}", headers=sw)).status_code == 204

        r = await client.get("/v1/alerts", params={"recipient": "eh-2"}, headers=sw)
        assert r.status_code == 403
        r = await client.get("/v1/alerts", params={"status": "lost"}, headers=sw)
        assert r.status_code == 422
        r = await client.get("/v1/alerts/nope", headers=sw)
        assert r.status_code == 404
        r = await client.post("/v1/alerts/nope/ack", json={}, headers=sw)
        assert r.status_code == 422
        r = await client.post(
            "/v1/alerts/nope/ack", json={"by": "x"}, headers=headers_for("sw-2", "alerts:read")
        )
        assert r.status_code == 403
        r = await client.get("/v1/deliveries", headers=sw)
        assert r.status_code == 403
        r = await client.post("/v1/deliveries/999/retry", headers=ADMIN)
        assert r.status_code == 404
        r = await client.post(f"/v1/deliveries/{2**70}/retry", headers=ADMIN)
        assert r.status_code == 422
        r = await client.get("/v1/alerts", params={"cursor": str(2**70)}, headers=ADMIN)
        assert r.status_code == 422
        spec = (await client.get("/openapi.json")).json()
        assert "/v1/alerts/{id}/ack" in spec["paths"]
        assert "/v1/alerts/stream" in spec["paths"]
        assert orjson.loads((await client.get("/healthz")).content)["status"] == "ok"
