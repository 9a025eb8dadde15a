"""marks keyed by school, date, session, pupil (was school, pupil, date, session)

A register arrives a session at a time: a school's AM marks for its whole roll. Keyed pupil first,
each of those marks went to its own place in the primary-key index (one leaf page per pupil), so a
5,000-pupil session dirtied ~5,000 index pages, and once the index outgrew PostgreSQL's buffers
every batch read, dirtied and wrote back that many pages. Keyed session first, a session's marks
are one run of adjacent keys: a few dozen pages. Measured over 5 minutes of sustained ingest
(issue 8, README "Benchmarks: ingest"): PostgreSQL's CPU per 100,000 marks 2.09 -> 1.60 s. Looking
up a batch's current marks (school, pupils, a date range) reads that range of the index and picks
the batch's pupils from it. On PostgreSQL the new key is built with the table locked: for a
borough's year (~14 M marks) expect tens of seconds in the prestart step.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 15:10:00
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_COLUMNS = "school_urn, upn, date, session, code, minutes_late, recorded_at, received_at"


def _rekey(key: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE marks DROP CONSTRAINT marks_pkey")
        op.execute(f"ALTER TABLE marks ADD CONSTRAINT marks_pkey PRIMARY KEY ({key})")
        return
    # SQLite cannot change a table's primary key: rebuild it (the DDL 0001 made, rekeyed).
    op.execute(
        "CREATE TABLE marks_new (school_urn VARCHAR(10) NOT NULL, upn VARCHAR(13) NOT NULL, "
        "date DATE NOT NULL, session VARCHAR(2) NOT NULL, code VARCHAR(3) NOT NULL, "
        "minutes_late SMALLINT, recorded_at DATETIME, received_at DATETIME NOT NULL, "
        f"PRIMARY KEY ({key}))"
    )
    op.execute(f"INSERT INTO marks_new ({_COLUMNS}) SELECT {_COLUMNS} FROM marks ORDER BY {key}")  # noqa: S608 - constants
    op.execute("DROP TABLE marks")
    op.execute("ALTER TABLE marks_new RENAME TO marks")


def upgrade() -> None:
    _rekey("school_urn, date, session, upn")


def downgrade() -> None:
    _rekey("school_urn, upn, date, session")
