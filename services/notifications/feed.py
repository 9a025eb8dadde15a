"""Waking the Server-Sent Events streams of this process when new alerts are committed.

Streams read alerts from the database by ``seq`` (so they resume with ``Last-Event-ID`` and see
alerts raised by any process); this only saves them waiting for their next poll.
"""

from __future__ import annotations

import asyncio
import contextlib


class AlertFeed:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def ticket(self) -> asyncio.Event:
        """Take before reading, then ``wait`` on it: a commit in between is not missed."""
        return self._event

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    @staticmethod
    async def wait(ticket: asyncio.Event, seconds: float) -> bool:
        """True when woken, False after ``seconds``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ticket.wait(), seconds)
            return True
        return False
