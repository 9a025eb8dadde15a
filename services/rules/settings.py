"""The rules service's own settings (on top of ``shared.settings.Settings``, same ``ROLLCALL_`` prefix).

The dashboard reads the legal and notifications services over their public HTTP APIs, with the
signed-in user's own token, so each service still decides what that user may see.
"""

from __future__ import annotations

from pydantic import Field

from shared.settings import Settings


class RulesSettings(Settings):
    service: str = "rules"
    legal_url: str = "http://127.0.0.1:8003"
    notifications_url: str = "http://127.0.0.1:8004"
    partner_timeout_seconds: float = Field(default=5.0, gt=0)
    # The dashboard's LA-wide figures are a snapshot refreshed in the background at most this often
    # while marks arrive (pages never wait for a whole-borough sum).
    figures_max_age_seconds: float = Field(default=30.0, gt=0)
    # Worker processes for the pure part of large recomputes (the engine and the diff): a batch of
    # marks touching hundreds of pupils, the scheduler's tick; on SQLite, when the transaction has
    # written nothing yet (a tick), they read their pupils too. 0 (the default): everything in the
    # service's own process. Worth setting to the core count where the cores are the service's
    # own; where they also run Kafka and PostgreSQL the pool takes them from those (README).
    assess_workers: int = Field(default=0, ge=0)
    # The first-day fast path (worker.consume_first_day): a consumer group of its own that raises
    # first_day_absence for today's absences of pupils with a first-day response before the full
    # consumer reaches them. Off: the full consumer raises them (same signals, later under load).
    first_day_fast_path: bool = True
