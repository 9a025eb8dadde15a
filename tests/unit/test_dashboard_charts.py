"""The dashboard's SVG charts and its small pure helpers."""

from __future__ import annotations

import datetime as dt
import re

from services.rules.dashboard import charts
from services.rules.dashboard.pages import safe_next
from services.rules.dashboard.session import csrf_for


def test_labels_are_escaped() -> None:
    svg = charts.bar_chart("Schools <b>", [("<script>alert(1)</script>", 5.0), ("A & B", 2.5)])
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    assert "A &amp; B" in svg
    assert "<figcaption>Schools &lt;b&gt;</figcaption>" in svg


def test_bars_are_proportional_to_their_values() -> None:
    svg = charts.bar_chart("t", [("a", 10.0), ("b", 5.0), ("c", 0.0)])
    widths = [float(w) for w in re.findall(r'class="bar" x="[^"]+" y="[^"]+" width="([^"]+)"', svg)]
    assert widths[0] == 2 * widths[1]
    assert widths[2] == 0.0


def test_reference_line_is_drawn_at_its_value() -> None:
    svg = charts.bar_chart("t", [("a", 10.0)], reference=("National", 5.0))
    x_bar_end = float(re.search(r'class="bar" x="([^"]+)"', svg).group(1))  # type: ignore[union-attr]
    width = float(re.search(r'class="bar" x="[^"]+" y="[^"]+" width="([^"]+)"', svg).group(1))  # type: ignore[union-attr]
    line_x = float(re.search(r'<line x1="([^"]+)"[^>]*class="reference"', svg).group(1))  # type: ignore[union-attr]
    assert line_x == round(x_bar_end + width / 2, 1)
    assert "National 5.0%" in svg


def test_line_chart_breaks_at_missing_values() -> None:
    svg = charts.line_chart("t", ["w1", "w2", "w3", "w4"], [("s", [1.0, None, 2.0, 3.0])])
    path = re.search(r'<path d="([^"]+)"', svg).group(1)  # type: ignore[union-attr]
    assert [p[0] for p in path.split()] == ["M", "M", "L"]


def test_heat_strip_has_one_cell_per_session_on_its_day() -> None:
    days = [dt.date(2024, 9, 2) + dt.timedelta(days=i) for i in range(5)]
    sessions = [
        (days[0], "AM", "/", "present"),
        (days[0], "PM", "N", "unauthorised"),
        (days[4], "AM", "I", "authorised"),
    ]
    svg = charts.heat_strip("Register", days, [*sessions, (dt.date(2024, 8, 1), "AM", "/", "present")])
    cells = re.findall(r'<rect class="session (\w+)" x="([^"]+)" y="([^"]+)"', svg)
    assert [c[0] for c in cells] == [
        "present",
        "unauthorised",
        "authorised",
    ]  # the day off the strip is left out
    assert cells[0][1] == cells[1][1]  # AM above PM in the same column
    assert float(cells[1][2]) > float(cells[0][2])
    assert float(cells[2][1]) > float(cells[0][1])
    assert "2024-09-02 PM N" in svg


def test_sign_in_only_returns_inside_the_dashboard() -> None:
    assert safe_next("/dashboard/pupils/A123") == "/dashboard/pupils/A123"
    for evil in (
        "https://evil.example/",
        "//evil.example/dashboard",
        "/dashboard//evil",
        "/docs",
        "/dashboard\\x",
    ):
        assert safe_next(evil) == "/dashboard"


def test_csrf_value_is_bound_to_the_token() -> None:
    assert csrf_for("a") == csrf_for("a")
    assert csrf_for("a") != csrf_for("b")
    assert len(csrf_for("a")) == 32
