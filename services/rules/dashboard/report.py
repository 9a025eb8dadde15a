"""``python -m services.rules.dashboard.report --year 2024-25``: the annual borough attendance report
(strategy, "Ambitions" item 8) as a printable HTML file and a PDF.

The HTML is the dashboard's ``/dashboard/report`` page, fetched from a running rules service (so the
figures and access rules are exactly the dashboard's); it is self-contained (inline CSS and SVG
charts), and the PDF is printed from it by headless Chromium (Debian's ``chromium``, or
``ROLLCALL_CHROMIUM``). The token is ``ROLLCALL_TOKEN`` (an LA officer's), or in development one
minted with the development secret.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from shared.auth import mint_token
from shared.settings import Settings


def chromium() -> str:
    found = os.environ.get("ROLLCALL_CHROMIUM") or next(
        (p for name in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(name))), None
    )
    if not found:
        raise SystemExit("no Chromium found: apt-get install chromium, or set ROLLCALL_CHROMIUM")
    return found


def token() -> str:
    given = os.environ.get("ROLLCALL_TOKEN")
    if given:
        return given
    settings = Settings()
    if settings.env not in ("dev", "test") or settings.jwks_url:
        raise SystemExit("set ROLLCALL_TOKEN to an LA officer's token")
    scopes = ["attendance:read", "legal:read", "admin"]
    return mint_token(settings.jwt_secret.get_secret_value(), "annual-report", scopes, ttl_seconds=600)


def fetch(rules_url: str, year: str, bearer: str) -> str:
    r = httpx.get(
        f"{rules_url.rstrip('/')}/dashboard/report",
        params={"year": year},
        cookies={"rollcall_session": bearer},
        timeout=300,
        follow_redirects=False,
    )
    if r.status_code != 200:
        raise SystemExit(f"the rules service answered {r.status_code} for the report")
    return r.text


def print_pdf(html: Path, pdf: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="rollcall-chromium-") as profile:
        subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--no-first-run", f"--user-data-dir={profile}",
             "--no-pdf-header-footer", f"--print-to-pdf={pdf}", html.resolve().as_uri()],
            check=True, capture_output=True, timeout=180,
        )  # fmt: skip
    if not pdf.exists() or pdf.stat().st_size == 0:
        raise SystemExit("Chromium did not write the PDF")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Produce the annual borough attendance report (HTML + PDF).")
    parser.add_argument("--year", required=True, help="academic year, e.g. 2024-25")
    parser.add_argument("--rules", default=os.environ.get("ROLLCALL_RULES_URL", "http://127.0.0.1:8002"))
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    html = args.out / f"borough-attendance-report-{args.year}.html"
    pdf = html.with_suffix(".pdf")
    html.write_text(fetch(args.rules, args.year, token()), encoding="utf-8")
    print_pdf(html, pdf)
    print(f"{html}\n{pdf}", file=sys.stdout)


if __name__ == "__main__":
    main()
