"""The committed AsyncAPI document is the one the payload models produce."""

from __future__ import annotations

from shared.asyncapi import DOC, document, render
from shared.events import PAYLOADS, Topic


def test_committed_document_is_current() -> None:
    assert DOC.read_text() == render(), "run: python -m shared.asyncapi"


def test_every_topic_with_payloads_is_a_channel() -> None:
    doc = document()
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {str(t.value) for t in PAYLOADS}
    assert Topic.MARKS.value in addresses
    mark = doc["components"]["schemas"]["MarkData"]
    assert {"school_urn", "upn", "date", "session", "code", "category"} <= set(mark["required"])
