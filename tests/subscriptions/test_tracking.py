"""ESP tracking webhooks: bounces, complaints and ESP-side unsubscribes, through
anymail's real webhook views, our receiver, the task and the service."""

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from datetime import UTC, datetime

import pytest
from anymail.signals import AnymailTrackingEvent
from django.db import OperationalError
from django.test import override_settings

from subscriptions import tasks
from subscriptions.models import ConsentRecord, Subscriber, TrackingEvent
from subscriptions.services import tracking
from subscriptions.services.tracking import Outcome, event_payload, is_temporary_failure
from tests.subscriptions.factories import subscriber

pytestmark = pytest.mark.django_db

POSTMARK = "/anymail/postmark/tracking/"
MAILGUN = "/anymail/mailgun/tracking/"
WEBHOOK_SECRET = "anymail-hook:5f2b8c1e9d"
MAILGUN_KEY = "mailgun-webhook-signing-key-for-tests"
ANYMAIL = {"WEBHOOK_SECRET": WEBHOOK_SECRET, "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY}
AUTH = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(WEBHOOK_SECRET.encode()).decode()}
LOGGER = "subscriptions.services.tracking"


@pytest.fixture(autouse=True)
def _anymail_settings():
    with override_settings(ANYMAIL=ANYMAIL, NEWSROOM_SOFT_BOUNCE_LIMIT=3):
        yield


@pytest.fixture
def eager():
    """Tasks run in this process as soon as they are enqueued (after the commit)."""
    from newsroom.celery import app

    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = False, False


@pytest.fixture
def post(client, eager, django_capture_on_commit_callbacks):
    """POST a webhook the way the ESP does; enqueued tasks run before it returns."""

    def _post(url, payload, *, auth=True, content_type="application/json"):
        body = json.dumps(payload) if content_type == "application/json" else payload
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(url, body, content_type=content_type, **(AUTH if auth else {}))

    return _post


# --- Realistic ESP payloads ------------------------------------------------------------

def postmark_bounce(email, *, type_="HardBounce", event_id=None, message_id=None, **extra):
    descriptions = {
        "HardBounce": ("The server was unable to deliver your message "
                       "(ex: unknown user, mailbox not found).",
                       "smtp;550 5.1.1 The email account that you tried to reach does not exist."),
        "SoftBounce": ("Unable to temporarily deliver this email.",
                       "smtp;452 4.2.2 The email account that you tried to reach is over quota."),
        "BadEmailAddress": ("Invalid email address.", "Invalid address"),
        "ManuallyDeactivated": ("The email was manually deactivated.", ""),
    }
    description, details = descriptions.get(type_, ("", ""))
    return {
        "RecordType": "Bounce", "MessageStream": "outbound",
        "ID": event_id or int(uuid.uuid4().int % 10**15), "Type": type_, "TypeCode": 1,
        "Name": type_, "Tag": "daily-digest",
        "MessageID": message_id or str(uuid.uuid4()), "Metadata": {}, "ServerID": 23,
        "Description": description, "Details": details, "Email": email,
        "From": "news@newsroom.example", "BouncedAt": "2026-11-27T06:02:11.5270000Z",
        "DumpAvailable": True, "Inactive": True, "CanActivate": True,
        "Subject": "Your morning briefing", **extra,
    }


def postmark_complaint(email):
    return {
        "RecordType": "SpamComplaint", "MessageStream": "outbound", "ID": 42_000_017,
        "Type": "SpamComplaint", "TypeCode": 512, "Name": "Spam complaint",
        "Tag": "daily-digest", "MessageID": str(uuid.uuid4()), "Metadata": {},
        "ServerID": 23, "Description": "", "Details": "Test spam complaint details",
        "Email": email, "From": "news@newsroom.example",
        "BouncedAt": "2026-11-27T06:05:00Z", "DumpAvailable": True, "Inactive": True,
        "CanActivate": False, "Subject": "Your morning briefing",
    }


