"""The LA's web dashboard, served by the rules service under ``/dashboard`` (issue 6).

Server-rendered HTML (Jinja2) with inline SVG charts and one small local script for sortable
tables: no CDN, no front-end build. See ``pages`` for the pages and ``session`` for who sees what.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from services.rules.dashboard import pages


def add_routes(app: FastAPI) -> None:
    pages.add_routes(app)
    app.mount(
        "/dashboard/static", StaticFiles(packages=[("services.rules.dashboard", "static")]), name="static"
    )
