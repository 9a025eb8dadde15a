from __future__ import annotations

import pytest

from tests.conftest import bearer
from tests.integration.ingest_fixtures import ingest_client, pupil, read_topic, setup_school

pytestmark = pytest.mark.integration


async def test_smoke(sqlite_url: str, kafka_bootstrap: str) -> None:
    async with ingest_client(sqlite_url, kafka_bootstrap) as client:
        r = await client.get("/readyz")
        assert r.status_code == 200, r.text
        pupils = [pupil(i) for i in range(1, 4)]
        await setup_school(client, "104001", pupils)
        marks = [{"upn": p["upn"], "date": "2024-09-03", "session": "AM", "code": "/"} for p in pupils]
        r = await client.post(
            "/v1/schools/104001/marks", json={"marks": marks}, headers=bearer("marks:write", ["104001"])
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"accepted": 3, "amended": 0, "unchanged": 0, "rejected": []}
    events = await read_topic(
        kafka_bootstrap, "rollcall.marks.v1", lambda e: e["data"]["school_urn"] == "104001", 3
    )
    assert len(events) == 3
