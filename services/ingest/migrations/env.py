"""Alembic environment for the ingest service (shared.migrate.run_environment)."""

from services.ingest.tables import metadata
from shared.migrate import run_environment

run_environment("ingest", metadata)
