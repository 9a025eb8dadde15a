"""Request fields. Text: length limits apply to the value as sent, then it is stripped.

``StringConstraints(strip_whitespace=True, max_length=N)`` strips first, so a value padded past the
documented ``maxLength`` with spaces was silently accepted (schemathesis found it). With these,
``Annotated[str, StringConstraints(max_length=N), AfterValidator(strip_not_blank)]`` refuses it,
and a value of only spaces is still refused where one is required. Dates and times in query
strings: ISO 8601 only (``IsoDate``, ``IsoDateTime``).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from pydantic import BeforeValidator


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