def postmark_subscription_change(email, *, suppress=True, reason="ManualSuppression"):
    return {
        "RecordType": "SubscriptionChange", "MessageID": str(uuid.uuid4()), "ServerID": 23,
        "MessageStream": "outbound", "ChangedAt": "2026-11-27T07:00:00.416071Z",
        "Recipient": email, "Origin": "Recipient", "SuppressSending": suppress,
        "SuppressionReason": reason if suppress else None, "Tag": "daily-digest",
        "Metadata": {},
    }


def postmark_delivery(email):
    return {
        "RecordType": "Delivery", "ServerID": 23, "MessageStream": "outbound",
        "MessageID": str(uuid.uuid4()), "Recipient": email, "Tag": "daily-digest",
        "DeliveredAt": "2026-11-27T06:00:01Z", "Details": "smtp;250 2.0.0 OK",
        "Metadata": {},
    }


def mailgun_event(email, *, event="failed", severity="permanent", message_id=None,
                  code=550, message="5.1.1 The email account does not exist.", key=MAILGUN_KEY):
    token = uuid.uuid4().hex + uuid.uuid4().hex[:18]
    timestamp = str(int(time.time()))
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    data = {
        "event": event, "id": uuid.uuid4().hex[:22], "timestamp": time.time(),
        "recipient": email, "tags": ["daily-digest"], "user-variables": {},
        "message": {"headers": {
            "message-id": message_id or f"{uuid.uuid4().hex}@mg.newsroom.example",
            "to": email, "from": "news@newsroom.example", "subject": "Your morning briefing",
        }},
    }
    if event == "failed":
        data.update(severity=severity, reason="bounce" if severity == "permanent" else "generic")
        data["delivery-status"] = {"code": code, "message": message, "description": "",
                                   "attempt-no": 1}
    return {"signature": {"timestamp": timestamp, "token": token, "signature": signature},
            "event-data": data}


def status_of(sub):
    sub.refresh_from_db()
    return sub.status


# --- Webhook authentication -----------------------------------------------------------

def test_postmark_webhook_without_or_with_a_wrong_secret_is_refused(client, post):
    ann = subscriber("ann@example.com")
    assert post(POSTMARK, postmark_bounce(ann.email), auth=False).status_code == 400
    wrong = "Basic " + base64.b64encode(b"anymail-hook:guess").decode()
    response = client.post(POSTMARK, json.dumps(postmark_bounce(ann.email)),
                           content_type="application/json", HTTP_AUTHORIZATION=wrong)
    assert response.status_code == 400
    assert status_of(ann) == Subscriber.Status.ACTIVE
    assert not TrackingEvent.objects.exists()


def test_mailgun_webhook_needs_a_valid_signature_as_well_as_the_secret(post):
    ann = subscriber("ann@example.com")
    forged = mailgun_event(ann.email, key="not-the-signing-key")
    assert post(MAILGUN, forged).status_code == 400
    assert post(MAILGUN, mailgun_event(ann.email), auth=False).status_code == 400
    assert status_of(ann) == Subscriber.Status.ACTIVE

    assert post(MAILGUN, mailgun_event(ann.email)).status_code == 200
    assert status_of(ann) == Subscriber.Status.BOUNCED
    assert "does not exist" in ann.suppression_reason


# --- Hard events -----------------------------------------------------------------------

def test_postmark_hard_bounce_suppresses_and_records_the_reason(post):
    ann = subscriber("ann@example.com")
    assert post(POSTMARK, postmark_bounce("Ann@Example.com")).status_code == 200
    ann.refresh_from_db()
    assert ann.status == Subscriber.Status.BOUNCED
    assert ann.suppression_reason.startswith("hard bounce (Postmark bounced): smtp;550 5.1.1")
    assert ann.unsubscribed_at is not None
    assert not ann.consents.exists()  # a bounce is not the person withdrawing consent
    event = TrackingEvent.objects.get()
    assert (event.esp, event.event_type, event.recipient, event.subscriber, event.outcome) == (
        "Postmark", "bounced", "ann@example.com", ann, Outcome.SUPPRESSED,
    )
    assert event.occurred_at == datetime(2026, 11, 27, 6, 2, 11, 527000, tzinfo=UTC)


