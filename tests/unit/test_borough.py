"""The synthetic borough: determinism, shape, valid registers, calibration, and the loader's protocol."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from datetime import date
from functools import cache
from typing import Any

import httpx
import jwt
import orjson
import pytest

from borough.figures import Figures, compute
from borough.generate import Borough, SchoolYear
from borough.load import LoadError, load
from borough.pupils import birth_window
from borough.registers import CATEGORY, CODES
from borough.terms import BANK_HOLIDAY
from shared.codes import lookup
from shared.csa import is_compulsory_school_age
from shared.settings import DEV_JWT_SECRET
from shared.upn import validate_upn


@cache
def years(seed: int, scale: float) -> tuple[SchoolYear, ...]:
    return tuple(Borough(seed, scale).school_years())


@cache
def figures(seed: int, scale: float) -> Figures:
    return compute(seed, scale)


def _digest(seed: int, scale: float) -> str:
    h = hashlib.sha256()
    for year in years(seed, scale):
        h.update(orjson.dumps([e.body() for e in year.enrolments]))
        for mark in year.marks():
            h.update(f"{mark.upn}{mark.date}{mark.session}{mark.code}".encode())
    return h.hexdigest()


def test_same_seed_same_borough_and_another_seed_another() -> None:
    first = _digest(2024, 0.02)
    assert _digest(2024, 0.02) == first
    # A fresh Borough (nothing cached) gives the same again.
    again = hashlib.sha256()
    for year in Borough(2024, 0.02).school_years():
        again.update(orjson.dumps([e.body() for e in year.enrolments]))
        for mark in year.marks():
            again.update(f"{mark.upn}{mark.date}{mark.session}{mark.code}".encode())
    assert again.hexdigest() == first
    assert _digest(2025, 0.02) != first


def test_a_date_range_is_a_slice_of_the_year() -> None:
    year = years(2024, 0.02)[80]
    whole = list(year.marks())
    part = list(year.marks(date(2024, 11, 4), date(2024, 12, 20)))
    assert part
    assert set(part) <= set(whole)
    assert all(m.date <= date(2024, 12, 20) for m in part)
    # The register itself does not depend on the order schools are generated in.
    alone = Borough(2024, 0.02).school_year(year.school)
    assert [r.codes for r in alone.registers.registers] == [r.codes for r in year.registers.registers]


def test_roster_shape() -> None:
    schools = Borough(2024).schools
    phases = Counter(s.phase for s in schools)
    assert phases == {"primary": 75, "secondary": 18, "special": 7, "alternative_provision": 2}
    types = Counter(s.type for s in schools)
    assert types["independent"] == 1
    assert types["academy"] > 10
    assert types["maintained"] > 40
    assert types["free"] >= 1
    assert len({s.urn for s in schools}) == len(schools)
    assert all(len(s.urn) == 6 and s.urn.isdigit() for s in schools)
    assert len({s.name for s in schools}) == len(schools)
    assert {s.locality for s in schools} == {"north", "central", "south"}
    assert len({s.ward for s in schools}) == 22
    assert all(s.la_code == "343" for s in schools)
    assert all(
        s.postcode.split()[0] in {"PR8", "PR9", "L37", "L23", "L22", "L31", "L20", "L21", "L30"}
        for s in schools
    )


def test_every_school_meets_380_sessions() -> None:
    borough = Borough(2024)
    for school in borough.schools:
        calendar = borough.calendar(school)
        assert calendar.sessions() == 380, school.name
        assert all(d.weekday() < 5 for d, _, _ in calendar.school_days())
        assert any(c.date == BANK_HOLIDAY and c.session == "ALL" for c in calendar.closed)
        assert (
            sum(1 if c.session == "ALL" else 0.5 for c in calendar.closed if c.reason.startswith("INSET"))
            == 5
        )
        body = calendar.body()
        assert body["terms"][0] == {"start": "2024-09-02", "end": "2024-10-25"}  # type: ignore[index]


def test_pupils_and_prevalences_at_scale() -> None:
    enrolments = [e for y in years(2024, 0.1) for e in y.enrolments]
    pupils = {e.pupil.upn: e.pupil for e in enrolments}
    n = len(pupils)
    assert 3_500 < n < 4_100  # 37,980 x 0.1
    for upn in pupils:
        assert validate_upn(upn) == upn
    share = {
        "fsm": sum(p.fsm for p in pupils.values()) / n,
        "support": sum(p.sen == "support" for p in pupils.values()) / n,
        "ehcp": sum(p.sen == "ehcp" for p in pupils.values()) / n,
        "early_help": sum(p.care.early_help for p in pupils.values()) / n,
        "cin": sum(p.care.cin for p in pupils.values()) / n,
        "cp": sum(p.care.cp for p in pupils.values()) / n,
        "cla": sum(p.care.cla for p in pupils.values()) / n,
    }
    assert 0.22 < share["fsm"] < 0.28
    assert 0.11 < share["support"] < 0.15
    assert 0.03 < share["ehcp"] < 0.05
    assert 0.012 < share["early_help"] < 0.03
    assert 0.008 < share["cin"] < 0.023
    assert 0.001 < share["cp"] < 0.01
    assert 0.003 < share["cla"] < 0.014
    assert any(p.home_la_code != "343" for p in pupils.values())
    assert any(p.care.part_time_timetable for p in pupils.values())
    duals = [e for e in enrolments if e.dual is not None]
    assert duals
    assert len(duals) == 2 * len({e.pupil.upn for e in duals})
    for e in enrolments:
        p = e.pupil
        lo, hi = birth_window(p.year)
        assert lo <= p.date_of_birth <= hi
        assert e.leaving_date is None or e.leaving_date >= e.admission_date
        assert 1 <= len(p.parents) <= 2
        assert (p.ehcp_la_code is not None) == (p.sen == "ehcp")
    assert any(e.admission_date > date(2024, 9, 10) for e in enrolments)  # mid-year arrivals
    assert any(e.leaving_date and e.leaving_date < date(2025, 6, 1) for e in enrolments)  # leavers


def _first_marks(year: SchoolYear) -> Iterator[tuple[int, Any]]:
    registers = year.registers
    for day in range(len(registers.timetable.days)):
        yield day, registers.day_marks(day)


def test_every_mark_is_a_valid_mark_for_a_school_session() -> None:
    for year in years(2024, 0.05):
        sessions = {
            (d, s)
            for d, am, pm in year.calendar.school_days()
            for s, open_ in (("AM", am), ("PM", pm))
            if open_
        }
        roll = {e.pupil.upn: e for e in year.enrolments}
        seen: set[tuple[str, date, str]] = set()
        for _, marks in _first_marks(year):
            for m in marks:
                key = (m.upn, m.date, m.session)
                assert key not in seen
                seen.add(key)
                assert (m.date, m.session) in sessions
                e = roll[m.upn]
                assert e.admission_date <= m.date
                assert e.leaving_date is None or m.date <= e.leaving_date
                lookup(m.code, m.date)  # raises for a code not in force on that date
                if m.code == "X":
                    assert not is_compulsory_school_age(e.pupil.date_of_birth, m.date)
                if m.code == "D":
                    assert e.dual is not None
        # Every session of every pupil on roll has a mark.
        for e in year.enrolments:
            on_roll = [
                s
                for s in sessions
                if e.admission_date <= s[0] and (e.leaving_date is None or s[0] <= e.leaving_date)
            ]
            assert all((e.pupil.upn, d, s) in seen for d, s in on_roll)
        # Corrections amend an earlier provisional N of the same school, with a different code.
        for slot_marks in (year.registers.corrections(d) for d in range(len(year.registers.timetable.days))):
            for m in slot_marks:
                assert (m.upn, m.date, m.session) in seen
                assert m.code != "N"


def test_absence_clusters_realistically() -> None:
    monday_friday = Counter[str]()
    midweek = Counter[str]()
    for year in years(2024, 0.05):
        for m in year.marks():
            (monday_friday if m.date.weekday() in (0, 4) else midweek)[m.code] += 1
    # Unexplained absence is heavier on Mondays and Fridays (2 of 5 days) than midweek.
    assert monday_friday["O"] / 2 > 1.15 * midweek["O"] / 3
    fig = figures(2024, 0.1)
    for code in ("/", "\\", "L", "I", "M", "G", "O", "N", "U", "E", "D", "X", "V", "C2"):
        assert fig.codes[code] > 0, code
    assert fig.amendments > 0


def test_figures_land_near_the_strategy_at_scale() -> None:
    fig = figures(2024, 0.1)
    o = fig.overall
    assert o.overall_rate == pytest.approx(7.8, abs=0.8)
    assert o.authorised_rate == pytest.approx(5.2, abs=0.7)
    assert o.unauthorised_rate == pytest.approx(2.6, abs=0.6)
    assert o.persistent_rate == pytest.approx(22.6, abs=2.5)
    assert 1.0 < o.severe_rate < 2.8
    sa = o.severe
    assert 0.45 < fig.cohort["fsm"][1] / sa < 0.8
    assert 0.2 < fig.cohort["sen_support"][1] / sa < 0.55
    assert fig.cohort["secondary_age"][1] / sa > 0.75
    assert fig.by_phase["primary"].overall_rate < fig.by_phase["secondary"].overall_rate
    assert fig.by_locality["south"].overall_rate > fig.by_locality["central"].overall_rate
    for signal in (
        "penalty_threshold_met_pupils",
        "attendance_return_due",
        "sickness_return_due_pupils",
        "first_day_absence_sessions",
        "unresolved_n_days",
    ):
        assert fig.signals[signal] > 0, signal


def test_figures_count_sessions_like_the_dfe() -> None:
    fig = figures(2024, 0.1)
    possible = 0
    absent = 0
    for code, n in fig.codes.items():
        category = CATEGORY[CODES.index(code)]
        if category in ("present", "aea", "authorised", "unauthorised"):
            possible += n
        if category in ("authorised", "unauthorised"):
            absent += n
    assert possible == fig.overall.possible
    assert 100 * absent / possible == pytest.approx(fig.overall.overall_rate)


class FakeIngest:
    """Just enough of the ingest API to check what the loader sends and in what order."""

    def __init__(self, reject_code: str | None = None) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.register: dict[tuple[str, str, str, str], str] = {}
        self.rostered: set[str] = set()
        self.reject_code = reject_code

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["content-type"] == "application/json"
        token = request.headers["authorization"].removeprefix("Bearer ")
        claims = jwt.decode(token, DEV_JWT_SECRET, algorithms=["HS256"])
        body = orjson.loads(request.content)
        path = request.url.path
        self.calls.append((request.method, path, claims))
        parts = path.split("/")
        if path.endswith("/marks"):
            urn = parts[3]
            assert claims["schools"] == [urn]
            assert "marks:write" in claims["scope"]
            assert len(body["marks"]) <= 500
            counts = {"accepted": 0, "amended": 0, "unchanged": 0}
            rejected: list[dict[str, Any]] = []
            for i, m in enumerate(body["marks"]):
                assert m["upn"] in self.rostered
                if m["code"] == self.reject_code:
                    rejected.append({"index": i, "upn": m["upn"], "code": m["code"], "detail": "no"})
                    continue
                key = (urn, m["upn"], m["date"], m["session"])
                old = self.register.get(key)
                counts["accepted" if old is None else "unchanged" if old == m["code"] else "amended"] += 1
                self.register[key] = m["code"]
            return httpx.Response(200, json={**counts, "rejected": rejected})
        if path.endswith("/pupils"):
            assert claims["schools"] == [parts[3]]
            self.rostered.update(p["upn"] for p in body["pupils"])
            return httpx.Response(200, json={"created": len(body["pupils"]), "updated": 0, "unchanged": 0})
        if path.endswith("/care"):
            assert "care:write" in claims["scope"]
            assert parts[3] in self.rostered
        return httpx.Response(200, json={"status": "ok"})


async def test_loader_sends_registry_then_marks_in_order() -> None:
    fake = FakeIngest()
    start, end = date(2024, 9, 2), date(2024, 9, 20)
    stats = await load(
        "http://ingest.test",
        seed=2024,
        scale=0.01,
        start=start,
        end=end,
        batch=500,
        concurrency=3,
        progress=False,
        transport=httpx.MockTransport(fake),
    )
    borough = Borough(2024, 0.01)
    expected = sum(1 for _, m in borough.marks(start, end))
    assert stats.marks == expected == stats.accepted + stats.amended + stats.unchanged
    assert stats.amended > 0
    assert stats.unchanged == 0
    assert stats.schools == len(borough.schools)
    first_marks = next(i for i, c in enumerate(fake.calls) if c[1].endswith("/marks"))
    assert all(not c[1].endswith("/marks") for c in fake.calls[:first_marks])
    assert all(c[1].endswith("/marks") for c in fake.calls[first_marks:])
    assert fake.calls[0][1].startswith("/v1/schools/")
    assert "admin" in fake.calls[0][2]["scope"]
    # The register ends up exactly as the generator's final codes (provisional Ns corrected in range).
    for year in years(2024, 0.01):
        for m in year.marks(start, end):
            assert (year.school.urn, m.upn, m.date.isoformat(), m.session) in fake.register
    # Loading again changes nothing but the replayed provisional Ns.
    again = await load(
        "http://ingest.test",
        scale=0.01,
        start=start,
        end=end,
        batch=500,
        progress=False,
        transport=httpx.MockTransport(fake),
    )
    assert again.accepted == 0
    assert again.unchanged > 0.95 * again.marks


async def test_loader_fails_loudly_on_a_rejected_mark() -> None:
    with pytest.raises(LoadError) as caught:
        await load(
            "http://ingest.test",
            scale=0.01,
            start=date(2024, 9, 2),
            end=date(2024, 9, 13),
            batch=500,
            progress=False,
            transport=httpx.MockTransport(FakeIngest(reject_code="I")),
        )
    assert caught.value.problem["rejected"][0]["code"] == "I"


async def test_loader_fails_loudly_on_an_error_response() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            422,
            json={"type": "about:blank", "title": "Request is not valid", "status": 422, "detail": "bad"},
            headers={"content-type": "application/problem+json"},
        )

    with pytest.raises(LoadError) as caught:
        await load("http://ingest.test", scale=0.01, progress=False, transport=httpx.MockTransport(refuse))
    assert caught.value.status == 422
    assert caught.value.problem["detail"] == "bad"


async def test_loader_waits_out_a_rate_limit_and_goes_on() -> None:
    """A 429 is retried after its Retry-After (the services' per-client rate limit, shared/limits.py)."""
    fake = FakeIngest()
    limited: list[str] = []

    def every_fifth_limited(request: httpx.Request) -> httpx.Response:
        if len(fake.calls) % 5 == 4 and len(limited) < len(fake.calls) // 5 + 1:
            limited.append(request.url.path)
            return httpx.Response(429, json={"status": 429}, headers={"Retry-After": "0"})
        return fake(request)

    await load(
        "http://ingest.test",
        scale=0.01,
        start=date(2024, 9, 2),
        end=date(2024, 9, 6),
        batch=500,
        progress=False,
        transport=httpx.MockTransport(every_fifth_limited),
    )
    assert limited
    assert fake.register  # the marks went in despite the refusals
