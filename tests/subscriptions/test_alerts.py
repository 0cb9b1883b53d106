"""Breaking alerts through the real SMTP listener: who gets them, once, and how they look."""

import email
from datetime import timedelta
from email import policy

import pytest
from django.utils import timezone

from newsroom.models import Story
from subscriptions.models import Delivery, Edition, Subscriber
from subscriptions.sending import batches, dispatch, enqueue, steering
from subscriptions.tokens import Purpose, token_read
from tests.mailbox import unsubscribe_link
from tests.subscriptions.factories import breaking_story as story
from tests.subscriptions.factories import category, subscriber

pytestmark = pytest.mark.django_db


def send_all(edition: Edition) -> None:
    """Run the edition's batches in this process (the worker path is tested elsewhere)."""
    dispatch.edition_dispatch(edition_id=edition.pk)
    edition.refresh_from_db()
    for first, last in enqueue.batch_ranges(edition):
        batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    edition.refresh_from_db()


@pytest.fixture
def no_enqueue(monkeypatch):
    """Keep the broker out of in-process tests: batches are run by send_all."""
    monkeypatch.setattr(enqueue, "enqueue_dispatch", lambda edition: None)
    monkeypatch.setattr(enqueue, "enqueue_batches", lambda edition, **kwargs: 0)


def test_an_alert_reaches_exactly_the_right_subscribers(smtp, no_enqueue):
    policy_, tech = category("policy"), category("tech")
    wanted = [subscriber(f"yes{i}@example.com", categories=[policy_]) for i in range(3)]
    subscriber("both@example.com", categories=[policy_, tech])
    subscriber("no-alerts@example.com", categories=[policy_], wants_alerts=False)
    subscriber("other-topic@example.com", categories=[tech])
    subscriber("pending@example.com", categories=[policy_], status="pending")
    subscriber("left@example.com", categories=[policy_], status="unsubscribed")
    subscriber("bounced@example.com", categories=[policy_], status="bounced")

    edition = dispatch.edition_create_alert(story=story(policy_), by=None)
    send_all(edition)

    got = sorted(m.rcpt_to for m in smtp.handler.messages if m.rcpt_to.endswith("@example.com"))
    assert got == sorted([s.email for s in wanted] + ["both@example.com"])
    assert (edition.status, edition.targeted, edition.sent, edition.failed) == ("done", 4, 4, 0)
    assert set(Delivery.objects.filter(edition=edition).values_list("status", flat=True)) == {
        "sent"
    }


def test_alert_message_is_a_correct_list_message(smtp, no_enqueue, settings):
    settings.NEWSROOM_REPLY_TO = "desk@example.com"
    cat = category("policy")
    sub = subscriber("ann@example.com", categories=[cat])
    headline = 'Dam "bursts" & floods – ünïcode'  # noqa: RUF001
    edition = dispatch.edition_create_alert(story=story(cat, headline=headline), by=None)
    send_all(edition)
    [received] = smtp.handler.to("ann@example.com")
    message = email.message_from_bytes(received.data, policy=policy.default)
    assert not message.defects
    assert message["Subject"] == f"Breaking: {headline}"  # no HTML escaping in a header
    assert message["To"] == "ann@example.com"
    assert message["Reply-To"] == "desk@example.com"
    for header in ("From", "Date", "Message-ID", "List-Id", "List-Unsubscribe"):
        assert message[header], header
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"] == "Newsroom <alerts.policy.lists.testserver>"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    unsubscribe = unsubscribe_link(message["List-Unsubscribe"])
    assert unsubscribe in text and unsubscribe in html
    token = unsubscribe.rstrip("/").rsplit("/", 1)[1]
    assert token_read(token, purpose=Purpose.UNSUBSCRIBE).subscriber_id == sub.pk
    assert "/preferences/" in text and "/preferences/" in html
    assert settings.NEWSROOM_POSTAL_ADDRESS in text and settings.NEWSROOM_POSTAL_ADDRESS in html
    assert "Thousands leave their homes" in text and "What we know" in html
    assert 'style="' in html  # CSS inlined for mail clients
    assert len(html.encode()) < 100_000
    assert "@@" not in text + html


def test_the_same_story_is_never_alerted_twice(no_enqueue):
    cat = category("policy")
    s = story(cat)
    dispatch.edition_create_alert(story=s, by=None)
    with pytest.raises(dispatch.AlertAlreadySent):
        dispatch.edition_create_alert(story=s, by=None)
    assert Edition.objects.count() == 1


def test_only_published_breaking_stories_alert(no_enqueue):
    cat = category("policy")
    with pytest.raises(steering.EditionError, match="breaking"):
        dispatch.edition_create_alert(story=story(cat, breaking=False), by=None)
    draft = story(cat)
    Story.objects.filter(pk=draft.pk).update(status=Story.Status.DRAFT)
    draft.refresh_from_db()
    with pytest.raises(steering.EditionError, match="Publish"):
        dispatch.edition_create_alert(story=draft, by=None)
    scheduled = story(cat, published_at=timezone.now() + timedelta(hours=1))
    with pytest.raises(steering.EditionError, match="publication time"):
        dispatch.edition_create_alert(story=scheduled, by=None)


