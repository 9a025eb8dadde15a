"""Charts as inline SVG, drawn on the server: no JavaScript library, no CDN, prints as it shows.

Each function takes plain numbers and labels and returns one ``<svg class="chart">`` element with a
``<title>`` (screen readers and tests find charts by it). Every label is escaped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from markupsafe import Markup, escape

PALETTE = ("#1f5fa8", "#d9822b", "#2e8540", "#8e44ad", "#c0392b", "#566573")
CATEGORY_COLOURS = {
    "present": "#2e8540",
    "aea": "#7fb77e",
    "authorised": "#e0a526",
    "unauthorised": "#c0392b",
    "not_counted": "#b8bcc2",
}


def _fmt(value: float, unit: str) -> str:
    return f"{value:.1f}{unit}" if unit == "%" else f"{value:,.0f}{unit}"


def _svg(title: str, parts: list[str]) -> Markup:
    """The drawn chart in a captioned figure, marked safe for templates: every label in ``parts``
    went through ``escape``."""
    parts.append("</svg>")
    head = f'<figure class="chart-box"><figcaption>{escape(title)}</figcaption>'
    return Markup(head + "".join(parts) + "</figure>")  # noqa: S704 - numbers and escaped labels only


def _legend_x(entries: Sequence[tuple[str, object]], index: int) -> int:
    """Where the ``index``-th legend entry starts: after the earlier names (about 6.5 px a letter)."""
    return sum(28 + int(6.5 * len(name)) for name, _ in entries[:index])


def _open(title: str, width: int, height: int) -> list[str]:
    return [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="100%" '
        f'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]


def line_chart(
    title: str,
    x_labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    unit: str = "%",
    width: int = 760,
    height: int = 260,
) -> Markup:
    """One line per series over the same x labels (e.g. school weeks); gaps where a value is None."""
    left, right, top, bottom = 48, 12, 28, 36
    values = [v for _, vs in series for v in vs if v is not None]
    top_value = max(values, default=1.0) * 1.1 or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(x_labels), 1)

    def x(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h * (1 - v / top_value)

    out = _open(title, width, height)
    for k in range(5):
        v = top_value * k / 4
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>')
        out.append(
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" class="axis">{_fmt(v, unit)}</text>'
        )
    step = max(1, n // 8)
    for i in range(0, n, step):
        out.append(
            f'<text x="{x(i):.1f}" y="{height - 14}" text-anchor="middle" class="axis">'
            f"{escape(x_labels[i])}</text>"
        )
    for s, (name, vs) in enumerate(series):
        colour = PALETTE[s % len(PALETTE)]
        path: list[str] = []
        pen = "M"
        for i, value in enumerate(vs):
            if value is None:
                pen = "M"
                continue
            path.append(f"{pen}{x(i):.1f},{y(value):.1f}")
            pen = "L"
        out.append(f'<path d="{" ".join(path)}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out.append(
            f'<rect x="{left + _legend_x(series, s)}" y="6" width="12" height="12" fill="{colour}"/>'
            f'<text x="{left + _legend_x(series, s) + 16}" y="16" class="legend">{escape(name)}</text>'
        )
    return _svg(title, out)


def bar_chart(
    title: str,
    rows: Sequence[tuple[str, float]],
    unit: str = "%",
    reference: tuple[str, float] | None = None,
    width: int = 760,
) -> Markup:
    """Horizontal bars, one per row, in the order given; an optional reference line (e.g. national)."""
    label_w, right, bar_h, gap, top = 220, 60, 16, 6, 26
    height = top + len(rows) * (bar_h + gap) + 10
    top_value = max([v for _, v in rows] + [reference[1] if reference else 0.0], default=1.0) or 1.0
    plot_w = width - label_w - right
    out = _open(title, width, height)
    for i, (label, value) in enumerate(rows):
        yy = top + i * (bar_h + gap)
        w = plot_w * value / top_value
        short = label if len(label) <= 34 else label[:33] + "…"
        out.append(
            f'<text x="{label_w - 6}" y="{yy + 12}" text-anchor="end" class="axis">{escape(short)}'
            f"<title>{escape(label)}</title></text>"
        )
        out.append(
            f'<rect class="bar" x="{label_w}" y="{yy}" width="{w:.1f}" height="{bar_h}" fill="{PALETTE[0]}"/>'
        )
        out.append(f'<text x="{label_w + w + 4:.1f}" y="{yy + 12}" class="value">{_fmt(value, unit)}</text>')
    if reference is not None:
        xr = label_w + plot_w * reference[1] / top_value
        out.append(f'<line x1="{xr:.1f}" x2="{xr:.1f}" y1="{top - 6}" y2="{height - 6}" class="reference"/>')
        out.append(
            f'<text x="{xr:.1f}" y="{top - 10}" text-anchor="middle" class="legend">'
            f"{escape(reference[0])} {_fmt(reference[1], unit)}</text>"
        )
    return _svg(title, out)


def grouped_bars(
    title: str,
    categories: Sequence[str],
    groups: Sequence[tuple[str, Sequence[float | None]]],
    unit: str = "%",
    width: int = 760,
    height: int = 260,
) -> Markup:
    """Vertical bars: for each category, one bar per group side by side (e.g. before / after)."""
    left, right, top, bottom = 48, 12, 30, 40
    values = [v for _, vs in groups for v in vs if v is not None]
    top_value = max(values, default=1.0) * 1.15 or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom
    slot = plot_w / max(len(categories), 1)
    bar_w = slot * 0.7 / max(len(groups), 1)
    out = _open(title, width, height)
    for c, category in enumerate(categories):
        cx = left + slot * c + slot * 0.15
        for g, (_, vs) in enumerate(groups):
            v = vs[c]
            if v is None:
                continue
            h = plot_h * v / top_value
            x0 = cx + g * bar_w
            out.append(
                f'<rect class="bar" x="{x0:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - 2:.1f}" '
                f'height="{h:.1f}" fill="{PALETTE[g % len(PALETTE)]}"/>'
            )
            out.append(
                f'<text x="{x0 + bar_w / 2:.1f}" y="{top + plot_h - h - 4:.1f}" text-anchor="middle" '
                f'class="value">{_fmt(v, unit)}</text>'
            )
        out.append(
            f'<text x="{left + slot * c + slot / 2:.1f}" y="{height - 18}" text-anchor="middle" '
            f'class="axis">{escape(category)}</text>'
        )
    for g, (name, _) in enumerate(groups):
        out.append(
            f'<rect x="{left + _legend_x(groups, g)}" y="6" width="12" height="12" '
            f'fill="{PALETTE[g % len(PALETTE)]}"/>'
            f'<text x="{left + _legend_x(groups, g) + 16}" y="16" class="legend">{escape(name)}</text>'
        )
    return _svg(title, out)


def heat_strip(
    title: str,
    days: Sequence[dt.date],
    sessions: Sequence[tuple[dt.date, str, str | None, str | None]],
    width: int = 760,
) -> Markup:
    """The register for the year: one column per day of ``days`` (the year's weekdays), AM above
    PM, coloured by category; days without a mark stay pale. ``sessions`` is
    ``(date, session, code, category)``; each cell's tooltip gives the date and code."""
    col = {d: i for i, d in enumerate(days)}
    cell_w, cell_h = (width - 8) / max(len(days), 1), 16
    height = 2 * cell_h + 30
    out = _open(title, width, height)
    out.append(f'<rect x="4" y="4" width="{width - 8}" height="{2 * cell_h}" fill="#f0f2f4"/>')
    for d, session, code, category in sessions:
        if d not in col:
            continue
        xx = 4 + col[d] * cell_w
        yy = 4 + (0 if session == "AM" else cell_h)
        colour = CATEGORY_COLOURS.get(category or "", "#eeeeee")
        out.append(
            f'<rect class="session {escape(category or "none")}" x="{xx:.2f}" y="{yy}" '
            f'width="{cell_w:.2f}" height="{cell_h}" fill="{colour}">'
            f"<title>{d.isoformat()} {session} {escape(code or '')}</title></rect>"
        )
    months: dict[tuple[int, int], dt.date] = {}
    for d in days:
        months.setdefault((d.year, d.month), d)
    for first in months.values():
        out.append(f'<text x="{4 + col[first] * cell_w:.1f}" y="{height - 8}" class="axis">{first:%b}</text>')
    return _svg(title, out)
