"""register_weeks: sessions per enrolment and week by category, filled from the register

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 11:05:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COUNTS = (
    "SUM(CASE WHEN category = 'present' THEN 1 ELSE 0 END), SUM(CASE WHEN category = 'aea' THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN category = 'authorised' THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN category = 'unauthorised' THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN category IN ('present', 'aea', 'authorised', 'unauthorised') THEN 0 ELSE 1 END)"
)


def upgrade() -> None:
    op.create_table(
        "register_weeks",
        sa.Column("school_urn", sa.String(length=10), nullable=False),
        sa.Column("week", sa.Date(), nullable=False),
        sa.Column("upn", sa.String(length=13), nullable=False),
        sa.Column("present", sa.Integer(), nullable=False),
        sa.Column("aea", sa.Integer(), nullable=False),
        sa.Column("authorised", sa.Integer(), nullable=False),
        sa.Column("unauthorised", sa.Integer(), nullable=False),
        sa.Column("not_counted", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("school_urn", "week", "upn"),
    )
    # The Monday of each mark's week, in each dialect.
    monday = (
        "CAST(date_trunc('week', date) AS date)"
        if op.get_bind().dialect.name == "postgresql"
        else "date(date, 'weekday 0', '-6 days')"
    )
    op.execute(
        "INSERT INTO register_weeks (school_urn, week, upn, present, aea, authorised, unauthorised, not_counted) "  # noqa: S608 - constants only
        f"SELECT school_urn, {monday}, upn, {_COUNTS} FROM register GROUP BY school_urn, {monday}, upn"
    )


def downgrade() -> None:
    op.drop_table("register_weeks")
