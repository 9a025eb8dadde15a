"""The notifications API (CONTRACT.md "notifications") plus the delivery queue for operators.

Who may do what (CONTRACT is silent beyond the scope names; decisions):

* ``PUT /v1/recipients/{id}``, ``PUT /v1/allocations/schools/{urn}``, every ``/v1/deliveries``
  route and all-alerts subscriptions need ``admin``.
* ``PUT /v1/allocations/pupils/{upn}`` needs ``care:write`` (the social-care system that pushes care
  status to ingest also allocates social workers and Early Help leads) or ``admin``. As at ingest,
  care is LA-wide: a token with a ``schools`` claim is refused (403); a token with an ``la`` claim
  reads and writes allocations only of pupils known here to live in that LA (any other UPN, known
  or not, reads as unallocated and is a 403 to write); a social worker's or Early Help lead's own
  token reads only their allocated pupils' allocations (others read as unallocated) and writes none.
  Every change is published on ``rollcall.directory.v1`` (``directory``).
* **A recipient's own token** — a token whose ``sub`` is a recipient id — reads, streams and
  acknowledges only that recipient's alerts (another recipient's alert is a 404, exactly like a
  missing one) and subscribes only for itself. Any other token with ``alerts:read`` is a system
  (a social-care case system, a dashboard): it sees the alerts of the schools its ``schools``
  claim lists, of its ``la`` claim's schools, or all of them when it has neither (LA-wide, as
  everywhere in the contract), and an LA-wide system may subscribe on a recipient's behalf.
  ``admin`` sees everything.
* Lists are cursor-paginated by ``seq``, oldest first; ``next_cursor`` pages forward and polls.

Errors are RFC 9457 problems: 401/403 as everywhere, 404 for an alert, subscription, recipient
or delivery the caller cannot see, 409 for retrying a delivered delivery, 422 for invalid bodies
(an allocation naming an unknown recipient or one of the wrong role lists each in ``errors``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import Select, delete, func, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from services.notifications import alerts, directory, routing, schemas, worker
from services.notifications import tables as t
from shared import directory as shared_directory
from shared.audit import Audit, record_now
from shared.auth import Principal, Scope, forbidden, require, require_la_admin
from shared.db import upsert
from shared.fields import IsoDate
from shared.problems import Problem, problem_responses
from shared.service import Runtime

# The directory and the delivery queue belong to the LA running Rollcall (the policy's LA), never to
# a school or another LA: a ``schools`` token or another LA's is refused (403).
Admin = Annotated[Principal, Depends(require_la_admin())]
Reader = Annotated[Principal, Depends(require(Scope.ALERTS_READ))]
Writer = Annotated[Principal, Depends(require(Scope.ALERTS_WRITE))]
CareWriter = Annotated[Principal, Depends(require(Scope.CARE_WRITE))]
RecipientPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,99}$")]
UpnPath = Annotated[str, Path(pattern=r"^[A-Z0-9]{13}$")]
UrnPath = Annotated[str, Path(pattern=r"^[0-9]{6,7}$")]
IdPath = Annotated[str, Path(min_length=1, max_length=64)]
MAX_SEQ = 2**63 - 1  # a BIGINT: larger numbers would overflow the database driver
Cursor = Annotated[int | None, Query(ge=0, le=MAX_SEQ)]
PAGE = 500

PROBLEMS = problem_responses(
    {
        400: "Malformed body",
        401: "No or invalid token",
        403: "Not allowed",
        404: "Not found",
        422: "Invalid request",
    }
)


def rt_of(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def not_found(what: str) -> Problem:
    return Problem(404, "not-found", "Not found", f"no {what} with this id that you may see")


def invalid(field: str, code: str, detail: str) -> Problem:
    error = {"index": None, "field": field, "code": code, "detail": detail}
    return Problem(422, "validation", "Request is not valid", detail, errors=[error])


def is_admin(principal: Principal) -> bool:
    return Scope.ADMIN.value in principal.scopes


@dataclass(frozen=True, slots=True)
class Viewer:
    """Which alerts a caller may see (see the module docstring)."""

    sub: str
    admin: bool
    recipient: str | None  # set: a recipient's own token, only its alerts
    schools: frozenset[str] | None
    la: str | None

    @property
    def la_wide_system(self) -> bool:
        return self.recipient is None and self.schools is None and self.la is None

    def alerts(self, q: Select[Any]) -> Select[Any]:
        a = t.alerts.c
        if self.recipient is not None:
            return q.where(a.recipient == self.recipient)
        if self.schools is not None:
            q = q.where(a.school_urn.in_(sorted(self.schools)))
        if self.la is not None:
            q = q.where(a.school_urn.in_(select(t.schools.c.urn).where(t.schools.c.la_code == self.la)))
        return q


async def viewer_of(conn: AsyncConnection, principal: Principal) -> Viewer:
    if is_admin(principal):  # still bounded by its schools / la claims, like every other token
        return Viewer(principal.sub, True, None, principal.schools, principal.la)
    own = (await conn.execute(select(t.recipients.c.id).where(t.recipients.c.id == principal.sub))).first()
    if own is not None:
        return Viewer(principal.sub, False, principal.sub, None, None)
    return Viewer(principal.sub, False, None, principal.schools, principal.la)


def _iso(value: dt.datetime | dt.date | None) -> str | None:
    if isinstance(value, dt.datetime):
        return alerts.aware(value).isoformat()
    return value.isoformat() if value is not None else None


def alert_body(r: Row[Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": r.id,
        "signal": r.signal,
        "pupil": {"upn": r.upn, "school_urn": r.school_urn},
        "recipient": r.recipient,
        "reason": r.reason,
        "status": r.status,
        "episode": r.episode,
        "occurred_on": _iso(r.occurred_on),
        "raised_at": _iso(r.raised_at),
        "evidence_url": r.evidence_url,
        "delivered_at": _iso(r.delivered_at),
        "acknowledged_at": _iso(r.acknowledged_at),
        "acknowledged_by": r.acknowledged_by,
        "escalate_at": _iso(r.escalate_at),
        "escalated_at": _iso(r.escalated_at),
        "escalated_to": r.escalated_to,
        "escalated_from": r.escalated_from,
        "withdrawn_at": _iso(r.withdrawn_at),
    }
    if r.detail.get("deadline"):
        body["deadline"] = r.detail["deadline"]
    return body


def recipient_body(r: Row[Any]) -> dict[str, Any]:
    return {"id": r.id, "name": r.name, "role": r.role, "email": r.email, "la_code": r.la_code,
            "updated_at": _iso(r.updated_at)}  # fmt: skip


def subscription_body(r: Row[Any]) -> dict[str, Any]:
    """A subscription as answered: never its secret."""
    return {"id": r.id, "url": r.url, "recipient": r.recipient, "types": r.types,
            "created_by": r.created_by, "created_at": _iso(r.created_at)}  # fmt: skip


def delivery_body(r: Row[Any]) -> dict[str, Any]:
    return {
        "id": r.seq,
        "alert_id": r.alert_id,
        "channel": r.channel,
        "target": r.target,
        "address": r.address,
        "status": r.status,
        "attempts": r.attempts,
        "next_attempt_at": _iso(r.next_attempt_at) if r.status == "pending" else None,
        "created_at": _iso(r.created_at),
        "delivered_at": _iso(r.delivered_at),
        "last_status": r.last_status,
        "last_error": r.last_error,
    }


async def _recipient_roles(conn: AsyncConnection, ids: list[str]) -> dict[str, str]:
    rows = await conn.execute(
        select(t.recipients.c.id, t.recipients.c.role).where(t.recipients.c.id.in_(ids))
    )
    return {r.id: r.role for r in rows}


async def _check_allocations(
    conn: AsyncConnection, wanted: dict[str, tuple[str | None, routing.Role]]
) -> None:
    """Every named recipient must exist and have the field's role; 422 lists each that does not."""
    roles = await _recipient_roles(conn, [rid for rid, _ in wanted.values() if rid])
    errors = []
    for field, (rid, role) in wanted.items():
        if rid is None:
            continue
        if rid not in roles:
            detail = f"no recipient {rid!r}: PUT /v1/recipients/{{id}} first"
            errors.append({"index": None, "field": field, "code": "unknown_recipient", "detail": detail})
        elif roles[rid] != role:
            detail = f"recipient {rid!r} has role {roles[rid]}, not {role.value}"
            errors.append({"index": None, "field": field, "code": "wrong_role", "detail": detail})
    if errors:
        raise Problem(
            422, "validation", "Request is not valid", f"{len(errors)} invalid field(s)", errors=errors
        )


