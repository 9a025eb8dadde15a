"""The cyclic garbage collector as every Rollcall process runs it (services and their worker
processes): a module of its own so that a worker process does not import the web stack for it."""

from __future__ import annotations

import gc

GC_THRESHOLDS = (50_000, 20, 20)
"""The cyclic collector's thresholds in each service (Python's defaults: 700, 10, 10). A young
collection every 700 new container objects suits a program whose objects die young; a service
holds a whole batch (10,000 marks: their dicts, tuples and rows) until it commits, so most young
collections found nothing to free and moved it all up a generation, to be walked again there.
With 50,000, ingest spent 1.73-1.80 s of CPU per 100,000 marks against 1.93-2.00 s (issue 8,
``python -m bench ingest``, runs alternated). Memory is reference-counted as before: only cycles
wait longer."""


def tune_collector() -> None:
    """Move what exists at startup (modules, the app and its routes, pydantic and SQLAlchemy
    structures: it lives as long as the process) out of the cyclic collector's reach, once per
    process, so a full collection pauses the event loop ~15 ms instead of ~80-100 ms (issue 8: at
    100 attendance reads/s those pauses alone took p99 from 16 ms to 58 ms). Once: a test process
    starts many apps, and only the first's objects are frozen. Then the collector runs less often
    (``GC_THRESHOLDS``)."""
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
