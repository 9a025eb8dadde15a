"""A service process freezes its startup objects (``shared.service``): a full collection then
walks only what was made since, so its pause on the event loop is short (issue 8)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROBE = """
import asyncio, gc, sys
from shared.settings import Settings
from services.rules.app import create_app

async def main() -> None:
    before = gc.get_freeze_count()
    settings = Settings(env="test", database_url=sys.argv[1], kafka_bootstrap="127.0.0.1:1",
                        workers="none", relay_enabled=False, log_level="ERROR")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        frozen = gc.get_freeze_count()
    print(before, frozen)

asyncio.run(main())
"""


def test_a_service_freezes_its_startup_objects(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'rules.db'}"
    out = subprocess.run(
        [sys.executable, "-c", PROBE, db], capture_output=True, text=True, timeout=120, check=True
    )
    before, frozen = map(int, out.stdout.split())
    assert before == 0
    assert frozen > 100_000  # the modules, the app and its routes, pydantic's and SQLAlchemy's structures
