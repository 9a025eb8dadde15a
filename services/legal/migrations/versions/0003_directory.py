"""directory_recipients, directory_allocations: the local copy of notifications' directory

Filled from rollcall.directory.v1 (shared.directory): who is a social worker or Early Help lead,
and which pupils are allocated to them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 13:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "directory_recipients",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=30), nullable=False),
        sa.Column("la_code", sa.String(length=3), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "directory_allocations",
        sa.Column("upn", sa.String(length=13), nullable=False),
        sa.Column("recipient", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("upn", "recipient"),
    )
    op.create_index("ix_directory_allocations_recipient", "directory_allocations", ["recipient", "upn"])


def downgrade() -> None:
    op.drop_index("ix_directory_allocations_recipient", table_name="directory_allocations")
    op.drop_table("directory_allocations")
    op.drop_table("directory_recipients")
