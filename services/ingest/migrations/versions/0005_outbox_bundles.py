"""the outbox as bundles: a row holds one transaction's events for a topic (issue 8)

A 10,000-mark batch wrote 10,000 outbox rows, each inserted, indexed, read back, deleted and
vacuumed: over a third of PostgreSQL's CPU per mark. A row now holds a transaction's events for one
topic (``shared.outbox.outbox_table``), with its two large values compressed with lz4 where the
server has it. Every pending event is kept, in order (each becomes a bundle of one); downgrade
splits the bundles back into a row per event.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 12:00:00
"""

from alembic import op

from shared.outbox import bundle_outbox

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bundle_outbox(op.get_bind(), upgrade=True)


def downgrade() -> None:
    bundle_outbox(op.get_bind(), upgrade=False)
