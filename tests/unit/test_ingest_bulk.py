"""The ingest hot path's bulk shortcuts give exactly what the per-mark code gave."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Annotated, Any, Literal, NotRequired

import orjson
from pydantic import AfterValidator, Field, StringConstraints, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from services.ingest.marks import SOURCE, _Encoded, _shape, _shape_all
from services.ingest.schemas import MarkIn
from shared.events import new_event, new_event_ids
from shared.fields import IsoDate, IsoDateTime, printable


def test_encoded_mark_event_is_orjson_of_the_envelope() -> None:
    time = "2025-03-03T09:00:00.123456+00:00"
    encoded = _Encoded(time)
    cases: list[tuple[MarkIn, str | None]] = [
        (MarkIn(upn="A343200018001", date=dt.date(2024, 9, 3), session="AM", code="/"), None),
        (MarkIn(upn="A343200018001", date=dt.date(2024, 9, 3), session="PM", code="\\"), "/"),
        (
            MarkIn(
                upn="A343200018001",
                date=dt.date(2024, 9, 4),
                session="AM",
                code="L",
                minutes_late=7,
                recorded_at=dt.datetime(2024, 9, 4, 8, 55, 1, 5, tzinfo=dt.UTC),
            ),
            'N"',
        ),
    ]
    for mark, previous in cases * 2:  # the second time round from the encoder's memo
        kind = "mark.recorded" if previous is None else "mark.amended"
        data: dict[str, Any] = {
            "school_urn": "104001",
            "upn": mark["upn"],
            "date": mark["date"].isoformat(),
            "session": mark["session"],
            "code": mark["code"],
            "category": "present",
            "minutes_late": mark.get("minutes_late"),
            "recorded_at": recorded.isoformat() if (recorded := mark.get("recorded_at")) else None,
        }
        if previous is not None:
            data["previous_code"] = previous
        event = new_event(kind, SOURCE, data, subject=mark["upn"])
        event["time"] = time
        got = encoded.event(event["id"], kind, "104001", mark["upn"], mark, "present", previous)
        assert got == orjson.dumps(event)


def test_bulk_shape_matches_one_by_one() -> None:
    raw: list[Any] = [
        {"upn": "A343200018001", "date": "2024-09-03", "session": "AM", "code": "/"},
        {"upn": "A343200018001", "date": "2024-13-03", "session": "AM", "code": "/"},
        ("a", "b"),
        "not a mark",
        {"upn": "A343200018001", "date": "2024-09-03", "session": "XX", "code": "", "extra": 1},
        {"upn": "A343200018001", "date": "2024-09-04", "session": "PM", "code": "N", "minutes_late": 5},
        {},
    ]
    assert _shape_all(raw) == [_shape(r) for r in raw]
    good = raw[:1] * 3
    assert _shape_all(good) == [_shape(r) for r in good]


def test_bulk_ids_are_time_ordered_version_7_uuids() -> None:
    before = time.time_ns() // 1_000_000
    ids = new_event_ids(1000)
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 1000
    assert ids == sorted(ids)  # ascending: appended to an index, not scattered over it
    for i in ids:
        parsed = uuid.UUID(i)
        assert (str(parsed), parsed.version, parsed.variant) == (i, 7, uuid.RFC_4122)
        assert before <= parsed.int >> 80 <= after  # 48 bits of Unix time in ms
    later = new_event_ids(3)
    assert min(later) > max(ids) or later[0][:13] == ids[0][:13]  # a later ms sorts after
    single = uuid.UUID(new_event("t", "/s", {})["id"])
    assert single.version == 7
    assert single.int >> 80 >= before


def test_a_mark_refuses_what_a_body_refuses() -> None:
    """MarkIn is a TypedDict for speed, so Body's rules are declared per field: check they hold."""
    base = {"upn": "A343200018001", "date": "2024-09-03", "session": "AM", "code": "/"}
    assert _shape(base) == {**base, "date": dt.date(2024, 9, 3)}
    control = "Value error, must not contain control characters"
    assert _shape({**base, "upn": "A34320001\x008"}) == f"upn: {control}"
    assert _shape({**base, "code": "\x7f"}) == f"code: {control}"
    assert _shape({**base, "note": "x"}) == "note: Extra inputs are not permitted"
    assert _shape({**base, "date": 0}) == "date: Value error, must be an ISO 8601 date, YYYY-MM-DD"
    assert _shape({**base, "recorded_at": 0}).startswith("recorded_at: Value error, must be an ISO 8601 date")
    assert _shape({**base, "minutes_late": 301}).startswith("minutes_late: Input should be less than")


class _PythonMark(TypedDict):
    """``MarkIn`` as it was declared with the Python validators (``printable``, ``IsoDate``)."""

    upn: Annotated[str, StringConstraints(min_length=1, max_length=20), AfterValidator(printable)]
    date: IsoDate
    session: Literal["AM", "PM"]
    code: Annotated[str, StringConstraints(min_length=1, max_length=3), AfterValidator(printable)]
    minutes_late: NotRequired[Annotated[int, Field(ge=0, le=300)] | None]
    recorded_at: NotRequired[IsoDateTime | None]


def test_the_rust_side_checks_refuse_and_word_it_as_the_python_validators_did() -> None:
    """``FastPrintable`` and ``FastIsoDate`` (pydantic-core schemas) against the Python validators
    they replace: the same marks accepted, the same reason for every one refused — except a date
    that is not text at all (null, a list), now refused as "must be an ISO 8601 date" too rather
    than "Input should be a valid date" (and bytes, which no JSON or CSV body holds)."""
    python = TypeAdapter(_PythonMark)

    def old(raw: dict[str, Any]) -> Any:
        try:
            return python.validate_python(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"

    base = {"upn": "A343200018001", "date": "2024-09-03", "session": "AM", "code": "/"}
    texts = ["", "A", "A" * 20, "A" * 21, "A\tB", "A\nB", "A\rB", "\x00", "A\x1fB", "A\x7f", "\x0b", "\x0c",
             "é", "A\x80", "\u2028"]  # fmt: skip
    dates = ["2024-09-03", "2024-9-3", "2024-09-03T00:00:00", "2024-09-03 ", "2024-09-03\n", "2024-02-30",
             "2023-02-29", "0000-01-01", "２０２４-09-03", "", 20240903, 0, 1.5, True]  # fmt: skip
    cases: list[dict[str, Any]] = [{**base, "upn": v} for v in texts] + [
        {**base, "code": v[:4]} for v in texts
    ]
    cases += [{**base, "date": v} for v in dates] + [{**base, "upn": 7}, {**base, "code": None}]
    for raw in cases:
        assert _shape(raw) == old(raw), raw
    assert _shape_all(cases) == [old(raw) for raw in cases]
    iso = "date: Value error, must be an ISO 8601 date, YYYY-MM-DD"
    for value in (None, ["2024-09-03"], b"2024-09-03"):
        assert old({**base, "date": value}) != iso
        assert _shape({**base, "date": value}) == iso
