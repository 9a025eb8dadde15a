"""Alembic environment for the legal service (shared.migrate.run_environment)."""

from services.legal.tables import metadata
from shared.migrate import run_environment

run_environment("legal", metadata)
