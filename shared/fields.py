"""Request fields. Text: length limits apply to the value as sent, then it is stripped.

``StringConstraints(strip_whitespace=True, max_length=N)`` strips first, so a value padded past the
documented ``maxLength`` with spaces was silently accepted (schemathesis found it). With these,
``Annotated[str, StringConstraints(max_length=N), AfterValidator(strip_not_blank)]`` refuses it,
and a value of only spaces is still refused where one is required. Dates and times in query
strings: ISO 8601 only (``IsoDate``, ``IsoDateTime``).

Every request body model derives from ``Body`` (ingest's ``MarkIn``, a ``TypedDict`` for speed,
declares the same per field): unknown fields are refused, and no text field may hold a control
character (U+0000–U+001F except tab, line feed and carriage return, and
U+007F). PostgreSQL cannot store U+0000 at all: a name with one was stored on SQLite, published
on Kafka, and then stopped every PostgreSQL consumer of the registry (the CI run of 23 Nov).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    GetPydanticSchema,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

_CONTROL_CHARACTERS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f"  # a regex character range
_CONTROL = re.compile(f"[{_CONTROL_CHARACTERS}]")
_NOT_PRINTABLE = "must not contain control characters"
_NOT_ISO_DATE = "must be an ISO 8601 date, YYYY-MM-DD"


def printable(value: Any) -> Any:
    """The value, or a ``ValueError`` if any text in it holds a control character."""
    if isinstance(value, str):
        if _CONTROL.search(value):
            raise ValueError(_NOT_PRINTABLE)
    elif isinstance(value, list | tuple):
        for item in value:
            printable(item)
    return value


class Body(BaseModel):
    """A request body: extra fields refused, control characters refused in every text field
    (nested bodies are ``Body`` too, so they check their own fields)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _printable(cls, value: Any) -> Any:
        return printable(value)


def strip(value: str) -> str:
    return value.strip()


def strip_not_blank(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError("must not be blank")
    return stripped


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ISO_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}.*")


def _iso_date(value: object) -> object:
    if isinstance(value, str) and not _ISO_DATE.fullmatch(value):
        raise ValueError(_NOT_ISO_DATE)
    if isinstance(value, int | float):
        raise ValueError(_NOT_ISO_DATE)
    return value


def _iso_datetime(value: object) -> object:
    if isinstance(value, str) and not _ISO_DATETIME.fullmatch(value):
        raise ValueError("must be an ISO 8601 date and time with offset")
    if isinstance(value, int | float):
        raise ValueError("must be an ISO 8601 date and time with offset")
    return value


# Pydantic's lax mode reads a number (``from=0``) as a Unix timestamp: 1970-01-01. A query parameter
# documented as ``format: date`` takes ISO 8601 only (schemathesis found ``?from=0.0`` accepted).
IsoDate = Annotated[dt.date, BeforeValidator(_iso_date)]
IsoDateTime = Annotated[dt.datetime, BeforeValidator(_iso_datetime)]


# The same checks as ``printable`` and ``IsoDate``, declared as pydantic-core schemas so they run in
# its Rust code: a batch of 10,000 marks validated in ~10 ms instead of ~21 ms with the Python
# validators (one call each per mark). The errors read as the Python validators' do (a date that
# is not text at all, null say, now reads as one that is not ISO 8601), and the JSON schema is
# theirs. For the hot path (ingest's ``MarkIn``); elsewhere the plain types serve.


def _value_error(kind: str, message: str, schema: CoreSchema) -> CoreSchema:
    """``schema``'s errors as one, worded as a Python validator's ``ValueError`` reads."""
    return core_schema.custom_error_schema(
        schema, custom_error_type=kind, custom_error_message=f"Value error, {message}"
    )


@dataclass(frozen=True, slots=True)
class FastPrintable:
    """``Annotated[str, FastPrintable(1, 20)]`` is ``Annotated[str, StringConstraints(min_length=1,
    max_length=20), AfterValidator(printable)]``, validated without Python: length, then control
    characters."""

    min_length: int
    max_length: int

    def __get_pydantic_core_schema__(self, _source: Any, _handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.chain_schema(
            [
                core_schema.str_schema(min_length=self.min_length, max_length=self.max_length),
                _value_error(
                    "control_characters",
                    _NOT_PRINTABLE,
                    core_schema.str_schema(pattern=f"^[^{_CONTROL_CHARACTERS}]*$"),
                ),
            ]
        )

    def __get_pydantic_json_schema__(
        self, _schema: CoreSchema, _handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "minLength": self.min_length, "maxLength": self.max_length}


_FAST_ISO_DATE = core_schema.chain_schema(
    [
        _value_error(
            "iso_date",
            _NOT_ISO_DATE,
            core_schema.str_schema(pattern=f"^{_ISO_DATE.pattern}$", strict=True),
        ),
        core_schema.date_schema(),
    ]
)
FastIsoDate = Annotated[
    dt.date,
    GetPydanticSchema(lambda _type, _handler: _FAST_ISO_DATE),
    WithJsonSchema({"type": "string", "format": "date"}),
]
"""``IsoDate`` for a value that must arrive as text (a JSON body, a CSV cell): anything else,
a date object included, is refused with the same message."""
