"""publish the directory as it stands on rollcall.directory.v1 (through the outbox)

The read services keep their own copy of the directory from rollcall.directory.v1 (shared.directory);
recipients and allocations made before the topic existed are published once here.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 13:00:00
"""

import sqlalchemy as sa
from alembic import op

from services.notifications import directory
from services.notifications import tables as t
from shared.events import Topic
from shared.outbox import outbox_records

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    events = [
        directory.recipient_event(r.id, r.role, r.la_code)
        for r in bind.execute(sa.select(t.recipients).order_by(t.recipients.c.id))
    ]
    events += [
        directory.allocation_event(a.upn, a.social_worker, a.early_help)
        for a in bind.execute(sa.select(t.pupil_allocations).order_by(t.pupil_allocations.c.upn))
    ]
    for start in range(0, len(events), 1000):
        bind.execute(t.outbox.insert(), outbox_records(Topic.DIRECTORY, events[start : start + 1000]))


def downgrade() -> None:
    pass  # published events stay published
