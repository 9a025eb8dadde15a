"""The evidence pack for court (SPEC §7): JSON, and a printable HTML document from the same data.

Contents: the case and parents; the pupil (date of birth, compulsory school age) and school; the
*offence period* — by default from the start of the earliest to the end of the latest offence of
the case (``?from=&to=`` choose another; with no offence, the 10 weeks before the case opened) —
with the pupil's register for it at the case's school, every session's code, its meaning and
statistical category (``shared.codes``, date-effective) and the sums; the signals raised from the
start of the period; support offered and declined; penalty notices and payments; attendance
contracts with their non-compliance records; the other records (defences, convictions, ESO);
the history of moves; the deadlines; and the register snapshots taken when each notice was
issued or the prosecution began, each flagged when the register has since been amended.

The HTML is rendered with f-strings and ``html.escape`` on every value (Jinja2 is not a
dependency): one self-contained page with print styles, no scripts, no external resources.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from html import escape
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.legal import cases, views
from services.legal import tables as t
from services.legal import workflow as wf
from shared.codes import CodeError, lookup
from shared.csa import csa_end, csa_start
from shared.policy import Policy

SUPPORT_KINDS = {wf.RecordKind.SUPPORT_OFFERED.value, wf.RecordKind.SUPPORT_DECLINED.value}
CONTRACT_KINDS = {wf.RecordKind.CONTRACT_NON_COMPLIANCE.value}


def default_period(offences: list[Row[Any]], opened_on: dt.date) -> tuple[dt.date, dt.date]:
    live = [o for o in offences if not o.withdrawn] or offences
    if live:
        return min(o.period_from for o in live), max(o.period_to for o in live)
    return opened_on - dt.timedelta(weeks=10), opened_on


def _meaning(code: str, on: dt.date) -> str:
    try:
        return lookup(code, on).meaning
    except CodeError:
        return "(not a code in force on this date)"


def register_summary(items: list[dict[str, Any]], penalty_codes: tuple[str, ...]) -> dict[str, Any]:
    by = Counter(i["category"] for i in items)
    possible = by["present"] + by["aea"] + by["authorised"] + by["unauthorised"]
    return {
        "sessions": len(items),
        "possible": possible,
        "present": by["present"],
        "aea": by["aea"],
        "authorised": by["authorised"],
        "unauthorised": by["unauthorised"],
        "not_counted": by["not_possible"] + by["administrative"],
        "attendance_rate": (by["present"] + by["aea"]) / possible * 100 if possible else None,
        "penalty_code_sessions": sum(1 for i in items if i["code"] in penalty_codes),
        "codes": dict(sorted(Counter(i["code"] for i in items).items())),
    }


async def pack(
    conn: AsyncConnection,
    case: Row[Any],
    today: dt.date,
    now: dt.datetime,
    policy: Policy,
    start: dt.date | None = None,
    end: dt.date | None = None,
) -> dict[str, Any]:
    """The evidence pack of ``case`` as JSON-ready data."""
    body = await views.case_body(conn, case, today, policy)
    offences = (
        await conn.execute(
            select(t.offences).where(t.offences.c.upn == case.upn).order_by(t.offences.c.met_on)
        )
    ).all()
    period_from, period_to = default_period(list(offences), case.opened_on)
    period_from, period_to = start or period_from, end or period_to
    register = await cases.register_between(conn, case.upn, case.school_urn, period_from, period_to)
    for item in register:
        item["meaning"] = _meaning(item["code"], dt.date.fromisoformat(item["date"]))
    p = (await conn.execute(select(t.pupils).where(t.pupils.c.upn == case.upn))).first()
    school = (await conn.execute(select(t.schools).where(t.schools.c.urn == case.school_urn))).first()
    cla = (await conn.execute(select(t.care.c.cla).where(t.care.c.upn == case.upn))).scalar_one_or_none()
    s = t.signals.c
    signals = await conn.execute(
        select(t.signals)
        .where(s.upn == case.upn, s.occurred_on >= period_from)
        .order_by(s.occurred_on, s.type)
    )
    snapshots = []
    for snap in await conn.execute(
        select(t.evidence_snapshots)
        .where(t.evidence_snapshots.c.case_id == case.id)
        .order_by(t.evidence_snapshots.c.taken_at)
    ):
        current = await cases.register_between(
            conn, case.upn, case.school_urn, snap.period_from, snap.period_to
        )
        snapshots.append(
            {
                "taken_for": snap.taken_for,
                "taken_at": snap.taken_at.isoformat(),
                "period": {"from": snap.period_from.isoformat(), "to": snap.period_to.isoformat()},
                "amended_since": current != snap.items,
                "register": snap.items,
            }
        )
    moves = [h for h in body["history"] if h["to"] is not None]
    records = body["records"]
    contracts = []
    for i, m in enumerate(moves):
        if m["to"] != wf.State.ATTENDANCE_CONTRACT.value:
            continue
        ended = moves[i + 1]["effective_on"] if i + 1 < len(moves) else None
        contracts.append(
            {
                "from": m["effective_on"],
                "review_on": m["data"].get("review_on"),
                "ended_on": ended,
                "reason": m["reason"],
                "by": m["by"],
                "non_compliance": [
                    r
                    for r in records
                    if r["kind"] in CONTRACT_KINDS
                    and r["on"] >= m["effective_on"]
                    and (ended is None or r["on"] <= ended)
                ],
            }
        )
    support = [r for r in records if r["kind"] in SUPPORT_KINDS] + [
        {
            "kind": "notice_to_improve",
            "on": m["effective_on"],
            "text": m["reason"],
            "data": m["data"],
            "recorded_by": m["by"],
        }
        for m in moves
        if m["to"] == wf.State.NOTICE_TO_IMPROVE.value
    ]
    dob = p.date_of_birth if p else None
    return {
        "generated_at": now.isoformat(),
        "generated_on": today.isoformat(),
        "policy_version": policy.version,
        "case": {
            k: body[k]
            for k in (
                "id",
                "upn",
                "school_urn",
                "state",
                "open",
                "opened_on",
                "opened_by",
                "trigger",
                "lead_officer",
                "closed_on",
                "parents",
            )
        },
        "pupil": {
            "upn": case.upn,
            "date_of_birth": dob.isoformat() if dob else None,
            "compulsory_school_age": {"from": csa_start(dob).isoformat(), "to": csa_end(dob).isoformat()}
            if dob
            else None,
            "home_la_code": p.home_la_code if p else None,
            "ehcp_la_code": p.ehcp_la_code if p else None,
            "looked_after": bool(cla),
        },
        "school": {
            "urn": case.school_urn,
            "name": school.name,
            "la_code": school.la_code,
            "type": school.type,
            "phase": school.phase,
        }
        if school
        else {"urn": case.school_urn},
        "responsibilities": body["responsibilities"],
        "offence_period": {"from": period_from.isoformat(), "to": period_to.isoformat()},
        "offences": body["offences"],
        "register": register,
        "register_summary": register_summary(register, policy.penalty_threshold.codes),
        "signals": [
            {
                "type": x.type,
                "occurred_on": x.occurred_on.isoformat(),
                "school_urn": x.school_urn,
                "episode": x.episode,
                "withdrawn": x.withdrawn,
                "detail": x.detail,
            }
            for x in signals
        ],
        "support": sorted(support, key=lambda r: str(r["on"])),
        "penalty_notices": body["penalty_notices"],
        "contracts": contracts,
        "records": [r for r in records if r["kind"] not in SUPPORT_KINDS | CONTRACT_KINDS],
        "history": body["history"],
        "deadlines": body["deadlines"],
        "snapshots": snapshots,
    }


# --- printable document -----------------------------------------------------------------------


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _table(headers: list[str], rows: list[list[Any]], empty: str = "None recorded.") -> str:
    if not rows:
        return f"<p class='empty'>{_e(empty)}</p>"
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pounds(value: Any) -> str:
    return "" if value is None else f"£{value}"


def render_html(ev: dict[str, Any]) -> str:
    """The pack as one printable HTML page; every value escaped."""
    case, pupil, school = ev["case"], ev["pupil"], ev["school"]
    summary = ev["register_summary"]
    rate = summary["attendance_rate"]
    csa = pupil["compulsory_school_age"] or {}
    parents = ", ".join(f"{p['name'] or '(name not recorded)'} ({p['id']})" for p in case["parents"])
    facts = [
        ["Case", case["id"]],
        ["State", case["state"]],
        ["Opened", f"{case['opened_on']} by {case['opened_by']} ({case['trigger']})"],
        ["Lead officer", case["lead_officer"] or "(not assigned)"],
        ["Pupil (UPN)", pupil["upn"]],
        ["Date of birth", pupil["date_of_birth"]],
        ["Compulsory school age", f"{csa.get('from', '?')} to {csa.get('to', '?')}"],
        ["Parents", parents],
        [
            "School",
            f"{school.get('name', '')} (URN {school['urn']}, LA {school.get('la_code', '?')}, "
            f"{school.get('type', '?')})",
        ],
        ["Home LA", pupil["home_la_code"]],
        ["Offence period", f"{ev['offence_period']['from']} to {ev['offence_period']['to']}"],
        ["Generated", f"{ev['generated_at']} (policy {ev['policy_version']})"],
    ]
    facts_html = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    register = _table(
        ["Date", "Session", "Code", "Meaning", "Category"],
        [[r["date"], r["session"], r["code"], r["meaning"], r["category"]] for r in ev["register"]],
        "No register marks held for this period.",
    )
    sums = _table(
        [
            "Sessions",
            "Possible",
            "Present",
            "AEA",
            "Authorised",
            "Unauthorised",
            "Not counted",
            "Attendance %",
            "G/N/O/U sessions",
        ],
        [
            [
                summary["sessions"],
                summary["possible"],
                summary["present"],
                summary["aea"],
                summary["authorised"],
                summary["unauthorised"],
                summary["not_counted"],
                "" if rate is None else f"{rate:.1f}",
                summary["penalty_code_sessions"],
            ]
        ],
    )
    offences = _table(
        ["Source", "Met on", "Period", "Sessions", "Of which G", "Withdrawn"],
        [
            [
                o["source"],
                o["met_on"],
                f"{o['period']['from']} to {o['period']['to']}",
                o["sessions"],
                o["holiday_sessions"],
                "yes" if o["withdrawn"] else "no",
            ]
            for o in ev["offences"]
        ],
    )
    signals = _table(
        ["Signal", "Occurred on", "School", "Withdrawn"],
        [
            [s["type"], s["occurred_on"], s["school_urn"], "yes" if s["withdrawn"] else ""]
            for s in ev["signals"]
        ],
    )
    support = _table(
        ["Date", "Kind", "Detail", "By"],
        [[s["on"], s["kind"], s["text"], s.get("recorded_by", "")] for s in ev["support"]],
    )
    notices = _table(
        [
            "Issued",
            "Parent",
            "No.",
            "By day 21",
            "By day 28",
            "Reduced rate until",
            "Pay by",
            "Status",
            "Paid on",
            "Paid",
        ],
        [
            [
                n["issued_on"],
                n["parent_id"],
                n["sequence"],
                _pounds(n["amount_if_paid_by_day_21"]),
                _pounds(n["amount_if_paid_by_day_28"]),
                n["pay_reduced_by"] or "(no reduced rate)",
                n["pay_by"],
                n["status"],
                n["paid_on"],
                _pounds(n["amount_paid"]),
            ]
            for n in ev["penalty_notices"]
        ],
    )
    contract_rows = [
        [
            c["from"],
            c["review_on"],
            c["ended_on"] or "(current)",
            c["reason"],
            "; ".join(f"{r['on']}: {r['text']}" for r in c["non_compliance"]) or "none recorded",
        ]
        for c in ev["contracts"]
    ]
    contracts = _table(["From", "Review on", "Ended", "Reason", "Non-compliance"], contract_rows)
    records = _table(
        ["Date", "Kind", "Detail", "By"],
        [[r["on"], r["kind"], r["text"], r["recorded_by"]] for r in ev["records"]],
    )
    history = _table(
        ["Effective", "Recorded at", "By", "Event", "From", "To", "Reason", "Rule relied on"],
        [
            [h["effective_on"], h["at"], h["by"], h["kind"], h["from"], h["to"], h["reason"], h["rule"]]
            for h in ev["history"]
        ],
    )
    deadlines = _table(
        ["Due", "Deadline", "Status", "Overdue"],
        [[d["due_on"], d["kind"], d["status"], "yes" if d["overdue"] else ""] for d in ev["deadlines"]],
    )
    snapshots = _table(
        ["Taken for", "Taken at", "Period", "Sessions", "Amended since"],
        [
            [
                s["taken_for"],
                s["taken_at"],
                f"{s['period']['from']} to {s['period']['to']}",
                len(s["register"]),
                "YES" if s["amended_since"] else "no",
            ]
            for s in ev["snapshots"]
        ],
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Evidence pack — case {_e(case["id"])}</title>
<style>
body{{font-family:Georgia,serif;font-size:11pt;margin:2em;color:#000}}
h1{{font-size:16pt}} h2{{font-size:13pt;margin-top:1.5em;border-bottom:1px solid #000}}
table{{border-collapse:collapse;width:100%;margin:.5em 0}}
th,td{{border:1px solid #555;padding:2px 6px;text-align:left;vertical-align:top}}
th{{background:#eee}} .empty{{font-style:italic}}
@media print{{body{{margin:0}} h2{{page-break-after:avoid}} tr{{page-break-inside:avoid}}}}
</style></head><body>
<h1>School attendance evidence pack</h1>
<table class="facts">{facts_html}</table>
<h2>Register for the offence period</h2>{sums}{register}
<h2>Offences (penalty threshold met or recorded by the LA)</h2>{offences}
<h2>Signals raised</h2>{signals}
<h2>Support offered and declined</h2>{support}
<h2>Penalty notices</h2>{notices}
<h2>Attendance contracts</h2>{contracts}
<h2>Other records</h2>{records}
<h2>Case history</h2>{history}
<h2>Statutory deadlines</h2>{deadlines}
<h2>Register snapshots</h2>{snapshots}
</body></html>
"""
