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
import sys
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


def test_pupil_reads_are_audited_and_a_subject_access_export_gathers_all_four(stack: Stack) -> None:
    """Over real HTTP: a pupil's reads leave audit rows with their purpose in each service's own
    database, and ``python -m shared.sar`` (an admin token minted with the development secret,
    as a dev stack accepts) prints one document with all four services' exports of the pupil."""
    with sqlite3.connect(stack.dbs["rules"]) as conn:
        (upn,) = conn.execute("SELECT upn FROM signals ORDER BY seq LIMIT 1").fetchone()
    purpose = {"Rollcall-Purpose": "e2e: attendance review"}
    r = httpx.get(f"{stack.rules}/v1/pupils/{upn}/attendance", headers=bearer("attendance:read") | purpose)
    assert r.status_code == 200
    assert httpx.get(
        f"{stack.rules}/v1/signals", params={"upn": upn}, headers=bearer("attendance:read")
    ).json()["items"]
    r = httpx.get(
        f"{stack.urls['notifications']}/v1/alerts", params={"upn": upn}, headers=bearer("alerts:read")
    )
    assert r.status_code == 200
    r = httpx.get(f"{stack.urls['legal']}/v1/cases", params={"upn": upn}, headers=bearer("legal:read"))
    assert r.status_code == 200
    with sqlite3.connect(stack.dbs["rules"]) as conn:
        rows = conn.execute(
            "SELECT a.route, a.purpose, a.status FROM audit_log a JOIN audit_subjects s ON s.audit_id = a.id "
            "WHERE s.upn = ? ORDER BY a.id",
            (upn,),
        ).fetchall()
    assert ("/v1/pupils/{upn}/attendance", "e2e: attendance review", 200) in rows
    assert ("/v1/signals", "unspecified", 200) in rows

    args = [f"--{name}={url}" for name, url in stack.urls.items()]
    out = subprocess.run(
        [sys.executable, "-m", "shared.sar", upn, "--purpose", "e2e subject access", *args],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    document = orjson.loads(out.stdout)
    exports = {name: body["tables"] for name, body in document["services"].items()}
    assert set(exports) == {"ingest", "rules", "legal", "notifications"}
    with sqlite3.connect(stack.ingest_db) as conn:
        (marks,) = conn.execute("SELECT COUNT(*) FROM marks WHERE upn = ?", (upn,)).fetchone()
    assert len(exports["ingest"]["marks"]) == marks
    assert exports["ingest"]["pupils"][0]["upn"] == upn
    assert exports["rules"]["signals"]
    assert {s["upn"] for s in exports["rules"]["signals"]} == {upn}
    for name, url in stack.urls.items():  # each export is on its service's audit log
        r = httpx.get(
            f"{url}/v1/audit", params={"upn": upn, "sub": "subject-access"}, headers=bearer("admin")
        )
        assert [(e["route"], e["purpose"]) for e in r.json()["items"]] == [
            ("/v1/pupils/{upn}/export", "e2e subject access")
        ], name


def test_logs_hold_no_names_dates_of_birth_or_postcodes(stack: Stack) -> None:
    """Children's data never goes into logs: grep the run's service logs for every pupil's and
    parent's name, date of birth and postcode that the loader sent, and every UPN, after the whole
    e2e run: loading, the dashboard (pupil pages), pupil-level API reads, audit-log queries and
    subject-access exports, and the purge job (SPEC; issue 7 item 4). Audit rows hold UPNs and
    are never logged."""
    from borough.generate import Borough

    text = "\n".join(path.read_text() for path in stack.logs)
    assert '"route": "/v1/schools/{urn}/marks"' in text  # the logs are the real request logs
    assert '"route": "/v1/pupils/{upn}/export"' in text  # the reads of pupil data, audited, are in the run
    assert (
        '"event": "purged"' in text
    )  # the purge job ran (ROLLCALL_PURGE_INTERVAL_SECONDS) and logged counts
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
