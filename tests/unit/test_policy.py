"""The LA policy file: Sefton's defaults load, and a broken file is refused naming the field."""

from __future__ import annotations

import re
import tomllib
from datetime import date, time
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared.calendar import Session
from shared.policy import Policy, PolicyError, load_policy


def test_sefton_defaults() -> None:
    p = load_policy()
    assert p.version
    assert p.la_code == "343"
    assert p.la_name == "Sefton"
    assert p.timezone == "Europe/London"
    assert p.zone.key == "Europe/London"

    assert p.band_changed_min_possible_sessions == 10
    assert p.unresolved_n_school_days == 5
    assert p.attendance_return_continuous_school_days == 10
    assert p.sickness_return_school_days == 15
    assert p.first_day_alerts_current_day_only is True
    assert p.part_time_timetable_default_max_school_weeks == 6
    assert p.escalation_minutes == 30
    assert p.attendance_contract_weeks == 12
    assert p.deadline_lead_school_days == 10

    assert p.register_deadlines.am == time(10, 0)
    assert p.register_deadlines.pm == time(14, 30)
    assert p.register_deadlines.for_session(Session.AM) == time(10, 0)
    assert p.register_deadlines.for_session("PM") == time(14, 30)

    assert p.penalty_threshold.sessions == 10
    assert p.penalty_threshold.school_weeks == 10
    assert sorted(p.penalty_threshold.codes) == ["G", "N", "O", "U"]

    assert p.notice_to_improve.default_school_weeks == 4
    assert p.notice_to_improve.min_school_weeks == 3
    assert p.notice_to_improve.max_school_weeks == 6

    pn = p.penalty_notice
    assert (pn.first_notice.reduced_amount_gbp, pn.first_notice.reduced_within_days) == (80, 21)
    assert (pn.first_notice.amount_gbp, pn.first_notice.within_days) == (160, 28)
    assert (pn.second_notice.amount_gbp, pn.second_notice.within_days) == (160, 28)
    assert pn.max_per_parent_per_child == 2
    assert pn.rolling_years == 3
    assert pn.counting_from == date(2024, 8, 19)

    eso = p.education_supervision_order
    assert (eso.duration_years, eso.extension_window_months, eso.extension_max_years) == (1, 3, 3)
    assert p.prosecution.laying_limit_months == 6
    assert p.prosecution.clock_start == "last_absence"


def test_sefton_bands() -> None:
    b = load_policy().bands
    assert (b.excellent_min, b.at_risk_above, b.persistent_above, b.persistent_high_above) == (
        96,
        90,
        85,
        50,
    )
    assert b.persistent.meaning == "PA"
    assert b.persistent_high.meaning == "PA"
    assert b.severe.meaning == "SA"
    assert b.excellent.owners == {"school"}
    assert b.at_risk.owners == {"school"}
    assert b.persistent.owners == {"school", "la"}
    assert any("Targeting Support Meeting" in a.text and a.owner == "la" for a in b.persistent.actions)
    assert any("prosecution" in a.text.lower() and a.owner == "la" for a in b.severe.actions)
    assert b.actions_for("at_risk") is b.at_risk


@pytest.mark.parametrize(
    ("rate", "band"),
    [
        (100.0, "excellent"),
        (96.0, "excellent"),
        (95.99999, "at_risk"),
        (90.00001, "at_risk"),
        (90.0, "persistent"),
        (85.00001, "persistent"),
        (85.0, "persistent_high"),
        (50.00001, "persistent_high"),
        (50.0, "severe"),
        (0.0, "severe"),
    ],
)
def test_band_boundaries_are_exact_on_the_unrounded_rate(rate: float, band: str) -> None:
    assert load_policy().bands.band_for(rate) == band


def test_policy_is_frozen() -> None:
    p = load_policy()
    with pytest.raises(ValidationError):
        p.escalation_minutes = 5  # type: ignore[misc]


def test_explicit_path_loads_the_same_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(_bundled_text(), encoding="utf-8")
    assert load_policy(path) == load_policy()


# --- broken files --------------------------------------------------------------------------


