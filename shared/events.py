"""Events on Kafka: the CloudEvents 1.0 envelope, topic names and payload models (CONTRACT.md).

Records are structured-mode CloudEvents (the whole envelope as the JSON value), keyed by the
pupil's UPN (legal: the case id), with headers ``ce_id``, ``ce_type`` and ``traceparent``.
The envelope is a small pydantic model rather than the ``cloudevents`` SDK: structured JSON mode
is all the contract uses, and one model keeps validation and serialisation in one place.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import time
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict


class Topic(StrEnum):
    MARKS = "rollcall.marks.v1"
    REGISTRY = "rollcall.registry.v1"
    SIGNALS = "rollcall.signals.v1"
    LEGAL = "rollcall.legal.v1"
    ALERTS = "rollcall.alerts.v1"
    DIRECTORY = "rollcall.directory.v1"  # log-compacted: notifications' directory (shared.directory)


class EventType(StrEnum):
    MARK_RECORDED = "mark.recorded"
    MARK_AMENDED = "mark.amended"
    SCHOOL_UPDATED = "school.updated"
    CALENDAR_UPDATED = "calendar.updated"
    PUPIL_UPDATED = "pupil.updated"
    CARE_UPDATED = "care.updated"


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event in structured JSON mode."""

    model_config = ConfigDict(frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    time: datetime
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]


def new_event(
    type_: str, source: str, data: dict[str, Any], subject: str | None = None, event_id: str | None = None
) -> dict[str, Any]:
    """A new envelope as a plain dict, ready for ``orjson.dumps`` (the hot path skips model building);
    a fresh id unless one made in bulk (``new_event_ids``) is given."""
    return {
        "specversion": "1.0",
        "id": event_id or new_event_id(),
        "source": source,
        "type": type_,
        "time": datetime.now(UTC).isoformat(),
        "subject": subject,
        "datacontenttype": "application/json",
        "data": data,
    }


_VARIANT = dict(zip("0123456789abcdef", "89ab89ab89ab89ab", strict=True))


def new_event_ids(n: int) -> list[str]:
    """``n`` time-ordered (version 7, RFC 9562) UUID strings, in ascending order.

    48 bits of Unix time in milliseconds, then 74 random bits from one read of the OS random
    source; a 10,000-mark batch needs 10,000 ids, at a fraction of ``uuid`` one at a time. Time
    order matters where ids are indexed (a signal's id, a consumer's inbox): each new batch's ids
    go at the end of the index, in a few pages, instead of one random leaf page each — a random
    id dirtied a page per row in the commit's write-ahead log.
    """
    stamp = f"{time.time_ns() // 1_000_000:012x}"[-12:]
    head = f"{stamp[:8]}-{stamp[8:]}-7"
    hexed = os.urandom(10 * n).hex()
    ids = []
    for i in range(0, 20 * n, 20):
        h = hexed[i : i + 20]
        ids.append(f"{head}{h[:3]}-{_VARIANT[h[3]]}{h[4:7]}-{h[7:19]}")
    ids.sort()
    return ids


def new_event_id() -> str:
    """One ``new_event_ids`` id."""
    return new_event_ids(1)[0]


