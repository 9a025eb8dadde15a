"""The rules consumer's batches cut into transactions of a few pupils (``worker.by_pupils``) and
the gate that lets the first-day fast path write between them on SQLite (``shared.db.WriteGate``)."""

from __future__ import annotations

import asyncio

from services.rules.worker import by_pupils
from shared.db import WriteGate
from shared.events import CloudEvent, EventType, new_event


def mark(upn: str, n: int, kind: str = EventType.MARK_RECORDED) -> CloudEvent:
    data = {"upn": upn, "school_urn": "100001", "date": "2025-03-14", "session": "AM", "code": "/", "n": n}
    return CloudEvent.model_validate(new_event(kind, "/test", data))


def test_parts_hold_at_most_per_pupils_each_pupil_once_in_order() -> None:
    upns = [f"P{i % 23}" for i in range(200)]  # 23 pupils, their marks interleaved
    events = [
        mark(u, i, EventType.MARK_AMENDED if i % 5 == 0 else EventType.MARK_RECORDED)
        for i, u in enumerate(upns)
    ]
    parts = by_pupils(events, per=5)
    assert [len({e.data["upn"] for e in p}) for p in parts] == [5, 5, 5, 5, 3]
    owner = {e.data["upn"]: k for k, p in enumerate(parts) for e in p}
    assert all(owner[e.data["upn"]] == k for k, p in enumerate(parts) for e in p)  # no pupil split
    assert sorted(e.data["n"] for p in parts for e in p) == list(range(200))  # nothing lost or doubled
    for upn in set(upns):  # each pupil's events all in its part, in their order
        assert [e.data["n"] for e in parts[owner[upn]] if e.data["upn"] == upn] == [
            n for n, u in enumerate(upns) if u == upn
        ]


def test_a_batch_with_anything_but_marks_stays_whole() -> None:
    events = [mark(f"P{i}", i) for i in range(10)]
    care = CloudEvent.model_validate(new_event(EventType.CARE_UPDATED, "/test", {"upn": "P1"}))
    assert by_pupils([*events, care], per=3) == [[*events, care]]
    assert len(by_pupils(events, per=3)) == 4
    assert by_pupils(events[:1], per=3) == [events[:1]]


async def test_an_urgent_writer_goes_before_a_waiting_bulk_writer() -> None:
    gate = WriteGate()
    order: list[str] = []
    first_in = asyncio.Event()
    release = asyncio.Event()

    async def bulk(name: str, hold: asyncio.Event | None = None) -> None:
        async with gate.bulk():
            order.append(name)
            if hold is not None:
                first_in.set()
                await hold.wait()

    async def urgent(name: str) -> None:
        async with gate.urgent():
            order.append(name)

    holder = asyncio.create_task(bulk("bulk-1", release))
    await first_in.wait()
    waiting_bulk = asyncio.create_task(bulk("bulk-2"))
    await asyncio.sleep(0.01)  # bulk-2 queues for the lock first
    waiting_urgent = asyncio.create_task(urgent("urgent"))
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(holder, waiting_bulk, waiting_urgent)
    assert order == ["bulk-1", "urgent", "bulk-2"]


async def test_bulk_writers_take_turns_when_nothing_is_urgent() -> None:
    gate = WriteGate()
    inside = 0
    most = 0

    async def bulk() -> None:
        nonlocal inside, most
        async with gate.bulk():
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.001)
            inside -= 1

    await asyncio.wait_for(asyncio.gather(*(bulk() for _ in range(20))), 5)
    assert most == 1
