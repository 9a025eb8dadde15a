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
