"""The figures of a ``python -m bench`` run against issue 8's targets, printed as one table at the
end (each benchmark also prints its own detailed table as it finishes)."""

from __future__ import annotations

import os
import platform

ROWS: list[tuple[str, str, str]] = []


def _cpu_ticks() -> tuple[int, int, int] | None:
    """(all, idle + iowait, steal) CPU ticks of the machine since boot, from ``/proc/stat``."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return sum(fields), fields[3] + fields[4], fields[7]


_START = _cpu_ticks()


def machine_load() -> str:
    """How busy the cores were since the run began, and how much of their time the hypervisor
    took for other guests ("steal"): on a shared virtual machine the same code measures 20-50 %
    slower while steal is high, so runs are compared with it in view."""
    end = _cpu_ticks()
    if _START is None or end is None or end[0] <= _START[0]:
        return ""
    total = end[0] - _START[0]
    idle, steal = end[1] - _START[1], end[2] - _START[2]
    busy, stolen = 100 * (total - idle) / total, 100 * steal / total
    return f"; during the run: cores {busy:.0f} % busy, {stolen:.0f} % of their time stolen by the hypervisor"


def add(measure: str, target: str, measured: str) -> None:
    ROWS.append((measure, target, measured))


def render() -> str:
    if not ROWS:
        return ""
    width = max(len(m) for m, _, _ in ROWS)
    target_width = max(len(t) for _, t, _ in ROWS)
    lines = [
        f"\nsummary — {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
        f"{machine_load()}",
        f"{'measure':<{width}}  {'target':<{target_width}}  measured",
    ]
    lines += [f"{m:<{width}}  {t:<{target_width}}  {v}" for m, t, v in ROWS]
    return "\n".join(lines)
