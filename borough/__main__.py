"""Command line for the synthetic borough.

    python -m borough load --ingest http://127.0.0.1:8001 --seed 2024 --scale 1.0 \\
        --from 2024-09-02 --to 2025-07-22 --batch 10000 --concurrency 4
    python -m borough figures --seed 2024 --scale 1.0 [--json]
    python -m borough generate --out DIR --seed 2024 --scale 0.1

``load`` exits 1 (printing the problem JSON) if any request is not 2xx or any mark is
rejected, and 2 if the ingest service cannot be reached. ``generate`` writes, per school, the
request bodies the loader would send (``school.json``, ``calendar.json``, ``pupils.json``,
``care.json``) and its marks as ``marks.csv`` in sending order (the CSV the marks endpoint
also accepts).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import httpx
import orjson

from borough.figures import compute, report
from borough.generate import DEFAULT_SEED, Borough
from borough.load import MAX_BATCH, LoadError, load


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2024-09-02") from exc


def _scale(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError("scale must be in (0, 1]")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m borough", description="The synthetic borough (SPEC §11)."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed (default 2024)")
        p.add_argument(
            "--scale", type=_scale, default=1.0, help="fraction of pupils, e.g. 0.05 (default 1.0)"
        )
        p.add_argument(
            "--from", dest="start", type=_date, help="first date of marks (default: start of year)"
        )
        p.add_argument("--to", dest="end", type=_date, help="last date of marks (default: end of year)")

    load_cmd = commands.add_parser("load", help="push the borough through the ingest API")
    common(load_cmd)
    load_cmd.add_argument("--ingest", default="http://127.0.0.1:8001", help="ingest base URL")
    load_cmd.add_argument("--batch", type=int, default=MAX_BATCH, help="marks per request (max 10000)")
    load_cmd.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    load_cmd.add_argument(
        "--period", choices=("week", "day"), default="week", help="load unit across schools"
    )
    load_cmd.add_argument("--no-progress", action="store_true", help="no progress bars")

    figures_cmd = commands.add_parser("figures", help="headline measures computed from the generator")
    common(figures_cmd)
    figures_cmd.add_argument("--json", action="store_true", help="JSON instead of a table")
    figures_cmd.add_argument("--no-signals", action="store_true", help="skip the rough signal counts")

    generate_cmd = commands.add_parser("generate", help="write request bodies and marks to files")
    common(generate_cmd)
    generate_cmd.add_argument("--out", type=Path, required=True, help="output directory")
    return parser


def _load(args: argparse.Namespace) -> int:
    try:
        stats = asyncio.run(
            load(
                args.ingest,
                seed=args.seed,
                scale=args.scale,
                start=args.start,
                end=args.end,
                batch=args.batch,
                concurrency=args.concurrency,
                period=args.period,
                progress=not args.no_progress,
            )
        )
    except LoadError as exc:
        print(f"load failed: {exc}", file=sys.stderr)
        print(orjson.dumps(exc.problem, option=orjson.OPT_INDENT_2).decode(), file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"load failed: cannot reach {args.ingest}: {exc!r}", file=sys.stderr)
        return 2
    print(stats.summary())
    return 0


def _figures(args: argparse.Namespace) -> int:
    fig = compute(args.seed, args.scale, args.start, args.end, signals=not args.no_signals)
    if args.json:
        print(orjson.dumps(fig.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(report(fig))
    return 0


def _generate(args: argparse.Namespace) -> int:
    out: Path = args.out
    borough = Borough(args.seed, args.scale)
    total = 0
    for year in borough.school_years():
        folder = out / year.school.urn
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "school.json").write_bytes(orjson.dumps(year.school.body(), option=orjson.OPT_INDENT_2))
        (folder / "calendar.json").write_bytes(orjson.dumps(year.calendar.body(), option=orjson.OPT_INDENT_2))
        pupils = {"pupils": [e.body() for e in year.enrolments]}
        (folder / "pupils.json").write_bytes(orjson.dumps(pupils, option=orjson.OPT_INDENT_2))
        care = {e.pupil.upn: e.pupil.care.body() for e in year.enrolments if e.pupil.care.any}
        (folder / "care.json").write_bytes(orjson.dumps(care, option=orjson.OPT_INDENT_2))
        with (folder / "marks.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("upn", "date", "session", "code"))
            for mark in year.marks(args.start, args.end):
                writer.writerow((mark.upn, mark.date.isoformat(), mark.session, mark.code))
                total += 1
    print(f"{len(borough.schools)} schools, {total:,} marks written to {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"load": _load, "figures": _figures, "generate": _generate}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
