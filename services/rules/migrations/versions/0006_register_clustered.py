"""register clustered by pupil on SQLite (WITHOUT ROWID)

A recompute reads whole registers, pupil by pupil. In a rowid table the ~380 marks of a pupil lie
wherever they were inserted (day by day, so each on a different page) and every one is a random
page read through the primary-key index: the whole borough took ~30 s in SQLite alone. Stored
WITHOUT ROWID, the table *is* its primary key B-tree (upn, school_urn, date, session), so a pupil's
register is a handful of adjacent pages and the whole borough is read in a few seconds.
PostgreSQL is left as it is (no clustered tables; see the README's "Rules performance").

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 13:30:00
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _rebuild(without_rowid: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    suffix = " WITHOUT ROWID" if without_rowid else ""
    op.execute(
        "CREATE TABLE register_new (upn VARCHAR(13) NOT NULL, school_urn VARCHAR(10) NOT NULL, "
        "date DATE NOT NULL, session VARCHAR(2) NOT NULL, code VARCHAR(3) NOT NULL, "
        f"category VARCHAR(16) NOT NULL, PRIMARY KEY (upn, school_urn, date, session)){suffix}"
    )
    op.execute(
        "INSERT INTO register_new (upn, school_urn, date, session, code, category) "
        "SELECT upn, school_urn, date, session, code, category FROM register "
        "ORDER BY upn, school_urn, date, session"
    )
    op.execute("DROP TABLE register")
    op.execute("ALTER TABLE register_new RENAME TO register")
    op.create_index("ix_register_school_date", "register", ["school_urn", "date"], unique=False)


def upgrade() -> None:
    _rebuild(without_rowid=True)


def downgrade() -> None:
    _rebuild(without_rowid=False)
