"""Run a service's Alembic migrations: ``python -m shared.migrate ingest`` (the prestart step).

Each service has its own ``services/<name>/migrations`` history and its own version table
(``alembic_version_<name>``); each service uses a database of its own (their tables share names).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from shared.db import create_engine
from shared.settings import Settings

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"


def alembic_config(service: str, url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["version_table"] = f"alembic_version_{service}"
    return cfg


def upgrade(service: str, url: str, revision: str = "head") -> None:
    """Bring ``service``'s tables at ``url`` up to ``revision`` (creating the SQLite folder if needed)."""
    if url.startswith("sqlite") and ":///" in url:
        Path(url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(service, url), revision)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("service")
    parser.add_argument("--revision", default="head")
    args = parser.parse_args()
    settings = Settings(service=args.service)
    upgrade(args.service, settings.db_url, args.revision)


if __name__ == "__main__":
    main()


def run_environment(service: str, metadata: MetaData) -> None:
    """The body of every service's ``migrations/env.py``: migrate with the async engine, in the
    service's own version table (batch mode on SQLite so ALTERs work)."""
    from alembic import context

    config = context.config
    version_table = config.attributes.get("version_table", f"alembic_version_{service}")

    def run(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=version_table,
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
