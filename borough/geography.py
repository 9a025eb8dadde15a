"""The places of the synthetic borough: localities, wards, postcode districts, neighbouring LAs.

Sefton runs north–south along the coast: Southport and Formby in the north, Crosby, Waterloo
and Maghull in the middle, Bootle, Litherland and Netherton in the south. The 22 wards carry
their real names; each is given the postcode district it mostly lies in, the towns or
neighbourhoods whose names the borough's schools borrow, and a free-school-meals rate.

Calibration: the ward FSM rates are illustrative, not published figures. They follow the
borough's familiar gradient (the south most deprived, Blundellsands, Harington and Manor the
least) and are scaled in `borough.pupils` so that the borough lands on the strategy's 25 %.
"""

from __future__ import annotations

from dataclasses import dataclass

LA_CODE = "343"
"""Sefton's DfE local authority number."""

LOCALITIES = ("north", "central", "south")


@dataclass(frozen=True, slots=True)
class Ward:
    """An electoral ward: its locality, postcode district, places and FSM rate."""

    name: str
    locality: str
    district: str
    places: tuple[str, ...]
    fsm_rate: float


WARDS: tuple[Ward, ...] = (
    Ward("Ainsdale", "north", "PR8", ("Ainsdale", "Sandringham"), 0.12),
    Ward("Birkdale", "north", "PR8", ("Birkdale", "Hillside"), 0.13),
    Ward("Cambridge", "north", "PR9", ("Churchtown", "Hesketh Park"), 0.20),
    Ward("Dukes", "north", "PR8", ("Southport", "Lord Street"), 0.32),
    Ward("Kew", "north", "PR8", ("Kew", "Blowick"), 0.30),
    Ward("Meols", "north", "PR9", ("Crossens", "Banks Road"), 0.17),
    Ward("Norwood", "north", "PR9", ("Norwood", "Marshside"), 0.26),
    Ward("Harington", "north", "L37", ("Formby", "Freshfield"), 0.07),
    Ward("Ravenmeols", "north", "L37", ("Ravenmeols", "Altcar"), 0.17),
    Ward("Blundellsands", "central", "L23", ("Blundellsands", "Hightown"), 0.08),
    Ward("Church", "central", "L22", ("Waterloo", "Seaforth"), 0.30),
    Ward("Manor", "central", "L23", ("Thornton", "Ince Blundell"), 0.10),
    Ward("Molyneux", "central", "L31", ("Aintree", "Lydiate"), 0.16),
    Ward("Park", "central", "L31", ("Maghull", "Melling"), 0.13),
    Ward("Sudell", "central", "L31", ("Sudell", "Moss Side"), 0.18),
    Ward("Victoria", "central", "L23", ("Crosby", "Brighton-le-Sands"), 0.16),
    Ward("Derby", "south", "L20", ("Bootle", "Orrell Park"), 0.50),
    Ward("Ford", "south", "L21", ("Ford", "Ferndale"), 0.44),
    Ward("Linacre", "south", "L20", ("Linacre", "Bootle Strand"), 0.55),
    Ward("Litherland", "south", "L21", ("Litherland", "Seaforth Vale"), 0.42),
    Ward("Netherton and Orrell", "south", "L30", ("Netherton", "Orrell"), 0.44),
    Ward("St Oswald", "south", "L30", ("St Oswald", "Buckley Hill"), 0.40),
)

WARD_BY_NAME = {w.name: w for w in WARDS}

CROSS_BORDER_LAS: dict[str, tuple[tuple[str, str], ...]] = {
    # locality -> the neighbouring LAs whose children cross into it, with a postcode district
    "north": (("888", "PR4"), ("888", "L39")),  # Lancashire
    "central": (("888", "L39"), ("340", "L32"), ("341", "L9")),  # Lancashire, Knowsley, Liverpool
    "south": (("341", "L4"), ("341", "L9"), ("340", "L33"), ("344", "CH44")),  # Liverpool, Knowsley, Wirral
}
"""Neighbouring authorities: 340 Knowsley, 341 Liverpool, 344 Wirral, 888 Lancashire."""


def wards_in(locality: str) -> tuple[Ward, ...]:
    """The wards of one locality."""
    return tuple(w for w in WARDS if w.locality == locality)
