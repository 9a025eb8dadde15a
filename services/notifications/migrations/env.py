"""Alembic environment for the notifications service (async engine, own version table)."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from services.notifications.tables import metadata
from shared.db import create_engine

config = context.config
VERSION_TABLE = config.attributes.get("version_table", "alembic_version_notifications")


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def main() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    async with engine.connect() as conn:
        await conn.run_sync(run)
        await conn.commit()
    await engine.dispose()


asyncio.run(main())
