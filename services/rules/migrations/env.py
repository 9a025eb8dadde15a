"""Alembic environment for the rules service (shared.migrate.run_environment)."""

from services.rules.tables import metadata
from shared.migrate import run_environment

run_environment("rules", metadata)
