"""The local authority's attendance policy: every *(policy)* number in SPEC.md, as data.

One versioned TOML file per LA (Sefton's is bundled as shared/policies/sefton.toml), parsed
with tomllib and validated into a frozen `Policy`, so an LA changes policy without touching
code and every decision can record the policy version it was made under (ARCHITECTURE.md,
principle 2). Validation refuses a file that could not be what the LA meant — band boundaries
out of order, a Notice to Improve default outside its allowed range, an authorised code in
the penalty list — and names the offending field.
"""

from __future__ import annotations

import tomllib
from datetime import date, time
from importlib.resources import files
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.calendar import Session
from shared.codes import CODES_2024_FROM, Category, code_set

BandName = Literal["excellent", "at_risk", "persistent", "persistent_high", "severe"]
Owner = Literal["school", "la"]

Percent = Annotated[float, Field(ge=0, le=100)]


class PolicyError(ValueError):
    """A policy file that cannot be read or is invalid; `errors` holds (field path, detail)."""

    def __init__(self, source: str, errors: list[tuple[str, str]]) -> None:
        super().__init__(
            f"invalid policy {source}: " + "; ".join(f"{path}: {detail}" for path, detail in errors)
        )
        self.source = source
        self.errors = errors


class _Model(BaseModel):
    # extra="forbid" so a misspelt key in the file is an error, not a silently ignored default.
    model_config = ConfigDict(frozen=True, extra="forbid")


class BandAction(_Model):
    """One action of the graduated response and who owns it (school or LA)."""

    text: str = Field(min_length=1)
    owner: Owner


class BandPolicy(_Model):
    """What a band means (PA, SA or nothing) and the actions it calls for (SPEC §4)."""

    meaning: str = ""
    actions: tuple[BandAction, ...] = Field(min_length=1)

    @property
    def owners(self) -> frozenset[Owner]:
        return frozenset(a.owner for a in self.actions)


class Bands(_Model):
    """Graduated response bands by attendance rate (Sefton flowchart, SPEC §4).

    excellent ≥ excellent_min; at_risk > at_risk_above and < excellent_min; persistent
    > persistent_above and ≤ at_risk_above; persistent_high > persistent_high_above and
    ≤ persistent_above; severe ≤ persistent_high_above. Boundaries apply to the unrounded rate.
    """

    excellent_min: Percent
    at_risk_above: Percent
    persistent_above: Percent
    persistent_high_above: Percent
    excellent: BandPolicy
    at_risk: BandPolicy
    persistent: BandPolicy
    persistent_high: BandPolicy
    severe: BandPolicy

    @model_validator(mode="after")
    def _boundaries_descend(self) -> Self:
        names = ("excellent_min", "at_risk_above", "persistent_above", "persistent_high_above")
        for higher, lower in pairwise(names):
            if not getattr(self, higher) > getattr(self, lower):
                raise ValueError(
                    f"band boundaries must strictly descend: {lower} ({getattr(self, lower)}) "
                    f"must be below {higher} ({getattr(self, higher)})"
                )
        return self

    def band_for(self, attendance_rate: float) -> BandName:
        """The band for an unrounded attendance rate (percent), per the boundaries above."""
        if attendance_rate >= self.excellent_min:
            return "excellent"
        if attendance_rate > self.at_risk_above:
            return "at_risk"
        if attendance_rate > self.persistent_above:
            return "persistent"
        if attendance_rate > self.persistent_high_above:
            return "persistent_high"
        return "severe"

    def actions_for(self, band: BandName) -> BandPolicy:
        policy: BandPolicy = getattr(self, band)
        return policy


class RegisterDeadlines(_Model):
    """Local time by which a session's register must hold a mark (SPEC §5.7)."""

    am: time
    pm: time

    @model_validator(mode="after")
    def _am_before_pm(self) -> Self:
        if not self.am < self.pm:
            raise ValueError(f"pm ({self.pm}) must be later than am ({self.am})")
        return self

    def for_session(self, session: Session | str) -> time:
        return self.am if session == Session.AM else self.pm


class PenaltyThreshold(_Model):
    """Sessions of the listed codes within a rolling number of school weeks (SPEC §5.3;
    national penalty notice framework, August 2024: 10 sessions in 10 school weeks)."""

    sessions: PositiveInt
    school_weeks: PositiveInt
    codes: tuple[str, ...] = Field(min_length=1)

    @field_validator("codes")
    @classmethod
    def _unauthorised_only(cls, codes: tuple[str, ...]) -> tuple[str, ...]:
        table = code_set(CODES_2024_FROM)
        for code in codes:
            found = table.get(code)
            if found is None or found.category is not Category.UNAUTHORISED:
                what = "not a 2024 attendance code" if found is None else f"in category {found.category}"
                raise ValueError(f"{code!r} is {what}; only unauthorised codes (G, N, O, U) may count")
        if len(set(codes)) != len(codes):
            raise ValueError("codes are listed more than once")
        return codes


