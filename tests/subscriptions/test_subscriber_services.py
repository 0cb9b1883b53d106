"""The subscriber services: state changes, consent records and emails enqueued."""

import pytest

from subscriptions.models import ConsentRecord, Subscriber
from subscriptions.services.subscribers import (
    SIGNUP_WORDING_VERSION,
    Preferences,
    RequestInfo,
    subscriber_confirm,
    subscriber_resubscribe,
    subscriber_signup,
    subscriber_suppress,
    subscriber_unfollow,
    subscriber_unsubscribe,
    subscriber_update_preferences,
)
from tests.subscriptions.factories import category, subscriber

pytestmark = pytest.mark.django_db

INFO = RequestInfo(ip_address="203.0.113.9", user_agent="Tests/1.0", page="http://testserver/subscribe/")


@pytest.fixture
def enqueued(monkeypatch):
    """The (subscriber id, kind) of every subscription email the services enqueue."""
    from subscriptions import tasks

    sent: list[tuple[int, str]] = []
    monkeypatch.setattr(
        tasks.subscriber_email_send, "delay_on_commit", lambda sid, kind: sent.append((sid, kind))
    )
    return sent


def prefs(*cats, **fields) -> Preferences:
    return Preferences(categories=tuple(cats), **fields)


def test_signup_creates_a_pending_subscriber_with_consent_and_a_confirmation(enqueued):
    policy, tech = category("policy"), category("tech")
    outcome = subscriber_signup(
        email="  Ann@Example.COM ",
        preferences=prefs(policy, tech, frequency="weekly", wants_alerts=False,
                          timezone="Europe/Berlin", digest_hour=18),
        info=INFO,
    )
    sub = outcome.subscriber
    assert outcome.email_sent == "confirm"
    assert sub.email == "ann@example.com"
    assert sub.status == Subscriber.Status.PENDING
    assert (sub.frequency, sub.wants_alerts, sub.timezone, sub.digest_hour) == (
        "weekly", False, "Europe/Berlin", 18,
    )
    assert set(sub.categories.values_list("slug", flat=True)) == {"policy", "tech"}
    consent = sub.consents.get()
    assert consent.action == ConsentRecord.Action.SIGNUP
    assert (consent.ip_address, consent.user_agent, consent.page) == (
        INFO.ip_address, INFO.user_agent, INFO.page,
    )
    assert consent.wording_version == SIGNUP_WORDING_VERSION
    assert consent.details["categories"] == ["policy", "tech"]
    assert enqueued == [(sub.pk, "confirm")]


def test_signup_of_an_active_address_changes_nothing_and_sends_the_manage_email(enqueued):
    sub = subscriber("ann@example.com", categories=[category("policy")], frequency="daily")
    outcome = subscriber_signup(
        email="ANN@example.com", preferences=prefs(category("tech"), frequency="weekly"), info=INFO
    )
    sub.refresh_from_db()
    assert outcome.email_sent == "manage"
    assert sub.status == Subscriber.Status.ACTIVE and sub.frequency == "daily"
    assert list(sub.categories.values_list("slug", flat=True)) == ["policy"]
    assert not sub.consents.exists()
    assert enqueued == [(sub.pk, "manage")]
    assert Subscriber.objects.count() == 1


@pytest.mark.parametrize("status", ["pending", "unsubscribed", "bounced", "complained"])
def test_signup_again_restarts_double_opt_in(enqueued, status):
    sub = subscriber("ann@example.com", status=status)
    subscriber_signup(email="ann@example.com", preferences=prefs(category("tech")), info=INFO)
    sub.refresh_from_db()
    assert sub.status == Subscriber.Status.PENDING
    assert enqueued == [(sub.pk, "confirm")]
    assert Subscriber.objects.count() == 1


def test_confirm_activates_once(enqueued):
    sub = subscriber(status="pending")
    assert subscriber_confirm(subscriber=sub, info=INFO) is True
    sub.refresh_from_db()
    assert sub.status == Subscriber.Status.ACTIVE and sub.confirmed_at is not None
    assert subscriber_confirm(subscriber=sub, info=INFO) is False  # a used link
    assert list(sub.consents.values_list("action", flat=True)) == ["confirm"]


def test_confirm_does_not_revive_an_unsubscribed_address():
    sub = subscriber(status="unsubscribed")
    assert subscriber_confirm(subscriber=sub, info=INFO) is False
    sub.refresh_from_db()
    assert sub.status == Subscriber.Status.UNSUBSCRIBED


