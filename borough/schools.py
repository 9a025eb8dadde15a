"""The borough's schools: about 100 of them, as the LA's register of establishments holds them.

75 primary, 18 secondary, 7 special and 2 alternative provision schools, spread over the three
localities and 22 wards, every one in LA 343. Governance is a realistic mix: most primaries
are maintained (community, voluntary aided or controlled), most secondaries are academies,
with a couple of free schools, one independent secondary (where penalty notices may not be
issued, SPEC §7) and one non-maintained special school.

URNs are 6-digit strings: maintained and independent schools from 104001, academies and free
schools from 140002 (the way the DfE numbered converters later). Each school also has a DfE
establishment number, used as the issuing school in its pupils' UPNs.

Sizes (at scale 1.0) follow form entry: a one-form-entry primary has 7 classes of about 30;
secondaries are 11–16 schools of 600–1,500; special schools 60–200; the two AP centres about
50 single-registered pupils each plus dual-registered ones. The roster (names, sizes,
governance, ward) is drawn from the seed; the counts by phase are fixed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from borough.geography import LA_CODE, WARDS, Ward, wards_in

PRIMARY, SECONDARY, SPECIAL, AP = "primary", "secondary", "special", "alternative_provision"

# fmt: off
SAINTS = (
    "Mary",
    "John",
    "Luke",
    "Peter",
    "Paul",
    "Anne",
    "Joseph",
    "Patrick",
    "Thomas",
    "Elizabeth",
    "Andrew",
    "James",
    "Teresa",
    "Monica",
    "Benet",
    "Gregory",
    "Edmund",
    "Nicholas",
    "Oswald",
    "Jerome",
    "Michael",
    "Philip",
    "Stephen",
    "Wilfrid",
    "George",
    "Francis",
    "Robert",
    "Cuthbert",
    "Helen",
    "Margaret",
)
# fmt: on
SPECIAL_NAMES = ("Rowan Park", "Hawthorns", "Merefield", "Newfield", "Crosby Meadows", "Presfield", "Redgate")

PHASE_TOTALS = {PRIMARY: 21_150, SECONDARY: 15_880, SPECIAL: 830}
"""Pupils on roll by phase at scale 1.0: with the AP centres, the strategy's 37,980."""

_PRIMARY_PLAN = 75
_SECONDARY_PLAN = 18
_SPECIAL_AGES = ((0, 6), (0, 6), (7, 11), (7, 11), (7, 11), (0, 11), (0, 11))
_AP_WARDS = ("Linacre", "Dukes")


@dataclass(frozen=True, slots=True)
class School:
    """One establishment: what `PUT /v1/schools/{urn}` carries, plus generator settings."""

    urn: str
    name: str
    phase: str
    type: str
    locality: str
    ward: str
    postcode: str
    establishment: int
    first_year: int
    """Youngest year group (0 = Reception)."""
    last_year: int
    size: int
    """Pupils on roll at scale 1.0 (single registrations)."""
    effect: float
    """The school's own pull on its pupils' absence, on the log-odds scale."""
    index: int

    @property
    def la_code(self) -> str:
        return LA_CODE

    def body(self) -> dict[str, str]:
        """The body of `PUT /v1/schools/{urn}`."""
        return {
            "name": self.name,
            "la_code": self.la_code,
            "phase": self.phase,
            "type": self.type,
            "locality": self.locality,
            "ward": self.ward,
            "postcode": self.postcode,
        }


def _postcode(rng: random.Random, ward: Ward) -> str:
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    return f"{ward.district} {rng.randint(1, 9)}{rng.choice(letters)}{rng.choice(letters)}"


