"""Routing signals to recipients (SPEC §8 cross-border, §9 who is notified): the pure function."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notifications.routing import (
    ALERT_SIGNALS,
    ROUTES,
    Directory,
    Pupil,
    Reason,
    Recipient,
    Route,
    escalation_targets,
    route_signal,
)

OURS = "343"
DIRECTORY = Directory.of(
    OURS,
    [
        Recipient("vs-sefton", "virtual_school"),
        Recipient("vs-liverpool", "virtual_school", "341"),
        Recipient("duty-sefton", "sast_duty", OURS),
        Recipient("duty-knowsley", "sast_duty", "340"),
        Recipient("send-sefton", "ehcp_la"),
        Recipient("send-wirral", "ehcp_la", "344"),
        Recipient("csc-liverpool", "social_worker", "341"),
        Recipient("eh-liverpool", "early_help", "341"),
        Recipient("sast-team-knowsley", "attendance_officer", "340"),
        Recipient("sw-person", "social_worker"),  # a person: never found by LA
    ],
)
CLA = Pupil(home_la=OURS, cla=True)


def route(signal: str, pupil: Pupil, *, school_la: str | None = OURS, sw: str | None = None,
          eh: str | None = None, officer: str | None = "ao-1") -> list[Route]:  # fmt: skip
    return route_signal(signal, pupil, school_la, sw, eh, officer, DIRECTORY)


@pytest.mark.parametrize("signal", ["first_day_absence", "register_missing"])
def test_first_day_goes_to_social_worker_virtual_school_and_attendance_officer(signal: str) -> None:
    assert route(signal, CLA, sw="sw-1") == [
        Route("sw-1", Reason.SOCIAL_WORKER),
        Route("vs-sefton", Reason.VIRTUAL_SCHOOL),
        Route("ao-1", Reason.ATTENDANCE_OFFICER),
    ]


def test_virtual_school_only_for_a_child_looked_after() -> None:
    assert route("first_day_absence", Pupil(home_la=OURS, cin=True), sw="sw-1") == [
        Route("sw-1", Reason.SOCIAL_WORKER),
        Route("ao-1", Reason.ATTENDANCE_OFFICER),
    ]


def test_cross_border_virtual_school_is_the_home_las() -> None:
    routes = route("first_day_absence", Pupil(home_la="341", cla=True), sw="sw-1")
    assert Route("vs-liverpool", Reason.VIRTUAL_SCHOOL) in routes
    # An LA with no Virtual School configured here falls back to the LA running Rollcall's.
    assert Route("vs-sefton", Reason.VIRTUAL_SCHOOL) in route(
        "first_day_absence", Pupil(home_la="999", cla=True)
    )


def test_unallocated_social_worker_goes_to_the_home_las_social_care_team() -> None:
    assert route("first_day_absence", Pupil(home_la="341", cp=True))[0] == Route(
        "csc-liverpool", Reason.SOCIAL_CARE_TEAM
    )
    # Our own LA has no team inbox here and a person is never picked by LA: nobody for that column.
    assert route("first_day_absence", Pupil(home_la=OURS, cp=True)) == [
        Route("ao-1", Reason.ATTENDANCE_OFFICER)
    ]


def test_etac_only_pupil_has_no_social_worker_route() -> None:
    assert route("first_day_absence", Pupil(home_la="341")) == [Route("ao-1", Reason.ATTENDANCE_OFFICER)]


def test_school_without_officer_goes_to_the_school_las_team_then_duty() -> None:
    assert route("penalty_threshold_met", Pupil(), school_la="340", officer=None) == [
        Route("sast-team-knowsley", Reason.ATTENDANCE_TEAM)
    ]
    assert route("penalty_threshold_met", Pupil(), school_la=OURS, officer=None) == [
        Route("duty-sefton", Reason.SAST_DUTY)
    ]


def test_severe_absence_adds_early_help_and_the_plan_maintaining_la() -> None:
    pupil = Pupil(home_la="341", ehcp=True, ehcp_la="344", early_help=True, cin=True)
    assert route("severe_absence_started", pupil, sw="sw-1", eh="eh-1") == [
        Route("ao-1", Reason.ATTENDANCE_OFFICER),
        Route("sw-1", Reason.SOCIAL_WORKER),
        Route("eh-1", Reason.EARLY_HELP_LEAD),
        Route("send-wirral", Reason.EHCP_LA),
    ]
    # No allocated lead: the Home LA's early-help team; no ehcp_la_code: the home LA maintains it.
    pupil = Pupil(home_la="341", ehcp=True, early_help=True)
    assert route("severe_absence_started", pupil) == [
        Route("ao-1", Reason.ATTENDANCE_OFFICER),
        Route("eh-liverpool", Reason.EARLY_HELP_TEAM),
        Route("send-sefton", Reason.EHCP_LA),  # Liverpool has no EHCP inbox here: ours forwards
    ]


def test_severe_absence_without_social_care_or_plan_is_the_officer_only() -> None:
    assert route("severe_absence_started", Pupil(home_la=OURS)) == [Route("ao-1", Reason.ATTENDANCE_OFFICER)]


@pytest.mark.parametrize(
    "signal",
    ["penalty_threshold_met", "attendance_return_due", "sickness_return_due", "unresolved_n",
     "part_time_timetable_overdue"],
)  # fmt: skip
def test_officer_only_signals(signal: str) -> None:
    assert route(signal, CLA, sw="sw-1", eh="eh-1") == [Route("ao-1", Reason.ATTENDANCE_OFFICER)]


@pytest.mark.parametrize(
    "signal",
    ["band_changed", "persistent_absence_started", "severe_absence_ended", "first_day_absence_ended", "x"],
)
def test_unrouted_signals_alert_nobody(signal: str) -> None:
    assert route(signal, CLA, sw="sw-1") == []


def test_a_recipient_reached_twice_gets_one_route() -> None:
    routes = route(
        "severe_absence_started", Pupil(cin=True, early_help=True), sw="p-1", eh="p-1", officer="p-1"
    )
    assert routes == [Route("p-1", Reason.ATTENDANCE_OFFICER)]


def test_escalation_goes_to_the_school_las_duty_inbox() -> None:
    assert escalation_targets("340", DIRECTORY) == ["duty-knowsley"]
    assert escalation_targets(OURS, DIRECTORY) == ["duty-sefton"]
    assert escalation_targets("999", DIRECTORY) == ["duty-sefton"]
    assert escalation_targets(None, DIRECTORY) == ["duty-sefton"]
    assert escalation_targets(OURS, Directory.of(OURS, [])) == []


def test_alert_signals_are_the_routed_ones_and_deadlines() -> None:
    assert set(ROUTES) < ALERT_SIGNALS
    assert "deadline_approaching" in ALERT_SIGNALS


@given(
    signal=st.sampled_from(sorted(ROUTES)),
    flags=st.tuples(*[st.booleans()] * 5),
    home=st.sampled_from([None, OURS, "341", "344", "999"]),
    sw=st.sampled_from([None, "sw-1", "p-1"]),
    eh=st.sampled_from([None, "eh-1", "p-1"]),
    officer=st.sampled_from([None, "ao-1", "p-1"]),
)
def test_routes_are_unique_and_include_the_officer_column(
    signal: str,
    flags: tuple[bool, ...],
    home: str | None,
    sw: str | None,
    eh: str | None,
    officer: str | None,
) -> None:
    cin, cp, cla, early_help, ehcp = flags
    pupil = Pupil(home_la=home, cin=cin, cp=cp, cla=cla, early_help=early_help, ehcp=ehcp)
    routes = route(signal, pupil, sw=sw, eh=eh, officer=officer)
    ids = [r.recipient for r in routes]
    assert len(ids) == len(set(ids))
    # Every routed signal reaches the school's officer (or the LA's fallback for a school without one).
    assert (officer or "duty-sefton") in ids