def test_update_preferences_records_the_change():
    sub = subscriber(categories=[category("policy")])
    subscriber_update_preferences(
        subscriber=sub,
        preferences=prefs(category("tech"), frequency="off", wants_alerts=True,
                          timezone="Asia/Tokyo", digest_hour=6),
        info=INFO,
    )
    sub.refresh_from_db()
    assert (sub.frequency, sub.timezone, sub.digest_hour) == ("off", "Asia/Tokyo", 6)
    assert list(sub.categories.values_list("slug", flat=True)) == ["tech"]
    change = sub.consents.get()
    assert change.action == "change" and change.details["categories"] == ["tech"]


def test_unfollow_one_topic_keeps_the_subscription():
    policy, tech = category("policy"), category("tech")
    sub = subscriber(categories=[policy, tech])
    assert subscriber_unfollow(subscriber=sub, category=policy, info=INFO, method="email") is True
    assert subscriber_unfollow(subscriber=sub, category=policy, info=INFO, method="email") is False
    sub.refresh_from_db()
    assert sub.status == "active"
    assert list(sub.categories.values_list("slug", flat=True)) == ["tech"]
    assert sub.consents.get().details == {"unfollowed": "policy"}


def test_unsubscribe_is_immediate_idempotent_and_says_goodbye(enqueued):
    sub = subscriber()
    assert subscriber_unsubscribe(subscriber=sub, info=INFO, method="preferences-page") is True
    assert subscriber_unsubscribe(subscriber=sub, info=INFO, method="preferences-page") is False
    sub.refresh_from_db()
    assert sub.status == "unsubscribed" and sub.unsubscribed_at is not None
    assert list(sub.consents.values_list("action", "method")) == [("withdraw", "preferences-page")]
    assert enqueued == [(sub.pk, "goodbye")]


def test_one_click_unsubscribe_sends_no_goodbye(enqueued):
    sub = subscriber()
    subscriber_unsubscribe(subscriber=sub, info=None, method="one-click", send_goodbye=False)
    assert enqueued == []


def test_resubscribe_from_any_suppressed_state():
    for status in Subscriber.SUPPRESSED:
        sub = subscriber(status=status, soft_bounces=2, suppression_reason="x")
        assert subscriber_resubscribe(subscriber=sub, info=INFO) is True
        sub.refresh_from_db()
        assert (sub.status, sub.soft_bounces, sub.suppression_reason) == ("active", 0, "")
        assert sub.consents.get().action == "resubscribe"
    assert subscriber_resubscribe(subscriber=subscriber(), info=INFO) is False


def test_suppress_records_why_and_only_complaints_and_unsubscribes_are_withdrawals():
    bounced, complained = subscriber(), subscriber()
    assert subscriber_suppress(subscriber=bounced, status="bounced", reason="550 no such user",
                               method="esp-webhook")
    assert subscriber_suppress(subscriber=complained, status="complained", reason="spam report",
                               method="esp-webhook")
    bounced.refresh_from_db()
    complained.refresh_from_db()
    assert (bounced.status, bounced.suppression_reason) == ("bounced", "550 no such user")
    assert complained.status == "complained"
    assert not bounced.consents.exists()
    assert complained.consents.get().action == "withdraw"
    with pytest.raises(ValueError, match="not a suppression status"):
        subscriber_suppress(subscriber=bounced, status="active", reason="", method="x")


def test_consent_records_are_append_only():
    record = ConsentRecord.objects.create(subscriber=subscriber(), action="signup", method="form")
    record.method = "forged"
    with pytest.raises(ValueError, match="append-only"):
        record.save()
    with pytest.raises(ValueError, match="append-only"):
        record.delete()


def test_email_is_unique_whatever_its_case():
    from django.db import IntegrityError, transaction

    subscriber("ann@example.com")
    with pytest.raises(IntegrityError), transaction.atomic():
        Subscriber.objects.bulk_create([Subscriber(email="ANN@example.com")])


@pytest.mark.parametrize(("hops", "forwarded", "expected"), [
    (0, "198.51.100.7", "10.0.0.2"),  # no proxy trusted: the header is the client's word
    (1, "198.51.100.7", "198.51.100.7"),
    (1, "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # a forged first entry is ignored
    (2, "6.6.6.6, 198.51.100.7, 10.0.0.9", "198.51.100.7"),
    (2, "198.51.100.7", "10.0.0.2"),  # fewer entries than proxies: fall back
])
def test_client_ip_behind_trusted_proxies(rf, settings, hops, forwarded, expected):
    from subscriptions.services.subscribers import client_ip

    settings.NEWSROOM_TRUSTED_PROXY_HOPS = hops
    request = rf.get("/", HTTP_X_FORWARDED_FOR=forwarded, REMOTE_ADDR="10.0.0.2")
    assert client_ip(request) == expected
