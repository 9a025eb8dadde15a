"""Process settings, read from the environment with the prefix ``ROLLCALL_``.

Each service process reads the same variable names; the stack runner (deploy/stack.py) gives each
process its own ``ROLLCALL_DATABASE_URL`` and port. Outside ``dev``/``test`` the services refuse to
start with the built-in development JWT secret and no JWKS URL.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal, TypeVar

from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REGISTER_MIN_YEARS = 6
DEV_JWT_SECRET = "rollcall-development-secret-not-for-production"  # noqa: S105 - the known-insecure default, refused in production


class Settings(BaseSettings):
    """Everything a service process needs to start; see README "Configuration"."""

    model_config = SettingsConfigDict(env_prefix="ROLLCALL_", extra="ignore")

    env: Literal["dev", "test", "production"] = "dev"
    service: str = "ingest"
    data_dir: Path = Path("data")
    database_url: str | None = None
    kafka_bootstrap: str = "127.0.0.1:9092"
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwks_url: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    policy_file: Path | None = None
    relay_enabled: bool = True
    # Which of the service's background workers this process runs (``shared.service.select_workers``):
    # ``all``, ``none``, a comma list of worker names, or a comma list of ``-name`` to run all but
    # those. Lets one service run as several kinds of process on one database (README "Scaling out").
    workers: str = "all"
    relay_batch: int = 10_000
    # Backpressure: a marks request waits (up to 5 s) while more events than this are unpublished.
    relay_max_backlog: int = 50_000
    # Request limits (shared/limits.py; README "Request limits"). Bulk routes (ingest's marks and
    # rosters: 10,000 marks, 5,000 pupils) take max_body_bytes, every other route max_request_bytes.
    max_body_bytes: int = 16 * 1024 * 1024
    max_request_bytes: int = 1024 * 1024
    rate_limit_enabled: bool = True
    rate_limit: str = "1000/second;20000/minute"  # per token subject
    rate_limit_anonymous: str = "50/second;1000/minute"  # per client address, without a valid token
    rate_limit_storage: str = "memory://"
    log_level: str = "INFO"
    log_json: bool = True
    # Pretend today is this date (demos of a past year, tests); the time of day stays real.
    today: date | None = None
    scheduler_seconds: float = 60.0
    consumer_group: str | None = None  # default rollcall-<service>
    # Retention (README "Data protection"; shared/retention.py says exactly what each one means).
    # The register (marks, their history and everything derived per session) is kept for
    # ``retention_register_years`` whole years after the end of the academic year of the session
    # (the law: at least 6 years; less is refused).
    retention_register_years: int = REGISTER_MIN_YEARS
    retention_alerts_days: int = Field(default=730, ge=1)  # alerts and their deliveries
    retention_audit_days: int = Field(default=6 * 366, ge=1)  # the audit log (as long as the register)
    # Inbox ids (de-duplication of redelivered events): far longer than any redelivery can happen.
    retention_bookkeeping_days: int = Field(default=30, ge=8)
    purge_enabled: bool = True
    purge_interval_seconds: float = Field(default=86_400, gt=0)  # the daily purge job
    purge_batch: int = Field(default=5_000, ge=1, le=100_000)

    @property
    def group(self) -> str:
        return self.consumer_group or f"rollcall-{self.service}"

    @field_validator("rate_limit", "rate_limit_anonymous")
    @classmethod
    def _rate_limit_parses(cls, value: str) -> str:
        parse_many(value)  # a ValueError names the bad limit string
        return value

    @field_validator("retention_register_years")
    @classmethod
    def _register_kept_six_years(cls, value: int) -> int:
        if value < REGISTER_MIN_YEARS:
            raise ValueError(
                f"ROLLCALL_RETENTION_REGISTER_YEARS={value}: the attendance register must be kept for at "
                f"least {REGISTER_MIN_YEARS} years (School Attendance (Pupil Registration) (England) "
                "Regulations 2024); refusing to start with a shorter retention"
            )
        return value

    @model_validator(mode="after")
    def _refuse_default_secret_outside_dev(self) -> Settings:
        weak = self.jwt_secret.get_secret_value() == DEV_JWT_SECRET or len(self.jwt_secret) < 32
        if self.env == "production" and self.jwks_url is None and weak:
            raise ValueError(
                "ROLLCALL_ENV=production needs ROLLCALL_JWKS_URL or a ROLLCALL_JWT_SECRET of 32+ "
                "characters that is not the development default"
            )
        return self

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL: the configured one, or SQLite under the data folder (the embedded default)."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{self.service}.db').resolve()}"


S = TypeVar("S", bound=Settings)


def extended(cls: type[S], settings: Settings | None, service: str) -> S:
    """A service's own settings class: the given settings kept, its extra fields from the environment."""
    if isinstance(settings, cls):
        return settings
    given = settings.model_dump(exclude_unset=True) if settings is not None else {}
    given.setdefault("service", service)
    return cls(**given)
