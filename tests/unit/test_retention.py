"""Retention settings and the register's boundary (shared/retention.py), without a database."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from shared.retention import cutoffs, register_cutoff
from shared.settings import Settings


def test_the_register_must_be_kept_six_years() -> None:
    with pytest.raises(ValidationError, match="at least 6 years"):
        Settings(retention_register_years=5)
    assert Settings(retention_register_years=6).retention_register_years == 6
    assert Settings(retention_register_years=10).retention_register_years == 10


def test_the_register_setting_is_refused_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLCALL_RETENTION_REGISTER_YEARS", "5")
    with pytest.raises(ValidationError, match="ROLLCALL_RETENTION_REGISTER_YEARS=5"):
        Settings()


@pytest.mark.parametrize(
    ("today", "first_kept"),
    [
        ("2025-08-31", "2018-09-01"),  # 2018-19 ended 31 Aug 2019: 6 whole years pass at the end of today
        ("2025-09-01", "2019-09-01"),  # from 1 Sep 2025, 2018-19 goes
        ("2026-02-28", "2019-09-01"),
        ("2024-02-29", "2017-09-01"),
    ],
)
def test_register_cutoff_is_the_first_of_september(today: str, first_kept: str) -> None:
    assert register_cutoff(dt.date.fromisoformat(today), 6).isoformat() == first_kept


def test_a_mark_is_never_deleted_before_it_is_six_years_old() -> None:
    day = dt.date(2018, 9, 1)
    while day < dt.date(2026, 9, 1):
        first_kept = register_cutoff(day, 6)
        # everything deleted (before first_kept) is more than 6 years old, and a whole year is kept
        assert first_kept.month == 9
        assert first_kept.day == 1
        last_deleted = first_kept - dt.timedelta(days=1)
        assert last_deleted.replace(year=last_deleted.year + 6) < day
        day += dt.timedelta(days=1)


def test_other_periods_are_days_before_now() -> None:
    now = dt.datetime(2025, 9, 1, 12, tzinfo=dt.UTC)
    s = Settings(retention_alerts_days=10, retention_audit_days=20, retention_bookkeeping_days=8)
    c = cutoffs(s, now.date(), now)
    assert c["alerts"].at == now - dt.timedelta(days=10)
    assert c["audit"].at == now - dt.timedelta(days=20)
    assert c["bookkeeping"].at == now - dt.timedelta(days=8)
    assert c["register"].day == dt.date(2019, 9, 1)
    with pytest.raises(ValidationError):
        Settings(retention_bookkeeping_days=7)  # shorter than Kafka keeps a record: a redelivery could repeat