class NoticeToImprove(_Model):
    """Improvement period of a Notice to Improve, in school weeks (national framework: 3–6)."""

    default_school_weeks: PositiveInt
    min_school_weeks: PositiveInt
    max_school_weeks: PositiveInt

    @model_validator(mode="after")
    def _default_in_range(self) -> Self:
        if not self.min_school_weeks <= self.default_school_weeks <= self.max_school_weeks:
            raise ValueError(
                f"default_school_weeks ({self.default_school_weeks}) must lie within "
                f"min_school_weeks–max_school_weeks ({self.min_school_weeks}–{self.max_school_weeks})"
            )
        return self


class FirstPenaltyNotice(_Model):
    """£80 if paid within 21 days, £160 within 28 (national penalty notice framework, Aug 2024)."""

    reduced_amount_gbp: PositiveInt
    reduced_within_days: PositiveInt
    amount_gbp: PositiveInt
    within_days: PositiveInt

    @model_validator(mode="after")
    def _reduced_is_earlier_and_lower(self) -> Self:
        if not self.reduced_within_days < self.within_days:
            raise ValueError("reduced_within_days must be shorter than within_days")
        if not self.reduced_amount_gbp <= self.amount_gbp:
            raise ValueError("reduced_amount_gbp must not exceed amount_gbp")
        return self


class SecondPenaltyNotice(_Model):
    """A second notice to the same parent for the same child: £160 flat within 28 days."""

    amount_gbp: PositiveInt
    within_days: PositiveInt


class PenaltyNotice(_Model):
    """Penalty notice amounts and limits (national penalty notice framework, August 2024)."""

    max_per_parent_per_child: PositiveInt
    rolling_years: PositiveInt
    counting_from: date
    first_notice: FirstPenaltyNotice
    second_notice: SecondPenaltyNotice


class EducationSupervisionOrder(_Model):
    """ESO length and extensions (Children Act 1989 s36 and Sch 3 Part III)."""

    duration_years: PositiveInt
    extension_window_months: PositiveInt
    extension_max_years: PositiveInt


class Prosecution(_Model):
    """Time limit for laying an information (Magistrates' Courts Act 1980 s127: 6 months) and
    the date the LA counts it from (SPEC §7: last absence in the offence period by default)."""

    laying_limit_months: PositiveInt
    clock_start: Literal["last_absence", "first_absence", "offence_period_end"]


class Policy(_Model):
    """A local authority's attendance policy (SPEC.md, every *(policy)* setting)."""

    version: str = Field(min_length=1)
    la_code: str = Field(pattern=r"^\d{3}$")
    la_name: str = Field(min_length=1)
    timezone: str

    band_changed_min_possible_sessions: PositiveInt
    unresolved_n_school_days: PositiveInt
    attendance_return_continuous_school_days: PositiveInt
    sickness_return_school_days: PositiveInt
    first_day_alerts_current_day_only: bool
    part_time_timetable_default_max_school_weeks: PositiveInt
    escalation_minutes: PositiveInt
    attendance_contract_weeks: PositiveInt
    deadline_lead_school_days: PositiveInt

    register_deadlines: RegisterDeadlines
    penalty_threshold: PenaltyThreshold
    notice_to_improve: NoticeToImprove
    penalty_notice: PenaltyNotice
    education_supervision_order: EducationSupervisionOrder
    prosecution: Prosecution
    bands: Bands

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{name!r} is not an IANA time zone such as 'Europe/London'") from None
        return name

    @property
    def zone(self) -> ZoneInfo:
        """The LA's time zone, for turning instants into school dates and register deadlines."""
        return ZoneInfo(self.timezone)


BUNDLED_POLICY = "sefton.toml"


def load_policy(path: Path | None = None) -> Policy:
    """Read and validate a policy file; `None` reads the bundled Sefton policy.

    Raises `PolicyError` naming each offending field (as a dotted path, e.g.
    "bands.at_risk_above") when the file is not valid TOML or not a valid policy.
    """
    if path is None:
        source = f"shared/policies/{BUNDLED_POLICY}"
        text = files("shared.policies").joinpath(BUNDLED_POLICY).read_text(encoding="utf-8")
    else:
        source = str(path)
        text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(source, [("(file)", f"not valid TOML: {exc}")]) from None
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        errors = [
            (".".join(str(p) for p in e["loc"]) or "(file)", e["msg"].removeprefix("Value error, "))
            for e in exc.errors()
        ]
        raise PolicyError(source, errors) from None
