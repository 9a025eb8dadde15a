"""A synthetic Sefton: a deterministic, Sefton-sized local authority for demos and benchmarks.

SPEC §11. About 100 schools and 38,000 pupils with the 2024-25 calendar and a full year of
register marks whose results land on the LA's attendance strategy figures (overall absence
7.8 %, persistent absence 22.6 %, severe absence 1.7–1.9 % with the strategy's cohort shape).

* `borough.generate` — `Borough(seed, scale)`: schools, calendars, rolls and registers, one
  school at a time;
* `borough.figures` — the headline measures computed straight from the generator;
* `borough.load` — pushes it all through the public ingest API as MIS systems would;
* ``python -m borough {load,figures,generate}`` — the command line.
"""

from borough.generate import Borough

__all__ = ["Borough"]
