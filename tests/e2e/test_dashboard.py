"""The dashboard in a real browser (Debian's headless Chromium driven by Playwright) against the
running stack with the synthetic borough loaded: the KPI page's charts and figures, an officer
acknowledging a first-day alert, what a school user and a social worker may open, the before/after
comparison, and the annual report as HTML and PDF. Screenshots of each page go to
``test-artifacts/screenshots``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from pypdf import PdfReader

from borough.figures import compute
from shared.auth import mint_token
from shared.settings import DEV_JWT_SECRET
from tests.e2e.conftest import END, ROOT, SCALE, SEED, START, TODAY, Stack

pytestmark = pytest.mark.e2e
READ = ["attendance:read", "alerts:read", "alerts:write", "legal:read"]
ADMIN = {"Authorization": "Bearer " + mint_token(DEV_JWT_SECRET, "e2e-admin", ["admin"])}


def chromium() -> str:
    found = os.environ.get("ROLLCALL_CHROMIUM") or shutil.which("chromium")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser tests: install Debian's chromium")
        pytest.skip("no chromium installed (apt-get install chromium)")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=chromium(),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
            ],
        )
        yield b
        b.close()


def token(sub: str, schools: list[str] | None = None, scopes: list[str] = READ) -> str:
    return mint_token(DEV_JWT_SECRET, sub, scopes, schools, la=None if schools else "343")


def signed_in(browser: Browser, stack: Stack, bearer: str) -> Page:
    """A new browser session signed in through the sign-in form."""
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{stack.rules}/dashboard")
    expect(page).to_have_url(re.compile(r"/dashboard/sign-in"))
    page.fill("textarea[name=token]", bearer)
    page.click("form[action='/dashboard/sign-in'] button[type=submit]")
    return page


def shot(stack: Stack, page: Page, name: str) -> None:
    folder = stack.artifacts / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def la_json(stack: Stack, **params: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token('e2e-json')}"}
    r = httpx.get(f"{stack.rules}/v1/la/attendance", params=params, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.fixture(scope="module")
def caught_up(stack: Stack) -> Stack:
    """The stack once rules has consumed every loaded mark (the generator's own count)."""
    expected = compute(SEED, SCALE, dt.date.fromisoformat(START), dt.date.fromisoformat(END), signals=False)
    deadline = time.monotonic() + 240
    while la_json(stack, **{"from": START, "to": END})["sessions"]["possible"] < expected.overall.possible:
        assert time.monotonic() < deadline, "rules did not catch up with the loaded borough"
        time.sleep(1)
    return stack


def pct(value: float) -> str:
    return f"{value:.1f}%"


def test_kpi_page_shows_the_borough_figures_with_charts(browser: Browser, caught_up: Stack) -> None:
    stack = caught_up
    ytd = la_json(stack)
    page = signed_in(browser, stack, token("la-officer-e2e"))
    # The figures are a snapshot refreshed every second here: reload until it has the whole load.
    # The registry arrives before the marks, so the pupil count alone may match a snapshot taken
    # mid-load: the possible sessions must match too.
    whole = f"{ytd['enrolments']} pupils · {ytd['sessions']['possible']} possible sessions"
    deadline = time.monotonic() + 60
    while whole not in page.inner_text(".asof"):
        assert time.monotonic() < deadline, page.inner_text(".asof")
        time.sleep(1)
        page.reload()
    headline = page.locator("table.headline tbody tr")
    expect(headline).to_have_count(5)
    overall = headline.nth(0).locator("td")
    assert overall.nth(0).inner_text() == pct(ytd["headline"]["this_year"]["overall_absence"])
    assert overall.nth(3).inner_text() == pct(ytd["headline"]["national"]["overall_absence"])
    pa = headline.nth(3).locator("td").nth(0).inner_text()
    assert pa == pct(ytd["persistent_absence_rate"])
    charts = page.locator("svg.chart")
    assert charts.count() >= 4
    titles = [charts.nth(i).locator("title").first.text_content() for i in range(charts.count())]
    assert "Absence by school week" in titles
    trend = page.locator("svg.chart path[stroke]").first.get_attribute("d") or ""
    assert trend.count("L") >= 5  # a line through the loaded school weeks
    cohort = page.locator("table.cohort tbody tr")
    expect(cohort).to_have_count(9)
    fsm = next(g for g in ytd["severe_absence_cohort"]["groups"] if g["group"] == "fsm")
    assert cohort.nth(0).locator("td").nth(0).inner_text() == str(fsm["count"])
    shot(stack, page, "kpis")

    page.click("nav a[href='/dashboard/hotspots']")
    rows = page.locator("#hotspots tbody tr")
    assert rows.count() == len(la_json(stack, group_by="school")["groups"])
    page.locator("#hotspots thead th").nth(1).click()  # pupils: sorted in the browser, largest first
    sizes = [int(rows.nth(i).locator("td").nth(1).inner_text()) for i in range(rows.count())]
    assert sizes == sorted(sizes, reverse=True)
    assert page.locator("svg.chart").count() == 1
    shot(stack, page, "hotspots")


def first_day_pupil(stack: Stack) -> tuple[str, str]:
    """A looked-after, compulsory-school-age pupil on one school's roll, whose school is open today."""
    with sqlite3.connect(stack.ingest_db) as conn:
        row = conn.execute(
            "SELECT e.upn, e.school_urn FROM enrolments e JOIN care c ON c.upn = e.upn "
            "WHERE c.cla = 1 AND e.leaving_date IS NULL AND e.year_group IN ('3','4','5','6','7','8','9') "
            "AND (SELECT COUNT(*) FROM enrolments x WHERE x.upn = e.upn) = 1 AND NOT EXISTS (SELECT 1 FROM "
            "calendars k WHERE k.school_urn = e.school_urn AND k.closed LIKE ?) ORDER BY e.upn LIMIT 1",
            (f"%{TODAY}%",),
        ).fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def test_officer_acknowledges_a_first_day_alert_and_it_leaves_the_inbox(
    browser: Browser, caught_up: Stack
) -> None:
    stack = caught_up
    notifications = stack.urls["notifications"]
    upn, urn = first_day_pupil(stack)
    officer = {"name": "E2E Officer", "role": "attendance_officer"}
    assert httpx.put(f"{notifications}/v1/recipients/ao-e2e", json=officer, headers=ADMIN).status_code == 200
    r = httpx.put(f"{notifications}/v1/allocations/schools/{urn}", json={"attendance_officer": "ao-e2e"},
                  headers=ADMIN)  # fmt: skip
    assert r.status_code == 200, r.text
    mark = {"upn": upn, "date": TODAY, "session": "AM", "code": "N"}
    write = {"Authorization": "Bearer " + mint_token(DEV_JWT_SECRET, "mis", ["marks:write"], [urn])}
    r = httpx.post(f"{stack.ingest}/v1/schools/{urn}/marks", json={"marks": [mark]}, headers=write)
    assert r.json()["accepted"] == 1, r.text

    page = signed_in(browser, stack, token("ao-e2e"))
    page.goto(f"{stack.rules}/dashboard/inbox")
    row = page.locator(f"table.alerts tr:has(a[href='/dashboard/pupils/{upn}'])")
    deadline = time.monotonic() + 120  # generous: latency is measured by `make bench`, not here
    while row.locator("button.ack").count() == 0:
        assert time.monotonic() < deadline, where_is_the_alert(stack, page, upn)
        time.sleep(0.5)
        page.reload()
    shot(stack, page, "inbox")
    alert_id = row.first.get_attribute("data-alert")
    row.locator("button.ack").first.click()
    expect(page).to_have_url(re.compile(r"/dashboard/inbox$"))
    assert page.locator(f"tr[data-alert='{alert_id}'] button.ack").count() == 0
    assert page.locator(f"tr[data-alert='{alert_id}'] td").nth(5).inner_text() == "acknowledged"
    alert = httpx.get(f"{notifications}/v1/alerts/{alert_id}", headers=ADMIN).json()
    assert (alert["status"], alert["acknowledged_by"]) == ("acknowledged", "ao-e2e")
    shot(stack, page, "inbox-acknowledged")


def where_is_the_alert(stack: Stack, page: Page, upn: str) -> str:
    """Why a first-day alert is not in the inbox: what the page says, what notifications holds for
    the pupil, and the end of each service's log (the logs carry no pupil data)."""
    r = httpx.get(f"{stack.urls['notifications']}/v1/alerts", params={"upn": upn}, headers=ADMIN, timeout=30)
    tails = "\n".join(f"--- {f.name}\n" + "\n".join(f.read_text().splitlines()[-15:]) for f in stack.logs)
    return (
        f"the first-day alert did not reach the inbox\npage: {page.locator('main').inner_text()[:800]}\n"
        f"notifications /v1/alerts?upn: {r.status_code} {r.text[:800]}\n{tails}"
    )


def two_schools(stack: Stack) -> list[tuple[str, str]]:
    """A pupil at each of two different schools (single registrations)."""
    with sqlite3.connect(stack.ingest_db) as conn:
        rows = conn.execute(
            "SELECT e.school_urn, MIN(e.upn) FROM enrolments e WHERE "
            "(SELECT COUNT(*) FROM enrolments x WHERE x.upn = e.upn) = 1 GROUP BY e.school_urn "
            "ORDER BY e.school_urn LIMIT 2"
        ).fetchall()
    return [(str(u), str(p)) for u, p in rows]


def test_school_user_cannot_open_another_schools_pupil(browser: Browser, caught_up: Stack) -> None:
    stack = caught_up
    (mine, my_pupil), (_, their_pupil) = two_schools(stack)
    page = signed_in(browser, stack, token(f"school-{mine}", [mine]))
    response = page.goto(f"{stack.rules}/dashboard/pupils/{my_pupil}")
    assert response is not None
    assert response.status == 200
    assert page.locator("svg.chart rect.session").count() > 50  # the register strip
    shot(stack, page, "pupil")
    other = page.goto(f"{stack.rules}/dashboard/pupils/{their_pupil}")
    assert other is not None
    assert other.status == 404
    other_text = page.inner_text("main")
    shot(stack, page, "pupil-of-another-school")
    unknown = page.goto(f"{stack.rules}/dashboard/pupils/A999999999999")
    assert unknown is not None
    assert unknown.status == 404
    assert page.inner_text("main") == other_text  # another school's pupil looks exactly like nobody
    page.goto(f"{stack.rules}/dashboard/pupils")
    listed = {a.inner_text() for a in page.locator("#pupils tbody a").all()}
    assert my_pupil in listed
    assert their_pupil not in listed
    page.goto(f"{stack.rules}/dashboard")
    assert page.inner_text(".asof").endswith("possible sessions")
    assert "your school" in page.inner_text("h1")


def test_social_worker_sees_only_allocated_pupils(browser: Browser, caught_up: Stack) -> None:
    stack = caught_up
    notifications = stack.urls["notifications"]
    (_, allocated), (_, other) = two_schools(stack)
    sw = {"name": "E2E Worker", "role": "social_worker"}
    assert httpx.put(f"{notifications}/v1/recipients/sw-e2e", json=sw, headers=ADMIN).status_code == 200
    r = httpx.put(f"{notifications}/v1/allocations/pupils/{allocated}", json={"social_worker": "sw-e2e"},
                  headers=ADMIN)  # fmt: skip
    assert r.status_code == 200, r.text
    # The rules service learns of the allocation from rollcall.directory.v1 (milliseconds later).
    sw_api = {"Authorization": f"Bearer {token('sw-e2e')}"}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        allowed = httpx.get(f"{stack.rules}/v1/pupils/{allocated}/attendance", headers=sw_api).status_code
        if allowed == 200 and httpx.get(f"{stack.rules}/v1/la/attendance", headers=sw_api).status_code == 403:
            break
        time.sleep(0.2)
    page = signed_in(browser, stack, token("sw-e2e"))
    expect(page).to_have_url(re.compile(r"/dashboard/pupils$"))
    assert [a.inner_text() for a in page.locator("#pupils tbody a").all()] == [allocated]
    shot(stack, page, "social-worker-pupils")
    response = page.goto(f"{stack.rules}/dashboard/pupils/{other}")
    assert response is not None
    assert response.status == 404
    response = page.goto(f"{stack.rules}/dashboard/hotspots")
    assert response is not None
    assert response.status == 403


def test_before_after_comparison_for_a_group_of_schools(browser: Browser, caught_up: Stack) -> None:
    stack = caught_up
    schools = [urn for urn, _ in two_schools(stack)]
    page = signed_in(browser, stack, token("la-officer-e2e"))
    page.goto(f"{stack.rules}/dashboard/compare")
    for urn in schools:
        page.check(f"input[name=schools][value='{urn}']")
    periods = {"before_from": START, "before_to": "2024-09-27", "after_from": "2024-09-30", "after_to": END}
    for name, value in periods.items():
        page.fill(f"input[name={name}]", value)
    page.click("form.compare button[type=submit]")
    expect(page.locator("table.compare")).to_be_visible()
    assert page.locator("svg.chart").count() == 1
    shot(stack, page, "compare")
    # The chosen schools' absence before: the same sums the JSON API gives per school.
    headers = {"Authorization": f"Bearer {token('e2e-json')}"}
    absent = possible = 0
    for urn in schools:
        body = httpx.get(f"{stack.rules}/v1/schools/{urn}/attendance", headers=headers,
                         params={"from": START, "to": "2024-09-27"}).json()  # fmt: skip
        absent += body["sessions"]["authorised"] + body["sessions"]["unauthorised"]
        possible += body["sessions"]["possible"]
    absence_row = page.locator("table.compare tbody tr").nth(1).locator("td")
    assert absence_row.nth(0).inner_text() == pct(absent / possible * 100)


def test_annual_report_is_printed_to_pdf_with_its_tables_and_charts(caught_up: Stack) -> None:
    stack = caught_up
    out = stack.artifacts / "report"
    env = dict(os.environ, ROLLCALL_CHROMIUM=chromium(), ROLLCALL_ENV="dev")
    run = subprocess.run(
        [sys.executable, "-m", "services.rules.dashboard.report", "--year", "2024-25", "--rules", stack.rules,
         "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    html = (out / "borough-attendance-report-2024-25.html").read_text()
    assert html.count('<svg class="chart"') >= 4
    assert '<table class="headline">' in html
    reader = PdfReader(out / "borough-attendance-report-2024-25.pdf")
    # Table cells wrap and Chromium sets ligatures: compare words, not layout.
    text = " ".join(" ".join(page.extract_text() for page in reader.pages).replace("ﬁ", "fi").split())
    assert "Headline measures" in text
    for row in ("Overall absence", "Authorised absence", "Unauthorised absence", "Persistent absence"):
        assert row in text
    captions = re.findall(r"<figcaption>([^<]+)</figcaption>", html)
    printed = [c for c in captions if c.replace("&amp;", "&") in text]
    assert len(printed) >= 4, (captions, text[:500])
    ytd = la_json(stack)
    assert pct(ytd["headline"]["this_year"]["overall_absence"]) in text
