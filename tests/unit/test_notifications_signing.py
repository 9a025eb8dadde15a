"""Standard Webhooks signing, the webhook CloudEvent body, alert ids and the retry schedule."""

from __future__ import annotations

import base64
import datetime as dt

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.notifications import alerts, signing
from services.notifications.api import _local_host
from services.notifications.delivery import backoff
from services.notifications.schemas import SubscriptionBody


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # The example of the Standard Webhooks specification (and its reference libraries' tests).
    key = signing.secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    sig = signing.signature(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@given(st.binary(min_size=24, max_size=64), st.text(min_size=1, max_size=40), st.binary(max_size=200))
def test_verify_accepts_its_own_signature_and_rejects_a_changed_body(
    key: bytes, msg_id: str, body: bytes
) -> None:
    secret = "whsec_" + base64.b64encode(key).decode()
    h = signing.headers(signing.secret_key(secret), msg_id, 1_700_000_000, body)
    assert h["webhook-id"] == msg_id
    assert signing.verify(secret, msg_id, h["webhook-timestamp"], body, h["webhook-signature"])
    assert not signing.verify(secret, msg_id, h["webhook-timestamp"], body + b"x", h["webhook-signature"])
    assert not signing.verify(secret, msg_id, "1700000001", body, h["webhook-signature"])


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "start with 'whsec_'"),
        ("whsec_not base64!", "standard base64"),
        ("whsec_" + base64.b64encode(b"x" * 23).decode(), "not 23"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "not 65"),
    ],
)
def test_bad_secrets_are_refused_with_the_reason(secret: str, problem: str) -> None:
    with pytest.raises(signing.SecretError, match=problem):
        signing.secret_key(secret)


def test_new_secrets_are_valid() -> None:
    assert len(signing.secret_key(signing.new_secret())) == 32


def test_subscription_body_validates_url_secret_and_types() -> None:
    ok = SubscriptionBody(url="https://sc.example/hook", secret=signing.new_secret(),
                          types=["uk.rollcall.alert.first_day_absence", "first_day_absence"])  # fmt: skip
    assert ok.types == ["first_day_absence"]
    for bad in (
        {"url": "ftp://x/y", "secret": signing.new_secret()},
        {"url": "https://u:p@x/y", "secret": signing.new_secret()},
        {"url": "https://x/y", "secret": "whsec_abc"},
        {"url": "https://x/y", "secret": signing.new_secret(), "types": ["band_changed"]},
        {"url": "https://x/y", "secret": signing.new_secret(), "types": []},
    ):
        with pytest.raises(ValueError, match="validation error"):
            SubscriptionBody.model_validate(bad)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(n, 5, 3600) for n in range(1, 12)] == [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]
    # With the defaults a failing receiver is tried about 30 times before the 24-hour dead letter.
    elapsed, attempts = 0.0, 0
    while elapsed <= 24 * 3600:
        attempts += 1
        elapsed += backoff(attempts, 5, 3600)
    assert 25 <= attempts <= 35


def test_alert_ids_are_deterministic_and_distinct() -> None:
    a = alerts.alert_id(
        "A343200018001", "first_day_absence:104001:2025-03-03:AM", "first_day_absence", "sw-1"
    )
    assert a == alerts.alert_id(
        "A343200018001", "first_day_absence:104001:2025-03-03:AM", "first_day_absence", "sw-1"
    )
    assert a != alerts.alert_id(
        "A343200018001", "first_day_absence:104001:2025-03-03:AM", "first_day_absence", "sw-2"
    )
    assert a != alerts.alert_id(
        "A343200018001", "first_day_absence:104001:2025-03-03:PM", "first_day_absence", "sw-1"
    )


def test_webhook_body_is_a_cloudevent_with_the_least_data() -> None:
    raised = dt.datetime(2025, 3, 3, 9, 5, tzinfo=dt.UTC)
    alert = {
        "id": "5f0c1d7e-0000-5000-8000-000000000000",
        "signal": "first_day_absence",
        "upn": "A343200018001",
        "school_urn": "104001",
        "recipient": "sw-1",
        "raised_at": raised,
        "evidence_url": "http://rules/v1/pupils/A343200018001/attendance?school=104001",
        "detail": {},
        "escalated_from": None,
    }
    body = orjson.loads(alerts.webhook_body(alert))
    assert body == {
        "specversion": "1.0",
        "id": alert["id"],
        "source": "/rollcall/notifications",
        "type": "uk.rollcall.alert.first_day_absence",
        "time": "2025-03-03T09:05:00+00:00",
        "subject": alert["id"],
        "datacontenttype": "application/json",
        "data": {
            "alert_id": alert["id"],
            "signal": "first_day_absence",
            "pupil": {"upn": "A343200018001", "school_urn": "104001"},
            "raised_at": "2025-03-03T09:05:00+00:00",
            "evidence_url": alert["evidence_url"],
            "recipient": "sw-1",
        },
    }
    email = alerts.email_body(alert, "sw1@example.org", "alerts@example.org").decode()
    assert f"Message-ID: <{alert['id']}@alerts.rollcall>" in email
    assert "A343200018001" in email


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("https://localhost/x", True),
        ("https://127.0.0.1:8443/x", True),
        ("https://[::1]/x", True),
        ("https://169.254.169.254/latest/meta-data", True),
        ("https://10.20.30.40/case-system/hook", False),  # an LA's own network is fine
        ("https://social-care.example.gov.uk/hook", False),
    ],
)
def test_production_refuses_webhooks_to_this_host(url: str, local: bool) -> None:
    assert _local_host(url) is local
