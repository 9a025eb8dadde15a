"""The benchmark summary's machine line: how busy the cores were over the run and how much of their
time the hypervisor took (runs on a shared virtual machine are compared with it in view)."""

from __future__ import annotations

import pytest

from bench import summary


def test_the_summary_names_busy_and_stolen_time_since_the_run_began(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(summary, "_START", (1_000, 400, 10))
    # 1,000 ticks later: 250 of them idle or waiting for I/O, 120 stolen.
    monkeypatch.setattr(summary, "_cpu_ticks", lambda: (2_000, 650, 130))
    monkeypatch.setattr(summary, "ROWS", [("m", "t", "v")])
    first = summary.render().splitlines()[1]
    assert first.endswith("; during the run: cores 75 % busy, 12 % of their time stolen by the hypervisor")


def test_without_proc_stat_the_line_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(summary, "_START", None)
    assert summary.machine_load() == ""
