"""Request bodies of the notifications API (CONTRACT.md "notifications"), validated by pydantic."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, StringConstraints, field_validator

from services.notifications import routing, signing
from shared.fields import Body

RecipientId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}$")]
LaCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{3}$")]
Email = Annotated[str, StringConstraints(pattern=r"^[^@\s<>,;]{1,64}@[^@\s<>,;]{1,255}$", max_length=320)]


class _Body(Body):
    model_config = ConfigDict(extra="forbid", frozen=False)


class RecipientBody(_Body):
    """A person or team inbox that alerts go to; ``la_code`` makes it an LA's inbox for its role
    (see services/notifications/routing.py)."""

    name: str = Field(min_length=1, max_length=200)
    role: routing.Role
    email: Email | None = None
    la_code: LaCode | None = None


class PupilAllocationBody(_Body):
    """The pupil's allocated social worker and Early Help lead (recipient ids; null: none)."""

    social_worker: RecipientId | None = None
    early_help: RecipientId | None = None


class SchoolAllocationBody(_Body):
    """The school's named School Attendance Officer (a recipient id)."""

    attendance_officer: RecipientId


class SubscriptionBody(_Body):
    """A webhook: ``url`` gets a signed CloudEvent per alert of ``recipient`` (all alerts without
    one, admin only), optionally only for the listed signal ``types``."""

    url: str = Field(min_length=1, max_length=2000)
    secret: str = Field(min_length=1, max_length=200)
    recipient: RecipientId | None = None
    types: list[str] | None = Field(default=None, min_length=1, max_length=len(routing.ALERT_SIGNALS))

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the url must be an absolute http or https URL")
        if parts.username or parts.password:
            raise ValueError("the url must not carry credentials")
        return url

    @field_validator("secret")
    @classmethod
    def _standard_webhooks_secret(cls, secret: str) -> str:
        try:
            signing.secret_key(secret)
        except signing.SecretError as exc:
            raise ValueError(str(exc)) from None
        return secret

    @field_validator("types")
    @classmethod
    def _known_types(cls, types: list[str] | None) -> list[str] | None:
        if types is None:
            return None
        # Either the signal name or the full webhook type (uk.rollcall.alert.<signal>) is accepted.
        names = [x.removeprefix("uk.rollcall.alert.") for x in types]
        unknown = sorted(set(names) - routing.ALERT_SIGNALS)
        if unknown:
            known = ", ".join(sorted(routing.ALERT_SIGNALS))
            raise ValueError(f"unknown signal type(s) {', '.join(unknown)}; alerts carry {known}")
        return sorted(set(names))


class AckBody(_Body):
    """Who acknowledges the alert (the person acting; the token's ``sub`` is recorded as well)."""

    by: str = Field(min_length=1, max_length=200)