def roster(seed: int) -> tuple[School, ...]:
    """Every school of the borough, in a fixed order (primaries, secondaries, special, AP)."""
    rng = random.Random(f"rollcall-borough:{seed}:roster")
    schools: list[School] = []
    names: set[str] = set()
    saints = list(SAINTS)
    rng.shuffle(saints)

    def add(
        phase: str, kind: str, ward: Ward, name: str, first: int, last: int, size: int, effect: float
    ) -> None:
        i = len(schools)
        base = name
        n = 2
        while name in names:
            name = f"{base} ({ward.places[n % 2]})" if n < 4 else f"{base} {n}"
            n += 1
        names.add(name)
        # Maintained and independent schools have old URNs, academies and free schools new ones.
        urn = str(104001 + 7 * i) if kind in ("maintained", "independent") else str(140002 + 13 * i)
        estab = {PRIMARY: 2001 + 7 * i, SECONDARY: 4001 + 11 * i, SPECIAL: 7001 + 3 * i, AP: 1101 + i}[phase]
        if kind == "independent":
            estab = 6001 + i
        schools.append(
            School(
                urn,
                name,
                phase,
                kind,
                ward.locality,
                ward.name,
                _postcode(rng, ward),
                estab,
                first,
                last,
                size,
                effect,
                i,
            )
        )

    # Primaries: 3 or 4 per ward (22 wards x 3 + 9), maintained mostly.
    ward_order = list(WARDS)
    rng.shuffle(ward_order)
    primary_wards = [w for w in WARDS for _ in range(3)] + ward_order[: _PRIMARY_PLAN - 3 * len(WARDS)]
    primary_wards.sort(key=lambda w: (w.locality, w.name))
    kinds = ["academy"] * 16 + ["free"] + ["maintained"] * (_PRIMARY_PLAN - 17)
    rng.shuffle(kinds)
    for n, (ward, kind) in enumerate(zip(primary_wards, kinds, strict=True)):
        style = rng.random()
        place = ward.places[n % 2]
        if style < 0.30:
            name = f"St {saints[n % len(saints)]}'s Catholic Primary School"
        elif style < 0.50:
            name = f"{place} Church of England Primary School"
        elif style < 0.65:
            name = f"{place} Community Primary School"
        else:
            name = f"{place} Primary School"
        form_entry = rng.choices((0.5, 1.0, 1.5, 2.0, 3.0), (2, 37, 22, 31, 8))[0]
        size = round(form_entry * 210 * rng.uniform(0.9, 1.0))
        add(PRIMARY, kind, ward, name, 0, 6, size, rng.gauss(0.0, 0.16))

    # Secondaries: 6 per locality; one independent, two free schools.
    sec_kinds = ["academy"] * 11 + ["maintained"] * 4 + ["free"] * 2
    rng.shuffle(sec_kinds)
    sec_kinds.insert(8, "independent")
    for n in range(_SECONDARY_PLAN):
        locality = ("north", "central", "south")[n // 6]
        ward = rng.choice(wards_in(locality))
        kind = sec_kinds[n]
        place = ward.places[0]
        if kind == "independent":
            name, size = f"{place} Independent Grammar School", rng.randint(380, 460)
        else:
            style = rng.random()
            if style < 0.3:
                name = f"St {saints[(n + 40) % len(saints)]}'s Catholic High School"
            elif style < 0.55:
                name = f"{place} Academy"
            else:
                name = f"{place} High School"
            size = rng.randint(620, 1260)
        add(SECONDARY, kind, ward, name, 7, 11, size, rng.gauss(0.0, 0.14))

    # Special schools: primary, secondary and all-through; one non-maintained.
    special_kinds = ["maintained"] * 5 + ["academy", "non_maintained_special"]
    rng.shuffle(special_kinds)
    for n, (first, last) in enumerate(_SPECIAL_AGES):
        ward = rng.choice(WARDS)
        add(
            SPECIAL,
            special_kinds[n],
            ward,
            f"{SPECIAL_NAMES[n]} School",
            first,
            last,
            rng.randint(70, 190),
            rng.gauss(0.0, 0.12),
        )

    # Alternative provision: a PRU in Bootle and an AP academy in Southport.
    for n, ward_name in enumerate(_AP_WARDS):
        ward = next(w for w in WARDS if w.name == ward_name)
        name = (
            f"{ward.places[0]} Learning Centre"
            if n == 0
            else f"{ward.places[0]} Alternative Provision Academy"
        )
        add(AP, ("maintained", "academy")[n], ward, name, 5, 11, rng.randint(44, 56), 0.0)
    # Scale each phase to its planned total so every seed gives a borough of the same size.
    totals: dict[str, int] = {}
    for school in schools:
        totals[school.phase] = totals.get(school.phase, 0) + school.size
    return tuple(
        replace(s, size=round(s.size * PHASE_TOTALS[s.phase] / totals[s.phase]))
        if s.phase in PHASE_TOTALS
        else s
        for s in schools
    )
