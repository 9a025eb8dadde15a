"""``python -m bench [ingest|rules|notifications|dashboard|audit|borough|all] [options]``

``make bench`` runs ``all``.
"""

from __future__ import annotations

import os
import sys

from bench import audit, borough, dashboard, ingest, notifications, rules, summary


def main() -> None:
    args = sys.argv[1:]
    which = args.pop(0) if args and not args[0].startswith("-") else "all"
    if which in ("ingest", "all"):
        ingest.main(args if which == "ingest" else [])
    if which in ("rules", "all"):
        rules.main(args if which == "rules" else [])
        if which == "all" and os.environ.get("ROLLCALL_BENCH_POSTGRES_URL"):
            rules.main(["--only", "get", "--postgres"])  # the reads on the deployment database too
    if which in ("notifications", "all"):
        notifications.main(args if which == "notifications" else [])
        if which == "all":  # issue 8: the same latencies while ingest takes 5,000 marks/s
            # on the deployment database when there is one (`make bench` sets it): on SQLite,
            # ingest itself falls behind 5,000 marks/s (README "Benchmarks: notifications").
            postgres = ["--postgres"] if os.environ.get("ROLLCALL_BENCH_POSTGRES_URL") else []
            notifications.main(["--samples", "300", "--background-rate", "5000", *postgres])
    if which in ("dashboard", "all"):
        dashboard.main(args if which == "dashboard" else [])
    if which in ("audit", "all"):
        audit.main(args if which == "audit" else [])
    if which in ("borough", "all"):
        borough.main(args if which == "borough" else [])
    if which not in ("ingest", "rules", "notifications", "dashboard", "audit", "borough", "all"):
        raise SystemExit(
            f"unknown benchmark {which!r}: ingest, rules, notifications, dashboard, audit, borough or all"
        )
    print(summary.render())


if __name__ == "__main__":
    main()
