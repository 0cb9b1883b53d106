"""Data-subject requests: export everything held about a person, and erase them."""

import json

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType

from subscriptions.models import ConsentRecord, Subscriber, TrackingEvent
from subscriptions.services.privacy import subscriber_erase, subscriber_export
from subscriptions.services.subscribers import (
    Preferences,
    RequestInfo,
    subscriber_confirm,
    subscriber_signup,
)
from subscriptions.services.tracking import Outcome, tracking_event_process
from subscriptions.tokens import Purpose, token_make, token_matches, token_read
from tests.subscriptions.factories import category

pytestmark = pytest.mark.django_db

INFO = RequestInfo(ip_address="203.0.113.9", user_agent="Firefox/140",
                   page="http://testserver/subscribe/")


@pytest.fixture(autouse=True)
def _no_email(monkeypatch):
    from subscriptions import tasks

    monkeypatch.setattr(tasks.subscriber_email_send, "delay_on_commit", lambda *args: None)


@pytest.fixture
def ann():
    """A confirmed subscriber with a history: sign-up, confirmation, a soft bounce."""
    prefs = Preferences(categories=(category("politics"), category("tech")), frequency="weekly",
                        timezone="Europe/Berlin", digest_hour=18)
    sub = subscriber_signup(email="Ann@Example.com", preferences=prefs, info=INFO).subscriber
    subscriber_confirm(subscriber=sub, info=INFO)
    tracking_event_process(esp_name="Postmark", event_type="deferred", recipient=sub.email,
                           event_id="ev-1", mta_response="452 4.2.2 ann@example.com is full")
    sub.refresh_from_db()
    return sub


@pytest.fixture
def staff():
    return get_user_model().objects.create_user("dpo", password="pw", is_staff=True)


def test_export_holds_profile_topics_consents_and_email_events(ann):
    data = json.loads(json.dumps(subscriber_export(subscriber=ann)))  # JSON-safe as is
    assert data["subscriber"]["email"] == "ann@example.com"
    assert data["subscriber"]["status"] == "active"
    assert data["subscriber"]["timezone"] == "Europe/Berlin"
    assert data["subscriber"]["soft_bounces"] == 1
    assert [c["slug"] for c in data["categories"]] == ["politics", "tech"]
    assert [c["action"] for c in data["consent_records"]] == ["signup", "confirm"]
    signup = data["consent_records"][0]
    assert (signup["ip_address"], signup["user_agent"], signup["page"]) == (
        INFO.ip_address, INFO.user_agent, INFO.page,
    )
    assert signup["details"]["categories"] == ["politics", "tech"]
    [event] = data["email_events"]
    assert (event["event_type"], event["outcome"]) == ("deferred", Outcome.SOFT_BOUNCE)
    assert event["reason"] == "452 4.2.2 <recipient> is full"  # the ESP text, address scrubbed


def test_erase_anonymises_the_subscriber_and_keeps_what_counts(ann, staff):
    subscriber_erase(subscriber=ann, by=staff)
    ann.refresh_from_db()
    assert ann.email == f"erased-{ann.pk}@invalid.example"
    assert ann.status == Subscriber.Status.UNSUBSCRIBED
    assert ann.suppression_reason == "erased on request"
    assert ann.erased_at is not None and ann.unsubscribed_at is not None
    assert (ann.timezone, ann.soft_bounces) == ("UTC", 0)
    # Aggregates stay true: topics and frequency are kept.
    assert set(ann.categories.values_list("slug", flat=True)) == {"politics", "tech"}
    assert (ann.frequency, ann.digest_hour) == ("weekly", 18)


def test_erase_keeps_consent_evidence_without_personal_fields(ann, staff):
    subscriber_erase(subscriber=ann, by=staff)
    records = list(ann.consents.order_by("at", "id"))
    assert [r.action for r in records] == ["signup", "confirm", "withdraw"]
    assert all((r.ip_address, r.user_agent, r.page) == (None, "", "") for r in records)
    signup = records[0]
    assert signup.wording_version and signup.details["categories"] == ["politics", "tech"]
    assert "timezone" not in signup.details  # a hint where the person lives
    final = records[-1]
    assert (final.method, final.details) == ("erasure", {"by": "dpo"})


def test_erase_voids_links_already_sent(ann, staff):
    token = token_make(subscriber_id=ann.pk, email=ann.email, purpose=Purpose.UNSUBSCRIBE)
    claim = token_read(token, purpose=Purpose.UNSUBSCRIBE)
    assert token_matches(claim, ann.email)
    subscriber_erase(subscriber=ann, by=staff)
    ann.refresh_from_db()
    assert not token_matches(claim, ann.email)


def test_erase_scrubs_email_events_and_admin_history(ann, staff):
    LogEntry.objects.log_actions(
        user_id=staff.pk, queryset=[ann], action_flag=CHANGE, change_message="Looked at it.",
    )
    subscriber_erase(subscriber=ann, by=staff)
    ann.refresh_from_db()
    event = TrackingEvent.objects.get()
    assert (event.recipient, event.reason, event.subscriber) == (ann.email, "", ann)
    entry = LogEntry.objects.get(content_type=ContentType.objects.get_for_model(Subscriber))
    assert entry.object_repr == ann.email
    assert not TrackingEvent.objects.filter(recipient="ann@example.com").exists()
    # A late bounce for the old address finds nobody.
    late = tracking_event_process(esp_name="Postmark", event_type="bounced",
                                  recipient="ann@example.com", event_id="ev-2")
    assert late == Outcome.UNKNOWN_RECIPIENT


def test_erase_is_idempotent(ann, staff):
    subscriber_erase(subscriber=ann, by=staff)
    ann.refresh_from_db()
    first = (ann.email, ann.erased_at, ann.consents.count())
    subscriber_erase(subscriber=ann, by=None)
    ann.refresh_from_db()
    assert (ann.email, ann.erased_at, ann.consents.count()) == first


def test_an_erased_subscriber_exports_nothing_personal(ann, staff):
    subscriber_erase(subscriber=ann, by=staff)
    ann.refresh_from_db()
    text = json.dumps(subscriber_export(subscriber=ann))
    for personal in ("ann@example.com", INFO.ip_address, INFO.user_agent, "Europe/Berlin"):
        assert personal not in text
    assert ConsentRecord.objects.filter(subscriber=ann).count() == 3
