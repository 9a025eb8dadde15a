"""register_days: sessions per school, day and code, filled from the register

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "register_days",
        sa.Column("school_urn", sa.String(length=10), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("code", sa.String(length=3), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("sessions", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("school_urn", "date", "code"),
    )
    op.create_index("ix_register_days_date", "register_days", ["date"], unique=False)
    op.execute(
        "INSERT INTO register_days (school_urn, date, code, category, sessions) "
        "SELECT school_urn, date, code, MIN(category), COUNT(*) FROM register GROUP BY school_urn, date, code"
    )


def downgrade() -> None:
    op.drop_index("ix_register_days_date", table_name="register_days")
    op.drop_table("register_days")