def test_postmark_spam_complaint_suppresses_and_records_a_withdrawal(post):
    ann = subscriber("ann@example.com")
    assert post(POSTMARK, postmark_complaint(ann.email)).status_code == 200
    ann.refresh_from_db()
    assert ann.status == Subscriber.Status.COMPLAINED
    assert ann.suppression_reason.startswith("spam complaint (Postmark)")
    consent = ann.consents.get()
    assert (consent.action, consent.method) == (ConsentRecord.Action.WITHDRAW, "esp-webhook")
    assert consent.details["status"] == Subscriber.Status.COMPLAINED


def test_esp_side_unsubscribe_is_a_consent_withdrawal(post):
    ann = subscriber("ann@example.com")
    assert post(POSTMARK, postmark_subscription_change(ann.email)).status_code == 200
    ann.refresh_from_db()
    assert ann.status == Subscriber.Status.UNSUBSCRIBED
    assert ann.suppression_reason == "unsubscribed at the ESP (Postmark)"
    consent = ann.consents.get()
    assert (consent.action, consent.method) == (ConsentRecord.Action.WITHDRAW, "esp-webhook")


def test_esp_side_reactivation_does_not_resubscribe(post):
    """Postmark reports a lifted suppression as `subscribed`: only the person can come back."""
    ann = subscriber("ann@example.com", status=Subscriber.Status.UNSUBSCRIBED)
    response = post(POSTMARK, postmark_subscription_change(ann.email, suppress=False))
    assert response.status_code == 200
    assert status_of(ann) == Subscriber.Status.UNSUBSCRIBED


def test_rejected_invalid_address_bounces_but_an_esp_policy_block_does_not(post):
    ann, bob = subscriber("ann@example.com"), subscriber("bob@example.com")
    post(POSTMARK, postmark_bounce(ann.email, type_="BadEmailAddress"))
    post(POSTMARK, postmark_bounce(bob.email, type_="ManuallyDeactivated"))
    assert status_of(ann) == Subscriber.Status.BOUNCED
    assert status_of(bob) == Subscriber.Status.ACTIVE


def test_a_suppressed_address_keeps_its_reason_but_a_complaint_overrides(post):
    ann = subscriber("ann@example.com", status=Subscriber.Status.UNSUBSCRIBED,
                     suppression_reason="unsubscribed (one-click)")
    post(POSTMARK, postmark_bounce(ann.email))
    ann.refresh_from_db()
    assert (ann.status, ann.suppression_reason) == ("unsubscribed", "unsubscribed (one-click)")
    post(POSTMARK, postmark_complaint(ann.email))
    assert status_of(ann) == Subscriber.Status.COMPLAINED


# --- Soft bounces ----------------------------------------------------------------------

def test_soft_bounces_are_counted_and_suppress_at_the_limit(post):
    ann = subscriber("ann@example.com")
    for expected in (1, 2):
        post(POSTMARK, postmark_bounce(ann.email, type_="SoftBounce"))
        ann.refresh_from_db()
        assert (ann.status, ann.soft_bounces) == (Subscriber.Status.ACTIVE, expected)
    post(MAILGUN, mailgun_event(ann.email, severity="temporary", code=452,
                                message="4.2.2 Mailbox full"))
    ann.refresh_from_db()
    assert ann.status == Subscriber.Status.BOUNCED
    assert ann.suppression_reason == "3 soft bounces in a row"
    assert ann.soft_bounces == 3


