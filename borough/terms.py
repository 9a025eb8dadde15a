"""The 2024-25 school calendar of each school: terms, INSET days and the May Day bank holiday.

Term dates are Sefton's pattern for 2024-25 (six half-terms); the first term opens on Monday
2 September 2024, which every school uses as an INSET day, so pupils start on the 3rd:

    2024-09-02..2024-10-25, 2024-11-04..2024-12-20, 2025-01-06..2025-02-14,
    2025-02-24..2025-04-04, 2025-04-22..2025-05-23, 2025-06-02..2025-07-22

That is 196 weekdays. Take away the Early May bank holiday (Monday 5 May 2025, closed ALL)
and five INSET days and a school meets 190 days = 380 sessions, as the Regulations expect.
Good Friday (18 April) and Easter Monday (21 April) fall in the Easter holiday and the spring
bank holiday (26 May) in the May half-term, so they need no closure.

INSET days vary a little between schools: 2 September plus four more from the usual choices
(the first day back after a holiday, the Friday before half-term, the last days of the summer
term); about one school in six instead takes three whole days and two afternoons ("twilight"
INSET closed PM), which still leaves 380 sessions. Only weekdays are ever school days.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta

YEAR = "2024-25"

TERMS: tuple[tuple[date, date], ...] = (
    (date(2024, 9, 2), date(2024, 10, 25)),
    (date(2024, 11, 4), date(2024, 12, 20)),
    (date(2025, 1, 6), date(2025, 2, 14)),
    (date(2025, 2, 24), date(2025, 4, 4)),
    (date(2025, 4, 22), date(2025, 5, 23)),
    (date(2025, 6, 2), date(2025, 7, 22)),
)
BANK_HOLIDAY = date(2025, 5, 5)

_FIRST_INSET = date(2024, 9, 2)
_INSET_CHOICES = (
    (date(2024, 9, 3), 3),
    (date(2024, 10, 25), 4),
    (date(2024, 11, 4), 6),
    (date(2025, 1, 6), 8),
    (date(2025, 2, 24), 5),
    (date(2025, 4, 22), 5),
    (date(2025, 6, 2), 5),
    (date(2025, 7, 21), 6),
    (date(2025, 7, 22), 8),
)
_TWILIGHT_CHOICES = (
    date(2024, 10, 24),
    date(2024, 12, 19),
    date(2025, 2, 13),
    date(2025, 3, 20),
    date(2025, 6, 26),
)


@dataclass(frozen=True, slots=True)
class Closure:
    """A closed session: `session` is AM, PM or ALL."""

    date: date
    session: str
    reason: str


@dataclass(frozen=True, slots=True)
class Calendar:
    """A school's calendar for 2024-25: what `PUT /v1/schools/{urn}/calendar/2024-25` carries."""

    terms: tuple[tuple[date, date], ...]
    closed: tuple[Closure, ...]

    def body(self) -> dict[str, object]:
        return {
            "terms": [{"start": s.isoformat(), "end": e.isoformat()} for s, e in self.terms],
            "closed": [
                {"date": c.date.isoformat(), "session": c.session, "reason": c.reason} for c in self.closed
            ],
        }

    def school_days(self) -> list[tuple[date, bool, bool]]:
        """Every day with at least one school session, as (date, AM open, PM open), in order."""
        shut: dict[date, set[str]] = {}
        for c in self.closed:
            shut.setdefault(c.date, set()).update(("AM", "PM") if c.session == "ALL" else (c.session,))
        days: list[tuple[date, bool, bool]] = []
        for start, end in self.terms:
            d = start
            while d <= end:
                if d.weekday() < 5:
                    closed = shut.get(d, set())
                    am, pm = "AM" not in closed, "PM" not in closed
                    if am or pm:
                        days.append((d, am, pm))
                d += timedelta(days=1)
        return days

    def sessions(self) -> int:
        """How many sessions the school meets."""
        return sum(am + pm for _, am, pm in self.school_days())


def calendar_for(seed: int, urn: str) -> Calendar:
    """The school's calendar: common terms, the bank holiday and its own INSET days."""
    rng = random.Random(f"rollcall-borough:{seed}:calendar:{urn}")
    choices = [d for d, _ in _INSET_CHOICES]
    weights = [w for _, w in _INSET_CHOICES]
    twilight = rng.random() < 0.17
    whole_days = 3 if twilight else 4
    picked: list[date] = []
    while len(picked) < whole_days:
        d = rng.choices(choices, weights)[0]
        if d not in picked:
            picked.append(d)
    closed = [Closure(_FIRST_INSET, "ALL", "INSET day")]
    closed += [Closure(d, "ALL", "INSET day") for d in picked]
    if twilight:
        closed += [Closure(d, "PM", "INSET (twilight)") for d in rng.sample(_TWILIGHT_CHOICES, 2)]
    closed.append(Closure(BANK_HOLIDAY, "ALL", "Early May bank holiday"))
    closed.sort(key=lambda c: (c.date, c.session))
    return Calendar(TERMS, tuple(closed))
