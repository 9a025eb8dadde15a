"""Request and response bodies of the ingest API (CONTRACT.md "ingest")."""

from __future__ import annotations

from typing import Annotated, Literal, NotRequired

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, with_config
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from shared.fields import Body, FastIsoDate, FastPrintable, IsoDate, IsoDateTime, strip, strip_not_blank

# Lengths apply to the value as sent (as documented), then it is stripped (shared/fields.py).
Urn = Annotated[str, StringConstraints(pattern=r"^[0-9]{6,7}$")]
LaCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{3}$")]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(strip_not_blank)]
LongText = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(strip_not_blank)]
Postcode = Annotated[str, StringConstraints(max_length=10), AfterValidator(strip)]


class SchoolIn(Body):
    name: LongText
    la_code: LaCode
    phase: Literal["primary", "secondary", "special", "alternative_provision"]
    type: Literal["maintained", "academy", "free", "independent", "non_maintained_special"]
    locality: ShortText | None = None
    ward: ShortText | None = None
    postcode: Postcode | None = None


class TermIn(Body):
    start: IsoDate
    end: IsoDate


class ClosureIn(Body):
    date: IsoDate
    session: Literal["AM", "PM", "ALL"]
    reason: Annotated[str, StringConstraints(max_length=200)] = ""


class CalendarIn(Body):
    terms: Annotated[list[TermIn], Field(min_length=1, max_length=12)]
    closed: Annotated[list[ClosureIn], Field(max_length=400)] = []  # noqa: RUF012 - a pydantic default, copied per instance


class ParentIn(Body):
    id: ShortText
    name: Annotated[str, StringConstraints(max_length=200), AfterValidator(strip)]


class PupilIn(Body):
    upn: Annotated[str, StringConstraints(min_length=1, max_length=20)]
    given_name: ShortText
    family_name: ShortText
    date_of_birth: IsoDate
    sex: Literal["F", "M", "X"] | None = None
    year_group: Annotated[str, StringConstraints(pattern=r"^(N1|N2|R|[1-9]|1[0-4])$")]
    home_la_code: LaCode
    home_postcode: Postcode | None = None
    ward: ShortText | None = None
    admission_date: IsoDate
    leaving_date: IsoDate | None = None
    fsm: bool
    sen: Literal["none", "support", "ehcp"]
    ehcp_la_code: LaCode | None = None
    parents: Annotated[list[ParentIn], Field(max_length=6)] = []  # noqa: RUF012 - a pydantic default, copied per instance


class RosterIn(Body):
    pupils: Annotated[list[PupilIn], Field(min_length=1, max_length=5000)]


class RosterResult(BaseModel):
    created: int
    updated: int
    unchanged: int


class PartTimeTimetable(Body):
    start: IsoDate
    end: IsoDate | None = None


class CareIn(Body):
    cin: bool
    cp: bool
    cla: bool
    early_help: bool
    etac: bool = False
    part_time_timetable: PartTimeTimetable | None = None


# A TypedDict, not a ``Body`` model, for speed (issue 8): pydantic validates a batch of 10,000
# marks into dicts in ~18 ms, into model instances in ~55 ms (a sixth of ingest's CPU per mark).
# Body's rules are kept field by field: unknown fields are refused, and the two text fields refuse
# control characters (the others are a date, a literal, a number and a time).
@with_config(ConfigDict(extra="forbid"))
class MarkIn(TypedDict):
    """One mark of a batch; validated on its own so one bad row never sinks the batch."""

    upn: Annotated[str, FastPrintable(1, 20)]
    date: FastIsoDate
    session: Literal["AM", "PM"]
    code: Annotated[str, FastPrintable(1, 3)]
    minutes_late: NotRequired[Annotated[int, Field(ge=0, le=300)] | None]
    recorded_at: NotRequired[IsoDateTime | None]


class Rejection(BaseModel):
    index: int
    upn: str | None
    code: str | None
    detail: str


class MarksResult(BaseModel):
    accepted: int
    amended: int
    unchanged: int
    rejected: list[Rejection]


class Written(BaseModel):
    status: Literal["ok"] = "ok"