def test_a_delivery_resets_the_soft_bounce_count(post):
    ann = subscriber("ann@example.com", soft_bounces=2)
    assert post(POSTMARK, postmark_delivery(ann.email)).status_code == 200
    ann.refresh_from_db()
    assert (ann.status, ann.soft_bounces) == (Subscriber.Status.ACTIVE, 0)
    assert not TrackingEvent.objects.exists()  # deliveries are not stored
    post(POSTMARK, postmark_bounce(ann.email, type_="SoftBounce"))
    post(POSTMARK, postmark_bounce(ann.email, type_="SoftBounce"))
    assert status_of(ann) == Subscriber.Status.ACTIVE  # 2 in a row, not 4


def test_retries_of_one_message_count_as_one_soft_bounce(post):
    """Mailgun reports every failed retry of a message; the limit counts messages."""
    ann = subscriber("ann@example.com")
    for _ in range(4):
        post(MAILGUN, mailgun_event(ann.email, severity="temporary", code=421,
                                    message="4.4.2 Connection timed out",
                                    message_id="same-message@mg.newsroom.example"))
    ann.refresh_from_db()
    assert (ann.status, ann.soft_bounces) == (Subscriber.Status.ACTIVE, 1)
    assert list(TrackingEvent.objects.values_list("outcome", flat=True)) == [
        Outcome.SOFT_BOUNCE, *[Outcome.SOFT_BOUNCE_REPEAT] * 3
    ]


@pytest.mark.parametrize(
    ("event_type", "esp_kind", "mta_response", "soft"),
    [
        ("deferred", "", "", True),
        ("bounced", "SoftBounce", "", True),  # Postmark
        ("bounced", "soft_bounce", "", True),  # Brevo, Mandrill
        ("bounced", "Transient", "", True),  # Amazon SES
        ("bounced", "", "smtp;452 4.2.2 over quota", True),
        ("bounced", "", "421-4.7.0 try again later", True),
        ("bounced", "", "Mailbox full (4.2.2)", True),
        ("bounced", "HardBounce", "smtp;550 5.1.1 no such user", False),
        ("bounced", "", "550 4.2.2 odd but permanent", False),  # the basic code decides
        ("bounced", "", "", False),
        ("rejected", "", "452 4.2.2", False),
    ],
)
def test_what_counts_as_a_soft_bounce(event_type, esp_kind, mta_response, soft):
    assert is_temporary_failure(
        event_type=event_type, esp_kind=esp_kind, mta_response=mta_response
    ) is soft


# --- Duplicates, strangers and junk ---------------------------------------------------------

def test_the_same_event_twice_is_processed_once(post):
    ann, bob = subscriber("ann@example.com"), subscriber("bob@example.com")
    soft = postmark_bounce(ann.email, type_="SoftBounce", event_id=777)
    post(POSTMARK, soft)
    post(POSTMARK, soft)
    ann.refresh_from_db()
    assert ann.soft_bounces == 1
    complaint = postmark_complaint(bob.email)
    post(POSTMARK, complaint)
    post(POSTMARK, complaint)
    assert bob.consents.count() == 1
    assert TrackingEvent.objects.count() == 2


def test_a_duplicate_is_reported_as_such_by_the_service():
    subscriber("ann@example.com")
    payload = {"esp_name": "Postmark", "event_type": "deferred", "recipient": "ann@example.com",
               "event_id": "1", "message_id": "m-1"}
    assert tracking.tracking_event_process(**payload) == Outcome.SOFT_BOUNCE
    assert tracking.tracking_event_process(**payload) == Outcome.DUPLICATE


