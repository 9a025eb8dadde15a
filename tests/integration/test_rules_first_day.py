"""The first-day fast path (``recompute.first_day_now``) against a real database (SQLite and
PostgreSQL): a looked-after pupil's absence this morning raises ``first_day_absence`` at once,
with exactly the episode and signal the full recompute would raise, and the full recompute that
follows raises nothing more; a redelivery, a pupil without a first-day response, another day's
mark, an absence corrected in the same batch and a session the full consumer already stored
raise nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from sqlalchemy import and_, delete, func, select

from bench.rules import fill_rules_db
from services.rules import projection, recompute
from services.rules import tables as t
from shared.codes import lookup
from shared.db import create_engine
from shared.events import EventType, decode, new_event
from shared.inbox import first_times
from shared.policy import load_policy

pytestmark = pytest.mark.integration
TODAY = dt.date(2025, 3, 14)  # a Friday in term
NOW = dt.datetime(2025, 3, 14, 9, 5, tzinfo=dt.UTC)
SCALE = 0.01
COMPULSORY_AGE_YEARS = [str(y) for y in range(2, 11)]  # of compulsory school age all year


Mark = tuple[str, dict[str, Any]]  # (event id, mark event data)


def mark(upn: str, urn: str, code: str, day: dt.date = TODAY, session: str = "AM") -> Mark:
    category = lookup(code, day).category.value
    return str(uuid.uuid4()), {"upn": upn, "school_urn": urn, "date": day.isoformat(), "session": session,
                               "code": code, "category": category}  # fmt: skip


class Borough:
    """A small borough's registry and register up to yesterday, recomputed: today is unmarked."""

    def __init__(self, url: str) -> None:
        self.db = create_engine(url)
        self.cache = recompute.CalendarCache()

    async def fill(self) -> None:
        upns, _ = await fill_rules_db(self.url, 11, SCALE)
        async with self.db.begin() as conn:
            await conn.execute(delete(t.register).where(t.register.c.date >= TODAY))
            await recompute.recompute(conn, upns, load_policy(), self.cache, TODAY, NOW)

    @property
    def url(self) -> str:
        return str(self.db.url.render_as_string(hide_password=False))

    async def pupils(self, vulnerable: bool, n: int) -> list[tuple[str, str]]:
        """``n`` singly registered pupils (with or without a first-day response), school open today."""
        e, c = t.enrolments.c, t.care.c
        flag = func.coalesce(c.cin, False) | func.coalesce(c.cp, False) | func.coalesce(c.cla, False)
        single = select(e.upn).group_by(e.upn).having(func.count() == 1)
        q = (
            select(e.upn, e.school_urn)
            .select_from(t.enrolments.outerjoin(t.care, c.upn == e.upn))
            .where(e.upn.in_(single), flag if vulnerable else ~flag, e.year_group.in_(COMPULSORY_AGE_YEARS))
            .order_by(e.upn)
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(q)).all()
        open_today = []
        for upn, urn in rows:
            calendars = (await self.cached(urn))[urn]
            if calendars.is_school_session(TODAY, "AM"):
                open_today.append((upn, urn))
        assert len(open_today) >= n
        return open_today[:n]

    async def cached(self, urn: str) -> Any:
        async with self.db.connect() as conn:
            return await self.cache.get(conn, {urn})

    async def fast(self, marks: list[Mark]) -> int:
        async with self.db.begin() as conn:
            outcome = await recompute.first_day_now(conn, marks, load_policy(), self.cache, TODAY, NOW)
        return outcome.signals

    async def full(self, marks: list[Mark]) -> int:
        """What the full consumer does with these mark events: record their ids in its inbox, store
        the marks, recompute their pupils (one transaction)."""
        events = [
            decode(orjson.dumps({**new_event(EventType.MARK_RECORDED, "test", m), "id": i})) for i, m in marks
        ]
        async with self.db.begin() as conn:
            assert await first_times(conn, t.inbox, [e.id for e in events]) == {e.id for e in events}
            changes = await projection.apply(conn, events)
            outcome = await recompute.recompute(conn, changes.pupils, load_policy(), self.cache, TODAY, NOW)
        return outcome.signals

    async def first_day_signals(self, upn: str) -> list[tuple[str, str, bytes]]:
        s = t.signals.c
        q = select(s.type, s.episode_key, s.data).where(
            and_(s.upn == upn, s.type == "first_day_absence", s.occurred_on == TODAY)
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [(r.type, r.episode_key, orjson.dumps(r.data, option=orjson.OPT_SORT_KEYS)) for r in rows]


async def test_first_day_fast_path(make_url: Callable[[str], Awaitable[str]]) -> None:
    fast, full = Borough(await make_url("fast")), Borough(await make_url("full"))
    await fast.fill()
    await full.fill()
    try:
        (a, a_urn), (b, b_urn), (c, c_urn), (d, d_urn), (e, e_urn) = await fast.pupils(vulnerable=True, n=5)
        (x, x_urn), = await fast.pupils(vulnerable=False, n=1)  # fmt: skip

        # a: absent this morning -> raised now, exactly as the full recompute raises it
        absent = mark(a, a_urn, "N")
        assert await fast.fast([absent]) == 1
        assert await full.full([absent]) >= 1
        raised = await fast.first_day_signals(a)
        assert len(raised) == 1
        assert raised == await full.first_day_signals(a)  # same episode, same data
        # ... and the full consumer, storing the same mark later, raises nothing more for it
        assert await fast.full([absent]) == 0
        assert await fast.first_day_signals(a) == raised
        assert await fast.fast([absent]) == 0  # a redelivery: nothing

        # e: marked present, then amended to absent: the amendment is newer than what is stored
        assert await fast.full([mark(e, e_urn, "/")]) == 0
        amended = mark(e, e_urn, "N")
        assert await fast.fast([amended]) == 1
        assert await fast.full([amended]) == 0
        assert len(await fast.first_day_signals(e)) == 1

        # nothing for: no first-day response, yesterday, absent then corrected in one batch
        assert await fast.fast([mark(x, x_urn, "N")]) == 0
        assert await fast.fast([mark(b, b_urn, "N", day=TODAY - dt.timedelta(days=1))]) == 0
        assert await fast.fast([mark(c, c_urn, "N"), mark(c, c_urn, "/")]) == 0
        # d: the full consumer already applied the absence and its correction to present; the fast
        # path meets the absence late (a lagging group, a redelivery): the stored present stands
        late, corrected = mark(d, d_urn, "N"), mark(d, d_urn, "/")
        assert await fast.full([late, corrected]) == 0
        assert await fast.fast([late]) == 0
        for upn in (x, b, c, d):
            assert await fast.first_day_signals(upn) == []
    finally:
        await fast.db.dispose()
        await full.db.dispose()
