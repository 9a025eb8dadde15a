"""Alembic environment for the notifications service (shared.migrate.run_environment)."""

from services.notifications.tables import metadata
from shared.migrate import run_environment

run_environment("notifications", metadata)
