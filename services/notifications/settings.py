"""The notifications service's settings: the shared ones plus delivery, email and escalation.

Environment variables, prefix ``ROLLCALL_`` like every other setting (README "Configuration").
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from shared.settings import Settings


class NotificationSettings(Settings):
    service: str = "notifications"
    # Overrides the policy's ``escalation_minutes`` (tests and demos shorten it).
    escalation_seconds: float | None = Field(default=None, gt=0)
    # Webhooks and email: a failed attempt is retried after retry_base × 2^(attempts-1) seconds,
    # at most retry_max apart, until dead_letter_seconds after the delivery was queued.
    retry_base_seconds: float = Field(default=5.0, gt=0)
    retry_max_seconds: float = Field(default=3600.0, gt=0)
    dead_letter_seconds: float = Field(default=24 * 3600.0, gt=0)
    delivery_timeout_seconds: float = Field(default=10.0, gt=0)
    delivery_poll_seconds: float = Field(default=1.0, gt=0)
    delivery_concurrency: int = Field(default=64, ge=1)
    # SMTP: no email is sent while smtp_host is unset.
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "rollcall-alerts@localhost"
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # Where an alert's ``evidence_url`` points: the rules and legal services' public base URLs.
    rules_public_url: str = "http://127.0.0.1:8002"
    legal_public_url: str = "http://127.0.0.1:8003"
    # An SSE stream ends after this long; EventSource clients reconnect with Last-Event-ID and
    # miss nothing. Bounded so a server shutdown never waits on an open stream for long.
    sse_max_seconds: float = Field(default=30.0, gt=0)
    sse_heartbeat_seconds: float = Field(default=10.0, gt=0)
