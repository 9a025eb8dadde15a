"""publish the directory as it stands on rollcall.directory.v1 (through the outbox)

The read services keep their own copy of the directory from rollcall.directory.v1 (shared.directory);
recipients and allocations made before the topic existed are published once here.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 13:00:00
"""

import orjson
import sqlalchemy as sa
from alembic import op

from services.notifications import directory
from services.notifications import tables as t
from shared.events import Topic, new_traceparent

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
    # The outbox as it was at this revision: a row per event (0005 bundles them).
    rows = [
        {
            "id": e["id"],
            "topic": Topic.DIRECTORY,
            "key": key,
            "type": e["type"],
            "tp": new_traceparent(),
            "value": orjson.dumps(e),
        }
        for key, e in events
    ]
    if rows:
        bind.execute(
            sa.text(
                "INSERT INTO outbox (event_id, topic, key, event_type, traceparent, value) "
                "VALUES (:id, :topic, :key, :type, :tp, :value)"
            ),
            rows,
        )


def downgrade() -> None:
    pass  # published events stay published
