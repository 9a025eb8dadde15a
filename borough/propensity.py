"""Each pupil's latent absence: how much of the year they will miss, and how much unexplained.

Every pupil gets a target absence rate `rate` (absent sessions / possible sessions) and the
share of their non-holiday absence that will be unauthorised. The register generator
(`borough.registers`) then spends exactly that budget of sessions in realistic episodes, so the
year's measures are governed by the distribution drawn here.

Model (two components, the second a truncated logit-normal):

* **Disengaged** (severe absence). With probability sigmoid(SEVERE_BASE + Σ coefficients)
  a pupil misses half the year or more: rate = 0.505 + 0.47·Beta(1.3, 1.5) (mean ≈ 0.72).
  The coefficients were fitted by raking the expected severe-absence cohort of the generated
  population (seed 2024, scale 1.0) onto the strategy's 2023-24 table: 1.8 % of pupils, of
  whom FSM 62 %, SEN support 38 %, EHCP 18 %, early help 11 %, CIN 6 %, CP 3 %, looked after
  1.5 %, secondary age 90 %. Looked-after children come out with the smallest care
  coefficient: the strategy's CfC share (1.5 %) is barely above their 0.8 % prevalence
  (Virtual School oversight). `SEVERE` holds the fitted values; rerun the raking if the
  population model in `borough.pupils` changes.
* **Everyone else**: logit(rate) ~ Normal(μ, σ) with μ by age phase, year group, FSM, SEN,
  early help/social care and the school's own effect (σ = 1.15), with 2 % of pupils never
  absent; redrawn if it reaches 0.49 so severe absence comes only from the first component.
  μ was tuned on the generated registers so that the year lands on overall absence 7.8 %
  and persistent absence 22.6 %, with primary around 6 %, secondary around 9.7 % and
  special schools around 12 % (the familiar national shape). σ near 1 is close to the value
  that maximises PA for a given mean, so PA barely moves with σ; it was brought onto 22.6 %
  by fewer never-absent pupils and a slightly higher mean rate among the disengaged.

The unauthorised share rises with the rate (a pupil who misses 3 % is mostly ill; one who
misses 25 % is mostly unexplained), with FSM and with age; it was tuned so the borough's
absence splits 5.2 authorised / 2.6 unauthorised.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

# Care levels, mutually exclusive, in increasing order of involvement.
NONE, EARLY_HELP, CIN, CP, CLA = "none", "early_help", "cin", "cp", "cla"

SEVERE_BASE = -6.98
SEVERE = {
    "secondary_age": 2.061,
    "year": 0.16,  # per year group above 7, secondary age only
    "fsm": 1.332,
    "support": 1.453,
    "ehcp": 2.208,
    "special": -0.7,
    "ap": 2.2,
    EARLY_HELP: 1.822,
    CIN: 1.143,
    CP: 1.555,
    CLA: 0.302,
}

BASE_MU = {"primary": -3.52, "secondary": -3.21}
MU = {
    "year": 0.045,  # per year group above 7
    "reception": 0.12,
    "fsm": 0.42,
    "support": 0.28,
    "ehcp": 0.42,
    "special": 0.0,
    "ap": 1.0,
    EARLY_HELP: 0.45,
    CIN: 0.45,
    CP: 0.5,
    CLA: -0.05,
}
SIGMA = 1.15
NEVER_ABSENT = 0.02


@dataclass(frozen=True, slots=True)
class Propensity:
    """A pupil's absence budget: target rate, unauthorised share, and whether disengaged."""

    rate: float
    unauthorised_share: float
    severe: bool


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def severe_odds(year: int, school_phase: str, fsm: bool, sen: str, care: str) -> float:
    """Log-odds of being in the disengaged (severe absence) component."""
    z = SEVERE_BASE
    if year >= 7:
        z += SEVERE["secondary_age"] + SEVERE["year"] * (year - 7)
    if fsm:
        z += SEVERE["fsm"]
    if sen in ("support", "ehcp"):
        z += SEVERE[sen]
    if school_phase == "special":
        z += SEVERE["special"]
    elif school_phase == "alternative_provision":
        z += SEVERE["ap"]
    if care != NONE:
        z += SEVERE[care]
    return z


def _mu(year: int, school_phase: str, fsm: bool, sen: str, care: str, school_effect: float) -> float:
    mu = BASE_MU["secondary" if year >= 7 else "primary"] + school_effect
    if year >= 7:
        mu += MU["year"] * (year - 7)
    elif year == 0:
        mu += MU["reception"]
    if fsm:
        mu += MU["fsm"]
    if sen in ("support", "ehcp"):
        mu += MU[sen]
    if school_phase == "special":
        mu += MU["special"]
    elif school_phase == "alternative_provision":
        mu += MU["ap"]
    if care != NONE:
        mu += MU[care]
    return mu


def draw(
    rng: random.Random,
    *,
    year: int,
    school_phase: str,
    fsm: bool,
    sen: str,
    care: str,
    school_effect: float,
) -> Propensity:
    """Draw one pupil's absence propensity (see the module docstring for the model)."""
    if rng.random() < _sigmoid(severe_odds(year, school_phase, fsm, sen, care)):
        rate = 0.505 + 0.47 * rng.betavariate(1.3, 1.5)
        share = min(0.95, max(0.3, rng.gauss(0.57 + 0.05 * fsm, 0.12)))
        return Propensity(rate, share, True)
    if rng.random() < NEVER_ABSENT:
        return Propensity(0.0, 0.0, False)
    mu = _mu(year, school_phase, fsm, sen, care, school_effect)
    rate = 0.49
    for _ in range(8):
        rate = _sigmoid(mu + SIGMA * rng.gauss(0.0, 1.0))
        if rate < 0.49:
            break
    else:
        rate = 0.45
    logit = math.log(rate / (1.0 - rate))
    share_z = -1.72 + 0.6 * (logit + 2.6) + 0.25 * fsm + 0.2 * (year >= 9) + rng.gauss(0.0, 0.5)
    return Propensity(rate, _sigmoid(share_z), False)
