"""The figures of a ``python -m bench`` run against issue 8's targets, printed as one table at the
end (each benchmark also prints its own detailed table as it finishes)."""

from __future__ import annotations

import os
import platform

ROWS: list[tuple[str, str, str]] = []


def add(measure: str, target: str, measured: str) -> None:
    ROWS.append((measure, target, measured))


def render() -> str:
    if not ROWS:
        return ""
    width = max(len(m) for m, _, _ in ROWS)
    target_width = max(len(t) for _, t, _ in ROWS)
    lines = [
        f"\nsummary — {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        f"{'measure':<{width}}  {'target':<{target_width}}  measured",
    ]
    lines += [f"{m:<{width}}  {t:<{target_width}}  {v}" for m, t, v in ROWS]
    return "\n".join(lines)