def test_a_stale_alert_is_not_sent_late(smtp, no_enqueue, settings):
    cat = category("policy")
    subscriber(categories=[cat])
    edition = dispatch.edition_create_alert(story=story(cat), by=None)
    Edition.objects.filter(pk=edition.pk).update(
        scheduled_at=timezone.now() - timedelta(seconds=settings.NEWSROOM_ALERT_STALE_AFTER + 1)
    )
    assert dispatch.edition_dispatch(edition_id=edition.pk) == 0
    edition.refresh_from_db()
    assert edition.status == "expired" and "not sent late" in edition.note
    assert not smtp.handler.messages and not Delivery.objects.exists()


def test_a_batch_run_twice_sends_once(smtp, no_enqueue):
    cat = category("policy")
    for i in range(5):
        subscriber(f"r{i}@example.com", categories=[cat])
    edition = dispatch.edition_create_alert(story=story(cat), by=None)
    send_all(edition)
    for first, last in [(0, 10**9)]:
        report = batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
        assert report.claimed == 0 and report.sent == 0
    assert len(smtp.handler.messages) == 5


def test_who_unsubscribes_in_flight_gets_nothing(smtp, no_enqueue):
    cat = category("policy")
    stays, leaves = subscriber(categories=[cat]), subscriber(categories=[cat])
    edition = dispatch.edition_create_alert(story=story(cat), by=None)
    dispatch.edition_dispatch(edition_id=edition.pk)
    leaves.status = "unsubscribed"
    leaves.save()
    for first, last in enqueue.batch_ranges(edition):
        batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    assert [m.rcpt_to for m in smtp.handler.messages] == [stays.email]
    assert Delivery.objects.get(subscriber=leaves).status == "skipped"
    edition.refresh_from_db()
    assert (edition.sent, edition.skipped, edition.status) == (1, 1, "done")


def test_permanent_and_transient_refusals_are_recorded_per_recipient(smtp, no_enqueue, settings):
    settings.NEWSROOM_DELIVERY_MAX_ATTEMPTS = 2
    cat = category("policy")
    ok = subscriber("ok@example.com", categories=[cat])
    gone = subscriber("gone@example.com", categories=[cat])
    busy = subscriber("busy@example.com", categories=[cat])
    smtp.handler.reject.update({
        "gone@example.com": "550 5.1.1 No such user",
        "busy@example.com": "451 4.2.0 Mailbox busy",
    })
    edition = dispatch.edition_create_alert(story=story(cat), by=None)
    dispatch.edition_dispatch(edition_id=edition.pk)
    [(first, last)] = enqueue.batch_ranges(edition)
    report = batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    assert (report.sent, report.failed) == (1, 1)
    assert report.retry == [Delivery.objects.get(subscriber=busy).pk]
    by_sub = {d.subscriber_id: d for d in Delivery.objects.all()}
    assert by_sub[ok.pk].status == "sent"
    assert by_sub[gone.pk].status == "failed" and "550" in by_sub[gone.pk].last_error
    assert by_sub[busy.pk].status == "queued" and "451" in by_sub[busy.pk].last_error

    smtp.handler.reject.pop("busy@example.com")  # the mailbox recovers: the retry delivers
    report = batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    assert report.sent == 1
    assert [m.rcpt_to for m in smtp.handler.messages].count("busy@example.com") == 1
    edition.refresh_from_db()
    assert (edition.status, edition.sent, edition.failed) == ("done", 2, 1)


def test_transient_failures_become_failures_after_the_last_attempt(smtp, no_enqueue, settings):
    settings.NEWSROOM_DELIVERY_MAX_ATTEMPTS = 2
    cat = category("policy")
    subscriber("busy@example.com", categories=[cat])
    smtp.handler.reject["busy@example.com"] = "451 4.2.0 Mailbox busy"
    edition = dispatch.edition_create_alert(story=story(cat), by=None)
    dispatch.edition_dispatch(edition_id=edition.pk)
    [(first, last)] = enqueue.batch_ranges(edition)
    assert batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last).retry
    report = batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    assert report.retry == [] and report.failed == 1
    edition.refresh_from_db()
    assert edition.status == "done" and edition.failed == 1


def test_batches_cover_every_delivery_once(no_enqueue, settings):
    settings.NEWSROOM_BATCH_SIZE = 7
    cat = category("policy")
    for i in range(30):
        subscriber(f"b{i}@example.com", categories=[cat])
    edition = dispatch.edition_create_alert(story=story(cat), by=None)
    dispatch.edition_dispatch(edition_id=edition.pk)
    ranges = enqueue.batch_ranges(edition)
    assert len(ranges) == 5
    ids = sorted(Delivery.objects.values_list("id", flat=True))
    covered = [i for first, last in ranges for i in ids if first <= i <= last]
    assert covered == ids


def test_a_batch_costs_a_bounded_number_of_queries(smtp, no_enqueue, settings,
                                                  django_assert_max_num_queries):
    settings.NEWSROOM_BATCH_SIZE = 1000
    cat = category("policy")
    subs = Subscriber.objects.bulk_create(
        Subscriber(email=f"q{i}@example.com", status="active", wants_alerts=True)
        for i in range(300)
    )
    Subscriber.categories.through.objects.bulk_create(
        Subscriber.categories.through(subscriber_id=s.pk, category_id=cat.pk) for s in subs
    )
    edition = dispatch.edition_create_alert(story=story(cat), by=None)
    dispatch.edition_dispatch(edition_id=edition.pk)
    [(first, last)] = enqueue.batch_ranges(edition)
    with django_assert_max_num_queries(11):
        report = batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    assert report.sent == 300
    assert Delivery.objects.filter(status="sent").count() == 300
