"""``ROLLCALL_WORKERS``: which of a service's background workers a process runs."""

from __future__ import annotations

import pytest

from services.rules.app import create_app
from shared.service import Runtime, select_workers
from shared.settings import Settings


async def consume(rt: Runtime) -> None: ...
async def consume_first_day(rt: Runtime) -> None: ...
async def schedule(rt: Runtime) -> None: ...


WORKERS = [consume, consume_first_day, schedule]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("all", [consume, consume_first_day, schedule]),
        (" all ", [consume, consume_first_day, schedule]),
        ("none", []),
        ("consume_first_day", [consume_first_day]),
        ("schedule, consume", [consume, schedule]),  # the service's order, not the list's
        ("-consume_first_day", [consume, schedule]),
        ("-consume,-schedule", [consume_first_day]),
    ],
)
def test_selection(spec: str, expected: list[object]) -> None:
    assert select_workers(WORKERS, spec) == expected


@pytest.mark.parametrize("spec", ["", " , ", "consume,-schedule", "-consume,schedule"])
def test_empty_or_mixed_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="give all, none, worker names, or -names"):
        select_workers(WORKERS, spec)


def test_an_unknown_name_is_refused_with_the_names_there_are() -> None:
    with pytest.raises(
        ValueError,
        match="names consume_first_dya; this service's workers are consume, consume_first_day, schedule",
    ):
        select_workers(WORKERS, "consume,consume_first_dya")


def test_a_service_refuses_to_start_with_a_worker_it_does_not_have() -> None:
    """The real rules app's workers are named as README "Scaling out" says."""
    for spec in ("consume_first_day,consume_directory", "-consume_first_day", "purge,schedule,keep_fresh"):
        create_app(Settings(env="test", workers=spec))
    with pytest.raises(ValueError, match="deliver"):
        create_app(Settings(env="test", workers="deliver"))