async def _school_reach(conn: AsyncConnection, principal: Principal, urn: str) -> None:
    """403 for a school outside the token's ``la`` (as far as this service knows the school's LA)."""
    la = (await conn.execute(select(t.schools.c.la_code).where(t.schools.c.urn == urn))).scalar_one_or_none()
    if not principal.may_act_for_school(urn, la):
        raise forbidden("the token may not act for this school")


def _local_host(url: str) -> bool:
    """Whether a URL names this machine or a link-local address (cloud metadata endpoints): refused
    in production so a subscription cannot point the service at itself. Private ranges are allowed:
    an LA's case system usually lives on its own network."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast


def add_routes(app: FastAPI) -> None:
    router = APIRouter(prefix="/v1", responses=PROBLEMS)

    # --- directory ---------------------------------------------------------------------------

    @router.put("/recipients/{id}", tags=["directory"])
    async def put_recipient(
        id: RecipientPath, body: schemas.RecipientBody, request: Request, _: Admin
    ) -> dict[str, Any]:
        """Create or replace a recipient (a person, or with ``la_code`` an LA's inbox for the role)."""
        rt = rt_of(request)
        row = {"id": id, **body.model_dump(), "updated_at": rt.now()}
        async with rt.engine.begin() as conn:
            await upsert(conn, t.recipients, [row], ["id"])
            stored = (await conn.execute(select(t.recipients).where(t.recipients.c.id == id))).one()
            await directory.publish(conn, [directory.recipient_event(id, stored.role, stored.la_code)])
        rt.relay.wake()
        return recipient_body(stored)

    @router.get("/recipients", tags=["directory"])
    async def list_recipients(request: Request, _: Admin, role: routing.Role | None = None) -> dict[str, Any]:
        """Every recipient (optionally of one role)."""
        q = select(t.recipients).order_by(t.recipients.c.id)
        if role is not None:
            q = q.where(t.recipients.c.role == role.value)
        async with rt_of(request).reads.connect() as conn:
            rows = (await conn.execute(q)).all()
        return {"items": [recipient_body(r) for r in rows]}

    @router.get("/recipients/{id}", tags=["directory"])
    async def get_recipient(id: RecipientPath, request: Request, principal: Reader) -> dict[str, Any]:
        """A recipient: ``admin``, or the recipient's own token."""
        if not is_admin(principal) and principal.sub != id:
            raise not_found("recipient")
        async with rt_of(request).reads.connect() as conn:
            row = (await conn.execute(select(t.recipients).where(t.recipients.c.id == id))).first()
        if row is None:
            raise not_found("recipient")
        return recipient_body(row)

    @router.get("/recipients/{id}/pupils", tags=["directory"])
    async def allocated_pupils(
        id: RecipientPath, request: Request, principal: Reader, audit: Audit
    ) -> dict[str, Any]:
        """The pupils allocated to a social worker or Early Help lead: ``admin``, or their own token.
        The dashboard uses it to show a social worker only their own pupils."""
        if not is_admin(principal) and principal.sub != id:
            raise not_found("recipient")
        a = t.pupil_allocations.c
        async with rt_of(request).reads.connect() as conn:
            row = (await conn.execute(select(t.recipients).where(t.recipients.c.id == id))).first()
            if row is None:
                raise not_found("recipient")
            q = select(a.upn).where(or_(a.social_worker == id, a.early_help == id)).order_by(a.upn)
            upns = (await conn.execute(q)).scalars().all()
        audit.add(upns=upns)
        return {"recipient": id, "role": row.role, "pupils": list(upns)}

    async def _care_reach(conn: AsyncConnection, principal: Principal, upn: str) -> bool:
        """Whether a ``care:write`` caller may see this pupil's allocation (see the module docstring)."""
        if is_admin(principal):
            return True
        if principal.schools is not None:
            raise forbidden("allocations are LA-wide social care, not a school's token")
        own = (
            await conn.execute(select(t.recipients.c.role).where(t.recipients.c.id == principal.sub))
        ).first()
        if own is not None and own.role in shared_directory.RESTRICTED_ROLES:
            a = t.pupil_allocations.c
            q = select(a.upn).where(
                a.upn == upn, or_(a.social_worker == principal.sub, a.early_help == principal.sub)
            )
            return (await conn.execute(q)).first() is not None
        if principal.la is not None:
            p = t.pupils.c
            q = select(p.upn).where(p.upn == upn, p.home_la_code == principal.la)
            return (await conn.execute(q)).first() is not None
        return True

    @router.put("/allocations/pupils/{upn}", tags=["directory"])
    async def put_pupil_allocation(
        upn: UpnPath, body: schemas.PupilAllocationBody, request: Request, principal: CareWriter, audit: Audit
    ) -> dict[str, Any]:
        """Replace the pupil's allocated social worker and Early Help lead (null clears one)."""
        rt = rt_of(request)
        if principal.schools is not None:
            raise forbidden("allocations are LA-wide social care, not a school's token")
        async with rt.engine.begin() as conn:
            own = await conn.execute(select(t.recipients.c.role).where(t.recipients.c.id == principal.sub))
            role = own.scalar_one_or_none()
            if not is_admin(principal) and role in shared_directory.RESTRICTED_ROLES:
                raise forbidden("a social worker's token does not allocate pupils")
            if not await _care_reach(conn, principal, upn):
                raise forbidden("the token may allocate only pupils of its LA")
            wanted = {
                "social_worker": (body.social_worker, routing.Role.SOCIAL_WORKER),
                "early_help": (body.early_help, routing.Role.EARLY_HELP),
            }
            await _check_allocations(conn, wanted)
            row = {
                "upn": upn,
                "social_worker": body.social_worker,
                "early_help": body.early_help,
                "updated_at": rt.now(),
            }
            await upsert(conn, t.pupil_allocations, [row], ["upn"])
            await directory.publish(
                conn, [directory.allocation_event(upn, body.social_worker, body.early_help)]
            )
        rt.relay.wake()
        return {"upn": upn, "social_worker": body.social_worker, "early_help": body.early_help}

    @router.get("/allocations/pupils/{upn}", tags=["directory"])
    async def get_pupil_allocation(
        upn: UpnPath, request: Request, principal: CareWriter, audit: Audit
    ) -> dict[str, Any]:
        """The pupil's allocation; a pupil the caller may not see reads exactly like one never allocated."""
        async with rt_of(request).reads.connect() as conn:
            q = select(t.pupil_allocations).where(t.pupil_allocations.c.upn == upn)
            row = (await conn.execute(q)).first() if await _care_reach(conn, principal, upn) else None
        return {"upn": upn, "social_worker": row.social_worker if row else None,
                "early_help": row.early_help if row else None}  # fmt: skip

    @router.put("/allocations/schools/{urn}", tags=["directory"])
    async def put_school_allocation(
        urn: UrnPath, body: schemas.SchoolAllocationBody, request: Request, principal: Admin
    ) -> dict[str, Any]:
        """Name the school's School Attendance Officer."""
        rt = rt_of(request)
        async with rt.engine.begin() as conn:
            await _school_reach(conn, principal, urn)
            await _check_allocations(
                conn, {"attendance_officer": (body.attendance_officer, routing.Role.ATTENDANCE_OFFICER)}
            )
            row = {"urn": urn, "attendance_officer": body.attendance_officer, "updated_at": rt.now()}
            await upsert(conn, t.school_allocations, [row], ["urn"])
        return {"urn": urn, "attendance_officer": body.attendance_officer}

    @router.get("/allocations/schools/{urn}", tags=["directory"])
    async def get_school_allocation(urn: UrnPath, request: Request, principal: Admin) -> dict[str, Any]:
        async with rt_of(request).reads.connect() as conn:
            await _school_reach(conn, principal, urn)
            q = select(t.school_allocations).where(t.school_allocations.c.urn == urn)
            row = (await conn.execute(q)).first()
        return {"urn": urn, "attendance_officer": row.attendance_officer if row else None}

    # --- subscriptions -----------------------------------------------------------------------

    @router.post("/subscriptions", status_code=201, tags=["subscriptions"])
    async def create_subscription(
        body: schemas.SubscriptionBody, request: Request, principal: Writer
    ) -> dict[str, Any]:
        """Signed webhooks (CONTRACT "Webhook delivery") for a recipient's alerts, or all (admin)."""
        rt = rt_of(request)
        if rt.settings.env == "production":
            if not body.url.startswith("https://"):
                raise invalid("url", "https_required", "webhook URLs must be https in production")
            if _local_host(body.url):
                raise invalid(
                    "url", "local_address", "webhook URLs may not name this host or a link-local address"
                )
        async with rt.engine.begin() as conn:
            viewer = await viewer_of(conn, principal)
            # Deliveries are not filtered by school: only an unbounded token may subscribe for others.
            unbounded = viewer.schools is None and viewer.la is None
            if body.recipient is None:
                if not (viewer.admin and unbounded):
                    raise forbidden("a subscription to every alert needs an LA-wide admin token")
            else:
                if not (
                    (viewer.admin and unbounded)
                    or viewer.recipient == body.recipient
                    or viewer.la_wide_system
                ):
                    raise forbidden("the token may subscribe only to its own alerts")
                if not await _recipient_roles(conn, [body.recipient]):
                    raise invalid("recipient", "unknown_recipient", f"no recipient {body.recipient!r}")
            row = {
                "id": str(uuid.uuid4()),
                "url": body.url,
                "secret": body.secret,
                "recipient": body.recipient,
                "types": body.types,
                "created_by": principal.sub,
                "created_at": rt.now(),
            }
            await conn.execute(t.subscriptions.insert(), [row])
            stored = (
                await conn.execute(select(t.subscriptions).where(t.subscriptions.c.id == row["id"]))
            ).one()
        return subscription_body(stored)

    def _own_subscriptions(q: Select[Any], principal: Principal) -> Select[Any]:
        s = t.subscriptions.c
        return (
            q
            if is_admin(principal)
            else q.where((s.created_by == principal.sub) | (s.recipient == principal.sub))
        )

    @router.get("/subscriptions", tags=["subscriptions"])
    async def list_subscriptions(request: Request, principal: Reader) -> dict[str, Any]:
        """The caller's subscriptions (made by it or for it; all with ``admin``), without secrets."""
        q = _own_subscriptions(select(t.subscriptions).order_by(t.subscriptions.c.created_at), principal)
        async with rt_of(request).reads.connect() as conn:
            rows = (await conn.execute(q)).all()
        return {"items": [subscription_body(r) for r in rows]}

    @router.delete("/subscriptions/{id}", status_code=204, tags=["subscriptions"])
    async def delete_subscription(id: IdPath, request: Request, principal: Writer) -> Response:
        """Stop a subscription; its pending deliveries are dead-lettered."""
        rt = rt_of(request)
        q = _own_subscriptions(select(t.subscriptions.c.id).where(t.subscriptions.c.id == id), principal)
        async with rt.engine.begin() as conn:
            if (await conn.execute(q)).first() is None:
                raise not_found("subscription")
            await conn.execute(delete(t.subscriptions).where(t.subscriptions.c.id == id))
            d = t.deliveries.c
            await conn.execute(
                update(t.deliveries)
                .where(d.channel == "webhook", d.target == id, d.status == "pending")
                .values(status="dead", last_error="subscription deleted")
            )
        return Response(status_code=204)

    # --- alerts ------------------------------------------------------------------------------

    @router.get("/alerts", tags=["alerts"])
    async def list_alerts(
        request: Request, principal: Reader, audit: Audit,
        recipient: Annotated[str | None, Query(max_length=100)] = None,
        status: Annotated[str | None, Query(pattern="^(" + "|".join(alerts.STATUSES) + ")$")] = None,
        signal: Annotated[str | None, Query(max_length=60)] = None,
        upn: Annotated[str | None, Query(max_length=13)] = None,
        school: Annotated[str | None, Query(pattern=r"^[0-9]{6,7}$")] = None,
        occurred_on: Annotated[IsoDate | None, Query(description="the session's date, e.g. today")] = None,
        cursor: Cursor = None,
        limit: Annotated[int, Query(ge=1, le=PAGE)] = 100,
    ) -> dict[str, Any]:  # fmt: skip
        """Alerts the caller may see, oldest first; ``next_cursor`` pages forward (and polls)."""
        a = t.alerts.c
        q = select(t.alerts).order_by(a.seq).limit(limit)
        if cursor is not None:
            q = q.where(a.seq > cursor)
        for column, value in ((a.recipient, recipient), (a.status, status), (a.signal, signal), (a.upn, upn),
                              (a.school_urn, school), (a.occurred_on, occurred_on)):  # fmt: skip
            if value is not None:
                q = q.where(column == value)
        async with rt_of(request).reads.connect() as conn:
            viewer = await viewer_of(conn, principal)
            if recipient is not None and viewer.recipient not in (None, recipient):
                raise forbidden("a recipient's token reads only its own alerts")
            rows = (await conn.execute(viewer.alerts(q))).all()
        audit.add(upns=(r.upn for r in rows), resources=(r.id for r in rows))
        return {"items": [alert_body(r) for r in rows], "next_cursor": rows[-1].seq if rows else cursor}

    @router.get("/alerts/stream", tags=["alerts"], response_class=StreamingResponse,
                responses={200: {"content": {"text/event-stream": {}}}})  # fmt: skip
    async def stream_alerts(
        request: Request, principal: Reader, audit: Audit,
        recipient: Annotated[str | None, Query(max_length=100)] = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:  # fmt: skip
        """Server-Sent Events: one ``alert`` event per new alert the caller may see (suppressed
        backfill alerts are not new alerts). Each event's ``id`` is the alert's ``seq``: reconnect
        with ``Last-Event-ID`` to resume where the stream ended. A stream ends after
        ``ROLLCALL_SSE_MAX_SECONDS`` (EventSource reconnects by itself); ``: keepalive`` comments
        keep proxies from closing an idle stream."""
        rt = rt_of(request)
        wire = worker.wiring(rt)
        settings = wire.settings
        a = t.alerts.c
        async with rt.reads.connect() as conn:
            viewer = await viewer_of(conn, principal)
            if recipient is not None and viewer.recipient not in (None, recipient):
                raise forbidden("a recipient's token reads only its own alerts")
            if last_event_id is not None and last_event_id.isdigit() and int(last_event_id) <= MAX_SEQ:
                start = int(last_event_id)
            else:
                start = int((await conn.execute(select(func.coalesce(func.max(a.seq), 0)))).scalar_one())
        base = viewer.alerts(select(t.alerts).where(a.status != "suppressed").order_by(a.seq).limit(200))
        if recipient is not None:
            base = base.where(a.recipient == recipient)

        async def events() -> AsyncIterator[bytes]:
            loop = asyncio.get_running_loop()
            last, ends = start, loop.time() + settings.sse_max_seconds
            quiet_since = loop.time()
            yield b"retry: 1000\n\n"
            while loop.time() < ends:
                ticket = wire.feed.ticket()
                async with rt.reads.connect() as conn:
                    rows = (await conn.execute(base.where(a.seq > last))).all()
                if rows:  # audited before it is sent, like every other read
                    await record_now(request, t.audit, (r.upn for r in rows), (r.id for r in rows))
                for r in rows:
                    last = r.seq
                    yield b"id: %d\nevent: alert\ndata: %s\n\n" % (r.seq, orjson.dumps(alert_body(r)))
                if rows:
                    quiet_since = loop.time()
                    if len(rows) == 200:
                        continue
                # Woken by this process's commits; polled each second for other processes'.
                await wire.feed.wait(ticket, min(1.0, max(0.0, ends - loop.time())))
                if loop.time() - quiet_since >= settings.sse_heartbeat_seconds:
                    quiet_since = loop.time()
                    yield b": keepalive\n\n"

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def _visible_alert(conn: AsyncConnection, principal: Principal, id: str, lock: bool = False) -> Any:
        viewer = await viewer_of(conn, principal)
        q = viewer.alerts(select(t.alerts).where(t.alerts.c.id == id))
        if lock and conn.dialect.name == "postgresql":
            q = q.with_for_update(of=t.alerts)
        row = (await conn.execute(q)).first()
        if row is None:
            raise not_found("alert")
        return row

    @router.get("/alerts/{id}", tags=["alerts"])
    async def get_alert(id: IdPath, request: Request, principal: Reader, audit: Audit) -> dict[str, Any]:
        async with rt_of(request).reads.connect() as conn:
            row = await _visible_alert(conn, principal, id)
        audit.add(upns=[row.upn], resources=[row.id])
        return alert_body(row)

    @router.post("/alerts/{id}/ack", tags=["alerts"])
    async def acknowledge(
        id: IdPath, body: schemas.AckBody, request: Request, principal: Writer, audit: Audit
    ) -> dict[str, Any]:
        """Acknowledge an alert: it stops its episode's escalation. Acknowledging again changes nothing."""
        rt = rt_of(request)
        async with rt.engine.begin() as conn:
            row = await _visible_alert(conn, principal, id, lock=True)
            changed = await alerts.acknowledge(conn, row, body.by, principal.sub, rt.now().astimezone(dt.UTC))
            row = (await conn.execute(select(t.alerts).where(t.alerts.c.id == id))).one()
        if changed:
            rt.relay.wake()
        audit.add(upns=[row.upn], resources=[row.id])
        return alert_body(row)

    # --- the delivery queue (operators) ------------------------------------------------------

    @router.get("/deliveries", tags=["deliveries"])
    async def list_deliveries(
        request: Request, _: Admin, audit: Audit,
        status: Annotated[str | None, Query(pattern="^(pending|delivered|dead)$")] = None,
        alert: Annotated[str | None, Query(max_length=64)] = None,
        cursor: Cursor = None,
        limit: Annotated[int, Query(ge=1, le=PAGE)] = 100,
    ) -> dict[str, Any]:  # fmt: skip
        """The delivery queue: one row per alert × webhook subscription or email, with its attempts."""
        d = t.deliveries.c
        q = select(t.deliveries).order_by(d.seq).limit(limit)
        if cursor is not None:
            q = q.where(d.seq > cursor)
        if status is not None:
            q = q.where(d.status == status)
        if alert is not None:
            q = q.where(d.alert_id == alert)
        async with rt_of(request).reads.connect() as conn:
            rows = (await conn.execute(q)).all()
        audit.add(resources=(r.alert_id for r in rows))  # the alerts (and pupils) they carry
        return {"items": [delivery_body(r) for r in rows], "next_cursor": rows[-1].seq if rows else cursor}

    @router.post("/deliveries/{seq}/retry", tags=["deliveries"])
    async def retry_delivery(
        seq: Annotated[int, Path(ge=1, le=MAX_SEQ)], request: Request, _: Admin
    ) -> dict[str, Any]:
        """Queue a dead-lettered (or waiting) delivery again now, with a fresh 24-hour window."""
        rt = rt_of(request)
        d = t.deliveries.c
        now = rt.now().astimezone(dt.UTC)
        async with rt.engine.begin() as conn:
            row = (await conn.execute(select(t.deliveries).where(d.seq == seq))).first()
            if row is None:
                raise not_found("delivery")
            if row.status == "delivered":
                raise Problem(409, "conflict", "Conflict", "the delivery has already succeeded")
            await conn.execute(
                update(t.deliveries)
                .where(d.seq == seq)
                .values(status="pending", next_attempt_at=now, created_at=now)
            )
            row = (await conn.execute(select(t.deliveries).where(d.seq == seq))).one()
        wire = worker.wiring(rt)
        if wire.deliverer is not None:
            wire.deliverer.wake()
        return delivery_body(row)

    app.include_router(router)
