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
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def printable(value: Any) -> Any:
    """The value, or a ``ValueError`` if any text in it holds a control character."""
    if isinstance(value, str):
        if _CONTROL.search(value):
            raise ValueError("must not contain control characters")
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
        raise ValueError("must be an ISO 8601 date, YYYY-MM-DD")
    if isinstance(value, int | float):
        raise ValueError("must be an ISO 8601 date, YYYY-MM-DD")
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
