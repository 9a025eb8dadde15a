"""End to end over real HTTP: the services under uvicorn, Kafka, and the demo loader as MIS.

A slice of the synthetic borough is pushed through the public API by ``python -m borough
load``. Then: every mark in ingest's register is on ``rollcall.marks.v1`` (read with Debian's
``kcat``, a consumer not written here, when installed — CI installs it — else aiokafka); the
rules service has consumed them, and its LA figures equal the figures computed straight from
the generator (``borough.figures``), an independent recomputation; signals are on
``rollcall.signals.v1``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import shutil
import sqlite3
import subprocess
import time
from typing import Any

import httpx
import orjson
import pytest

from borough.figures import compute
from tests.conftest import bearer
from tests.e2e.conftest import END, SCALE, SEED, START, Stack
from tests.integration.ingest_fixtures import read_topic

pytestmark = pytest.mark.e2e


def kcat(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kcat", "-b", bootstrap, "-t", topic, "-C", "-e", "-q", "-f", "%s\n"],
        capture_output=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


def events_on(bootstrap: str, topic: str, mine: Any, expect: int) -> list[dict[str, Any]]:
    if shutil.which("kcat"):
        deadline = time.monotonic() + 60
        while True:
            events = [e for e in kcat(bootstrap, topic) if mine(e)]
            if len(events) >= expect or time.monotonic() > deadline:
                return events
            time.sleep(2)
    found = asyncio.run(read_topic(bootstrap, topic, mine, expect, 60))
    return [e for _, e, _ in found]


def test_ingest_is_ready_and_every_mark_is_on_kafka(stack: Stack, e2e_kafka: str) -> None:
    kafka_bootstrap = e2e_kafka
    assert httpx.get(f"{stack.ingest}/readyz").json()["checks"] == {"database": "ok", "kafka": "ok"}
    with sqlite3.connect(stack.ingest_db) as conn:
        register = {
            (urn, upn, d, s): code
            for urn, upn, d, s, code in conn.execute("SELECT school_urn, upn, date, session, code FROM marks")
        }
        schools = {r[0] for r in conn.execute("SELECT urn FROM schools")}
    assert len(register) > 10_000
    assert len(schools) > 50

    events = events_on(kafka_bootstrap, "rollcall.marks.v1", lambda e: e["data"]["school_urn"] in schools,
                       len(register))  # fmt: skip
    latest: dict[tuple[str, str, str, str], str] = {}
    for e in events:  # each pupil's events are on one partition, in order
        d = e["data"]
        assert e["specversion"] == "1.0"
        assert e["type"] in ("mark.recorded", "mark.amended")
        latest[(d["school_urn"], d["upn"], d["date"], d["session"])] = d["code"]
    assert latest == register


def la_figures(stack: Stack, expect_possible: int) -> dict[str, Any]:
    headers = bearer("attendance:read")
    deadline = time.monotonic() + 180
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        query = {"from": START, "to": END, "group_by": "phase"}
        body = httpx.get(f"{stack.rules}/v1/la/attendance", params=query, headers=headers, timeout=60).json()
        if body["sessions"]["possible"] >= expect_possible:
            return body
        time.sleep(1)
    raise AssertionError(f"rules did not catch up: {body.get('sessions')} < {expect_possible}")


def test_rules_figures_equal_an_independent_recomputation(stack: Stack, e2e_kafka: str) -> None:
    kafka_bootstrap = e2e_kafka
    expected = compute(SEED, SCALE, dt.date.fromisoformat(START), dt.date.fromisoformat(END), signals=False)
    tally = expected.overall
    body = la_figures(stack, tally.possible)
    assert body["sessions"] == {
        "possible": tally.possible,
        "present": tally.present,
        "aea": tally.aea,
        "authorised": tally.authorised,
        "unauthorised": tally.unauthorised,
        "not_counted": tally.not_counted,
    }
    assert body["enrolments"] == tally.enrolments
    assert body["persistent_absence"] == tally.persistent
    assert body["severe_absence"] == tally.severe
    assert body["absence_rate"] == pytest.approx(tally.overall_rate, abs=1e-9)
    headline = body["headline"]
    assert headline["this_year"]["overall_absence"] == pytest.approx(tally.overall_rate, abs=1e-9)
    assert headline["national"]["overall_absence"] == 7.1
    assert headline["difference_to_national"]["overall_absence"] == pytest.approx(tally.overall_rate - 7.1)
    cohort = {g["group"]: g["count"] for g in body["severe_absence_cohort"]["groups"]}
    names = {"primary": "primary_age", "secondary": "secondary_age"}
    for group, count in cohort.items():
        assert count == expected.cohort[names.get(group, group)][1], group
    by_phase = {g["key"]: g for g in body["groups"]}
    for phase, t in expected.by_phase.items():
        assert by_phase[phase]["sessions"]["possible"] == t.possible
        assert by_phase[phase]["severe_absence"] == t.severe
    # The weekly trend (kept from daily sums as marks arrive) adds up to the same sessions.
    query = {"from": START, "to": END, "group_by": "week"}
    weeks = httpx.get(f"{stack.rules}/v1/la/attendance", params=query, headers=bearer("attendance:read"),
                      timeout=60).json()["groups"]  # fmt: skip
    for field in ("possible", "present", "authorised", "unauthorised", "not_counted"):
        assert sum(w["sessions"][field] for w in weeks) == getattr(tally, field), field

    # A pupil's attendance, and signals on Kafka, for the same register.
    with sqlite3.connect(stack.ingest_db) as conn:
        upn, urn = conn.execute("SELECT upn, school_urn FROM marks WHERE code = 'G' LIMIT 1").fetchone()
        n = conn.execute(
            "SELECT COUNT(*) FROM marks WHERE upn = ? AND school_urn = ?", (upn, urn)
        ).fetchone()[0]
    pupil = httpx.get(f"{stack.rules}/v1/pupils/{upn}/attendance", params={"from": START, "to": END,
                      "school": urn}, headers=bearer("attendance:read", [urn])).json()  # fmt: skip
    s = pupil["sessions"]
    assert s["possible"] + s["not_counted"] == n
    signals = events_on(kafka_bootstrap, "rollcall.signals.v1", lambda e: e["source"] == "/rollcall/rules", 1)
    assert {e["type"] for e in signals} >= {"signal.first_day_absence", "signal.band_changed"}


def test_logs_hold_no_names_dates_of_birth_or_postcodes(stack: Stack) -> None:
    """Children's data never goes into logs: grep the run's service logs for every pupil's and
    parent's name, date of birth and postcode that the loader sent (SPEC; issue 7 item 4)."""
    from borough.generate import Borough

    text = "\n".join(path.read_text() for path in stack.logs)
    assert '"route": "/v1/schools/{urn}/marks"' in text  # the logs are the real request logs
    names: set[str] = set()
    exact: set[str] = set()  # dates of birth, postcodes and UPNs, as written
    for school in Borough(SEED, SCALE).schools:
        for e in Borough(SEED, SCALE).enrolments(school):
            p = e.pupil
            names.update({p.given_name, p.family_name})
            names.update(word for parent in p.parents for word in parent.name.split())
            exact.update({p.date_of_birth.isoformat(), p.home_postcode, p.upn})
    exact.discard("")
    # Names are matched as whole words ("Ava" must not match "NotAvailableError").
    words = set(re.findall(r"[A-Za-z][A-Za-z'-]*", text))
    assert sorted(names & words) == []
    assert sorted(x for x in exact if x in text) == []
