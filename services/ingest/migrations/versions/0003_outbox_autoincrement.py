"""outbox seq never reused on SQLite (AUTOINCREMENT)

The relay reads the outbox past the last seq it handed to Kafka. On SQLite a seq was the rowid,
the largest remaining plus one, so once the relay had deleted the newest rows the next event could
get a seq below its cursor and wait until the relay started again from the lowest (a first-day
signal waited ~0.5 s that way under load; issue 8). PostgreSQL: nothing to do.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 19:40:00
"""

from alembic import op

from shared.outbox import sqlite_outbox_autoincrement

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    sqlite_outbox_autoincrement(op.execute, op.get_bind().dialect.name, on=True)


def downgrade() -> None:
    sqlite_outbox_autoincrement(op.execute, op.get_bind().dialect.name, on=False)