def _bundled_text() -> str:
    return files("shared.policies").joinpath("sefton.toml").read_text(encoding="utf-8")


def _broken(tmp_path: Path, pattern: str, replacement: str) -> Path:
    text, n = re.subn(pattern, replacement, _bundled_text(), count=1, flags=re.MULTILINE)
    assert n == 1, pattern
    path = tmp_path / "broken.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("pattern", "replacement", "field", "says"),
    [
        (r"^at_risk_above = .*$", "at_risk_above = 97.0", "bands", "at_risk_above"),
        (r"^persistent_above = .*$", "persistent_above = 90.0", "bands", "persistent_above"),
        (r"^persistent_high_above = .*$", "persistent_high_above = 85.5", "bands", "persistent_high_above"),
        (r"^excellent_min = .*$", "excellent_min = 101", "bands.excellent_min", "100"),
        (
            r"^default_school_weeks = .*$",
            "default_school_weeks = 7",
            "notice_to_improve",
            "default_school_weeks",
        ),
        (r"^min_school_weeks = .*$", "min_school_weeks = 5", "notice_to_improve", "default_school_weeks"),
        (r"^codes = .*$", 'codes = ["G", "N", "O", "U", "I"]', "penalty_threshold.codes", "'I'"),
        (r"^codes = .*$", 'codes = ["G", "H"]', "penalty_threshold.codes", "'H'"),
        (r"^codes = .*$", 'codes = ["G", "G"]', "penalty_threshold.codes", "more than once"),
        (r"^codes = .*$", "codes = []", "penalty_threshold.codes", "at least 1"),
        (r"^sessions = .*$", "sessions = 0", "penalty_threshold.sessions", "greater than 0"),
        (r"^la_code = .*$", 'la_code = "34"', "la_code", "pattern"),
        (r"^timezone = .*$", 'timezone = "Europe/Southport"', "timezone", "IANA"),
        (r"^am = .*$", 'am = "15:00"', "register_deadlines", "pm"),
        (r"^pm = .*$", 'pm = "half two"', "register_deadlines.pm", "time"),
        (r"^clock_start = .*$", 'clock_start = "whenever"', "prosecution.clock_start", "last_absence"),
        (
            r"^reduced_within_days = .*$",
            "reduced_within_days = 30",
            "penalty_notice.first_notice",
            "within_days",
        ),
        (r"^escalation_minutes = .*$", "escalation_minute = 30", "escalation_minute", "not permitted"),
        (r"^version = .*$", 'version = ""', "version", "at least 1"),
        (r"^counting_from = .*$", 'counting_from = "last summer"', "penalty_notice.counting_from", "date"),
        (
            r'^  \{ text = "Letter home".*$',
            '  { text = "Letter home", owner = "parent" },',
            "bands.at_risk.actions.2.owner",
            "'school'",
        ),
    ],
)
def test_broken_policy_is_refused_naming_the_field(
    tmp_path: Path, pattern: str, replacement: str, field: str, says: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(_broken(tmp_path, pattern, replacement))
    fields = [path for path, _ in caught.value.errors]
    assert field in fields, caught.value.errors
    detail = dict(caught.value.errors)[field]
    assert says in detail
    assert field in str(caught.value)
    assert "broken.toml" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_a_missing_section_is_named(tmp_path: Path) -> None:
    path = _broken(tmp_path, r"^\[prosecution\]\n.*\n.*$", "")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert ("prosecution", "Field required") in caught.value.errors


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "two.toml"
    text = _bundled_text().replace("escalation_minutes = 30", "escalation_minutes = -1")
    text = text.replace('la_code = "343"', 'la_code = "ABC"')
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert {p for p, _ in caught.value.errors} == {"escalation_minutes", "la_code"}


def test_invalid_toml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("version = \n", encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.errors[0][0] == "(file)"
    assert "TOML" in caught.value.errors[0][1]


def test_policy_validates_a_dict_too() -> None:
    data: dict[str, Any] = tomllib.loads(_bundled_text())
    data["notice_to_improve"]["default_school_weeks"] = 2
    with pytest.raises(ValidationError, match="default_school_weeks"):
        Policy.model_validate(data)