def test_unknown_addresses_are_logged_and_ignored(post, caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert post(POSTMARK, postmark_bounce("stranger@example.com")).status_code == 200
    assert "unknown address" in caplog.text
    assert not TrackingEvent.objects.exists()


def test_an_event_without_a_recipient_is_logged_and_ignored(post, caplog):
    ann = subscriber("ann@example.com")
    payload = postmark_bounce(ann.email)
    del payload["Email"]
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert post(POSTMARK, payload).status_code == 200
    assert "without a usable recipient" in caplog.text
    assert status_of(ann) == Subscriber.Status.ACTIVE


@pytest.mark.parametrize("recipient", [None, "", "not-an-address", 42])
def test_the_service_never_raises_on_junk(recipient):
    outcome = tracking.tracking_event_process(
        esp_name="Postmark", event_type="bounced", recipient=recipient, timestamp="yesterday"
    )
    assert outcome == Outcome.MALFORMED


def test_a_body_anymail_cannot_parse_is_a_400_and_changes_nothing(client):
    """Anymail's own parsing fails before our code runs: a 400 (subscriptions/webhooks.py),
    since the same body can never succeed and a stranger must not cause a 500."""
    ann = subscriber("ann@example.com")
    client.raise_request_exception = False
    response = client.post(POSTMARK, "{not json", content_type="application/json", **AUTH)
    assert response.status_code == 400
    assert status_of(ann) == Subscriber.Status.ACTIVE


def test_opens_and_clicks_are_not_even_enqueued(post, monkeypatch):
    enqueued = []
    monkeypatch.setattr(tasks.tracking_event_process, "delay_on_commit",
                        lambda **payload: enqueued.append(payload))
    ann = subscriber("ann@example.com")
    post(POSTMARK, {"RecordType": "Open", "Recipient": ann.email, "MessageID": "m-1",
                    "ReceivedAt": "2026-11-27T08:00:00Z", "FirstOpen": True})
    post(POSTMARK, postmark_bounce(ann.email))
    assert [p["event_type"] for p in enqueued] == ["bounced"]


# --- The queue contract and the task ----------------------------------------------------------

def test_the_payload_is_json_primitives_with_trimmed_text():
    event = AnymailTrackingEvent(
        event_type="bounced", recipient="ann@example.com", event_id=123,
        timestamp=datetime(2026, 11, 27, 6, 0, tzinfo=UTC), reject_reason="bounced",
        description="x" * 5000, mta_response="smtp;550 5.1.1 " + "y" * 5000,
        message_id="m-1", esp_event={"Type": "HardBounce", "Content": "<dump>" * 1000},
    )
    payload = event_payload(event, "Postmark")
    assert json.loads(json.dumps(payload)) == payload
    assert payload["event_id"] == "123"
    assert payload["timestamp"] == "2026-11-27T06:00:00+00:00"
    assert payload["esp_kind"] == "HardBounce"
    assert len(payload["description"]) == len(payload["mta_response"]) == 500
    assert "Content" not in json.dumps(payload)  # the raw event stays out of the queue


def test_the_task_retries_transient_database_errors(monkeypatch):
    calls = []

    def flaky(**payload):
        calls.append(payload)
        if len(calls) == 1:
            raise OperationalError("database is locked")
        return Outcome.IGNORED

    monkeypatch.setattr(tracking, "tracking_event_process", flaky)
    result = tasks.tracking_event_process.apply(
        kwargs={"esp_name": "Postmark", "event_type": "opened", "recipient": "a@example.com"},
        throw=False,
    )
    assert result.get() == Outcome.IGNORED
    assert len(calls) == 2


def test_the_task_is_routed_to_the_priority_queue():
    from newsroom.celery import app

    name = tasks.tracking_event_process.name
    assert name == "subscriptions.tracking_event_process"
    assert app.amqp.router.route({}, name)["queue"].name == "priority"


# --- End to end: webhook -> broker -> worker -> database ------------------------------------

@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_hard_bounce_reaches_the_worker_and_suppresses(client, celery_worker):
    ann = subscriber("ann@example.com")
    response = client.post(POSTMARK, json.dumps(postmark_bounce(ann.email)),
                           content_type="application/json", **AUTH)
    assert response.status_code == 200
    deadline = time.monotonic() + 20
    while status_of(ann) != Subscriber.Status.BOUNCED:
        assert time.monotonic() < deadline, "the worker did not process the bounce in 20 s"
        time.sleep(0.2)
    assert TrackingEvent.objects.get().outcome == Outcome.SUPPRESSED