def encode(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


def decode(value: bytes) -> CloudEvent:
    return CloudEvent.model_validate_json(value)


def new_traceparent() -> str:
    """A W3C traceparent for an event that starts a trace."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


# Payload models: the ``data`` of each event type. Consumers validate with these; the AsyncAPI
# document (docs/asyncapi.json, ``python -m shared.asyncapi``) is written from them.


class MarkData(BaseModel):
    """``mark.recorded`` / ``mark.amended``: one register mark as it now stands."""

    school_urn: str
    upn: str
    date: date
    session: Literal["AM", "PM"]
    code: str
    category: str
    minutes_late: int | None = None
    recorded_at: datetime | None = None
    previous_code: str | None = None  # mark.amended only: the code it replaced


class SchoolData(BaseModel):
    urn: str
    name: str
    la_code: str
    phase: str
    type: str
    locality: str | None = None
    ward: str | None = None


class CalendarData(BaseModel):
    school_urn: str
    year: str
    terms: list[dict[str, date]]
    closed: list[dict[str, Any]]


class PupilData(BaseModel):
    """``pupil.updated``: what the other services need about a pupil; no names or postcodes."""

    upn: str
    school_urn: str
    date_of_birth: date
    sex: str | None = None
    year_group: str
    home_la_code: str
    ward: str | None = None
    admission_date: date
    leaving_date: date | None = None
    fsm: bool
    sen: Literal["none", "support", "ehcp"]
    ehcp_la_code: str | None = None
    parent_ids: list[str] = []


class CareData(BaseModel):
    upn: str
    cin: bool
    cp: bool
    cla: bool
    early_help: bool
    etac: bool
    part_time_timetable: dict[str, date | None] | None = None


class SignalData(BaseModel):
    """``signal.<name>`` (and ``signal.<name>_ended``) on ``rollcall.signals.v1``."""

    signal: str
    upn: str
    school_urn: str
    episode: str  # the episode's stable key: type:school:started_on[:qualifier]
    started_on: date
    ended_on: date | None = None
    occurred_on: date  # started_on, or ended_on for an ..._ended signal
    current: bool  # occurred on the rules service's today (first-day alerts are delivered only then)
    withdrawn: bool = False  # ended because an amendment removed the episode
    detail: dict[str, Any] = {}
    evidence: list[tuple[date, str, str]] = []  # (date, session, code) behind it


# rollcall.alerts.v1 (notifications): each event is keyed by the pupil's UPN, `subject` = alert id.
ALERT_EVENT_TYPES = (
    "alert.raised",
    "alert.delivered",
    "alert.acknowledged",
    "alert.escalated",
    "alert.withdrawn",
)


class AlertPupil(BaseModel):
    upn: str
    school_urn: str


class AlertDeadline(BaseModel):
    case_id: str
    kind: str
    due_on: dt.date


class AlertEventData(BaseModel):
    """``alert.<raised|delivered|acknowledged|escalated|withdrawn>`` on ``rollcall.alerts.v1``."""

    model_config = ConfigDict(extra="forbid")

    alert_id: str
    signal: str
    pupil: AlertPupil
    raised_at: dt.datetime
    evidence_url: str
    recipient: str
    reason: str  # why this recipient: social_worker, virtual_school, attendance_officer, escalation...
    episode: str
    occurred_on: dt.date
    status: Literal["raised", "delivered", "acknowledged", "escalated", "withdrawn"]
    deadline: AlertDeadline | None = None  # deadline_approaching alerts
    escalated_from: list[str] | None = None  # an escalation: the alerts it escalates
    # alert.delivered
    channel: Literal["webhook", "email"] | None = None
    delivery_id: int | None = None
    attempts: int | None = None
    delivered_at: dt.datetime | None = None
    # alert.acknowledged
    by: str | None = None
    acknowledged_at: dt.datetime | None = None
    # alert.escalated
    escalated_at: dt.datetime | None = None
    escalated_to: list[str] | None = None  # the SAST duty alerts raised for it
    escalated_to_recipients: list[str] | None = None
    # alert.withdrawn
    withdrawn_at: dt.datetime | None = None


class RecipientData(BaseModel):
    """``recipient.updated`` on ``rollcall.directory.v1`` (key ``recipient:<id>``): who a token's
    ``sub`` is in the notifications directory. No name or email."""

    id: str
    role: str
    la_code: str | None = None


class AllocationData(BaseModel):
    """``allocation.updated`` on ``rollcall.directory.v1`` (key ``pupil:<upn>``): every recipient now
    allocated to the pupil (social worker, Early Help lead); an empty list clears them all."""

    upn: str
    recipients: list[str]
    social_worker: str | None = None
    early_help: str | None = None


# The payload model of every event type the project publishes, by topic (docs/asyncapi.json).
PAYLOADS: dict[Topic, dict[str, type[BaseModel]]] = {
    Topic.MARKS: {EventType.MARK_RECORDED: MarkData, EventType.MARK_AMENDED: MarkData},
    Topic.REGISTRY: {
        EventType.SCHOOL_UPDATED: SchoolData,
        EventType.CALENDAR_UPDATED: CalendarData,
        EventType.PUPIL_UPDATED: PupilData,
        EventType.CARE_UPDATED: CareData,
    },
    Topic.SIGNALS: {"signal.<name>": SignalData},
    Topic.ALERTS: dict.fromkeys(ALERT_EVENT_TYPES, AlertEventData),
    Topic.DIRECTORY: {"recipient.updated": RecipientData, "allocation.updated": AllocationData},
}

# What each topic's record key is (docs/asyncapi.json).
KEYS: dict[Topic, str] = {
    Topic.MARKS: "the pupil's UPN",
    Topic.REGISTRY: "the pupil's UPN (school and calendar events: the school's URN)",
    Topic.SIGNALS: "the pupil's UPN",
    Topic.LEGAL: "the case id",
    Topic.ALERTS: "the pupil's UPN",
    Topic.DIRECTORY: (
        "`recipient:<id>` or `pupil:<upn>`; the topic is log-compacted, so the latest event of each key is "
        "kept for good and a new consumer rebuilds the whole directory from the start"
    ),
}
