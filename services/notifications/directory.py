"""Publishing the directory on ``rollcall.directory.v1`` (see ``shared.directory``).

Every change to a recipient or a pupil's allocation enqueues, in the same transaction, an event
with the full current state of what changed: ``recipient.updated`` (id, role, LA code — no name or
email) or ``allocation.updated`` (every recipient now allocated to the pupil). The read services
(rules, legal) keep a local copy, so a social worker is restricted to their allocated pupils there
without an HTTP call to this service. Migration 0003 publishes the directory as it stood before.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.notifications import tables as t
from shared.directory import ALLOCATION_UPDATED, RECIPIENT_UPDATED, pupil_key, recipient_key
from shared.events import AllocationData, RecipientData, Topic, new_event
from shared.outbox import enqueue, outbox_records

SOURCE = "/rollcall/notifications"


def recipient_event(recipient_id: str, role: str, la_code: str | None) -> tuple[str, dict[str, Any]]:
    data = RecipientData(id=recipient_id, role=role, la_code=la_code).model_dump(mode="json")
    return recipient_key(recipient_id), new_event(RECIPIENT_UPDATED, SOURCE, data, subject=recipient_id)


def allocation_event(
    upn: str, social_worker: str | None, early_help: str | None
) -> tuple[str, dict[str, Any]]:
    ids = sorted({i for i in (social_worker, early_help) if i})
    data = AllocationData(upn=upn, recipients=ids, social_worker=social_worker, early_help=early_help)
    return pupil_key(upn), new_event(ALLOCATION_UPDATED, SOURCE, data.model_dump(mode="json"), subject=upn)


async def publish(conn: AsyncConnection, events: list[tuple[str, dict[str, Any]]]) -> None:
    await enqueue(conn, t.outbox, outbox_records(Topic.DIRECTORY, events))
