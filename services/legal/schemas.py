"""Request bodies of the legal API (CONTRACT.md "legal"); unknown fields are refused (422)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, model_validator

from services.legal.workflow import RecordKind, State
from shared.fields import Body, IsoDate, strip, strip_not_blank

Urn = Annotated[str, StringConstraints(pattern=r"^[0-9]{6,7}$")]
# Lengths apply to the value as sent (as documented), then it is stripped (shared/fields.py).
Id = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(strip_not_blank)]
Name = Annotated[str, StringConstraints(max_length=200), AfterValidator(strip)]
Officer = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(strip_not_blank)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=4000), AfterValidator(strip_not_blank)]


class ParentIn(Body):
    id: Id
    name: Name


class CaseIn(Body):
    upn: Annotated[str, StringConstraints(min_length=1, max_length=20)]
    school_urn: Urn
    parents: Annotated[list[ParentIn], Field(min_length=1, max_length=6)]
    lead_officer: Officer
    opened_on: IsoDate | None = None  # default today; earlier to record a case already running


class CasePatch(Body):
    lead_officer: Officer | None = None
    parents: Annotated[list[ParentIn], Field(max_length=6)] | None = None


class TransitionIn(Body):
    to: State
    reason: Reason
    effective_on: IsoDate | None = None
    improvement_school_weeks: Annotated[int, Field(ge=1, le=52)] | None = None  # Notice to Improve only


class PenaltyNoticeIn(Body):
    parent_id: Id
    issued_on: IsoDate
    offence_id: Id | None = None  # default: the latest offence this parent has no notice for


class PaymentIn(Body):
    paid_on: IsoDate
    amount: Annotated[Decimal, Field(gt=0, max_digits=8, decimal_places=2)]


class WithdrawalIn(Body):
    reason: Reason
    withdrawn_on: IsoDate | None = None


class RecordIn(Body):
    kind: RecordKind
    text: Reason
    on: IsoDate | None = None
    years: Annotated[int, Field(ge=1, le=10)] | None = None  # eso_extended only


class OffenceIn(Body):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    start: IsoDate = Field(alias="from")
    end: IsoDate = Field(alias="to")
    reason: Reason

    @model_validator(mode="after")
    def _ordered(self) -> OffenceIn:
        if self.end < self.start:
            raise ValueError("`to` is before `from`")
        return self
