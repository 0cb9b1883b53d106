"""Breaking alerts through the real SMTP listener: who gets them, once, and how they look."""

import email
from datetime import timedelta
from email import policy

import pytest
from django.utils import timezone

from newsroom.models import Story
from subscriptions.models import Delivery, Edition, Subscriber
from subscriptions.sending import batches
from subscriptions.services import editions
from subscriptions.tokens import Purpose, token_read
from tests.mailbox import unsubscribe_link
from tests.subscriptions.factories import category, subscriber

pytestmark = pytest.mark.django_db


def story(cat, **fields) -> Story:
    fields.setdefault("headline", "Dam bursts upstream; towns evacuated")
    fields.setdefault("slug", f"story-{Story.objects.count() + 1}")
    fields.setdefault("body", "First paragraph of the story.\n\n## What we know\n\nMore text.")
    fields.setdefault("dek", "Thousands leave their homes as water rises.")
    fields.setdefault("breaking", True)
    fields.setdefault("published_at", timezone.now() - timedelta(minutes=1))
    return Story.objects.create(category=cat, status=Story.Status.PUBLISHED, **fields)


def send_all(edition: Edition) -> None:
    """Run the edition's batches in this process (the worker path is tested elsewhere)."""
    editions.edition_dispatch(edition_id=edition.pk)
    edition.refresh_from_db()
    for first, last in editions.batch_ranges(edition):
        batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    edition.refresh_from_db()


@pytest.fixture
def no_enqueue(monkeypatch):
    """Keep the broker out of in-process tests: batches are run by send_all."""
    monkeypatch.setattr(editions, "_enqueue_dispatch", lambda edition: None)
    monkeypatch.setattr(editions, "enqueue_batches", lambda edition, **kwargs: 0)


def test_an_alert_reaches_exactly_the_right_subscribers(smtp, no_enqueue):
    policy_, tech = category("policy"), category("tech")
    wanted = [subscriber(f"yes{i}@example.com", categories=[policy_]) for i in range(3)]
    subscriber("both@example.com", categories=[policy_, tech])
    subscriber("no-alerts@example.com", categories=[policy_], wants_alerts=False)
    subscriber("other-topic@example.com", categories=[tech])
    subscriber("pending@example.com", categories=[policy_], status="pending")
    subscriber("left@example.com", categories=[policy_], status="unsubscribed")
    subscriber("bounced@example.com", categories=[policy_], status="bounced")

    edition = editions.edition_create_alert(story=story(policy_), by=None)
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
    edition = editions.edition_create_alert(story=story(cat, headline=headline), by=None)
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
    editions.edition_create_alert(story=s, by=None)
    with pytest.raises(editions.AlertAlreadySent):
        editions.edition_create_alert(story=s, by=None)
    assert Edition.objects.count() == 1


def test_only_published_breaking_stories_alert(no_enqueue):
    cat = category("policy")
    with pytest.raises(editions.EditionError, match="breaking"):
        editions.edition_create_alert(story=story(cat, breaking=False), by=None)
    draft = story(cat)
    Story.objects.filter(pk=draft.pk).update(status=Story.Status.DRAFT)
    draft.refresh_from_db()
    with pytest.raises(editions.EditionError, match="Publish"):
        editions.edition_create_alert(story=draft, by=None)
    scheduled = story(cat, published_at=timezone.now() + timedelta(hours=1))
    with pytest.raises(editions.EditionError, match="publication time"):
        editions.edition_create_alert(story=scheduled, by=None)


def test_a_stale_alert_is_not_sent_late(smtp, no_enqueue, settings):
    cat = category("policy")
    subscriber(categories=[cat])
    edition = editions.edition_create_alert(story=story(cat), by=None)
    Edition.objects.filter(pk=edition.pk).update(
        scheduled_at=timezone.now() - timedelta(seconds=settings.NEWSROOM_ALERT_STALE_AFTER + 1)
    )
    assert editions.edition_dispatch(edition_id=edition.pk) == 0
    edition.refresh_from_db()
    assert edition.status == "expired" and "not sent late" in edition.note
    assert not smtp.handler.messages and not Delivery.objects.exists()


def test_reconcile_expires_a_stale_alert_whose_dispatch_never_came(smtp, no_enqueue, settings):
    """The dispatch message was lost (or its queue is not consumed): reconcile, not
    the message, ends the alert, and counts it."""
    cat = category("policy")
    subscriber(categories=[cat])
    stale = timedelta(seconds=settings.NEWSROOM_ALERT_STALE_AFTER + 1)
    old = editions.edition_create_alert(story=story(cat), by=None)
    recent = editions.edition_create_alert(story=story(cat), by=None)
    digest = Edition.objects.create(key="digest:daily:test", kind=Edition.Kind.DIGEST,
                                    frequency="daily", scheduled_at=timezone.now() - stale,
                                    window_end=timezone.now() - stale)
    Edition.objects.filter(pk=old.pk).update(scheduled_at=timezone.now() - stale)
    Edition.objects.filter(pk=recent.pk).update(scheduled_at=timezone.now() - timedelta(
        seconds=settings.NEWSROOM_STALL_AFTER + 1))

    dry = editions.editions_reconcile(dry_run=True)
    assert dry.expired == [old.pk]
    assert Edition.objects.get(pk=old.pk).status == Edition.Status.PLANNED  # a dry run

    report = editions.editions_reconcile()
    assert report.expired == [old.pk]
    assert sorted(report.redispatched) == sorted([recent.pk, digest.pk])  # not too old to send
    old.refresh_from_db()
    assert old.status == Edition.Status.EXPIRED and "not sent late" in old.note
    assert old.finished_at is not None
    assert editions.edition_dispatch(edition_id=old.pk) == 0  # the late message does nothing
    assert not smtp.handler.messages and not Delivery.objects.exists()
    assert editions.editions_reconcile().expired == []  # once


def test_a_batch_run_twice_sends_once(smtp, no_enqueue):
    cat = category("policy")
    for i in range(5):
        subscriber(f"r{i}@example.com", categories=[cat])
    edition = editions.edition_create_alert(story=story(cat), by=None)
    send_all(edition)
    for first, last in [(0, 10**9)]:
        report = batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
        assert report.claimed == 0 and report.sent == 0
    assert len(smtp.handler.messages) == 5


def test_who_unsubscribes_in_flight_gets_nothing(smtp, no_enqueue):
    cat = category("policy")
    stays, leaves = subscriber(categories=[cat]), subscriber(categories=[cat])
    edition = editions.edition_create_alert(story=story(cat), by=None)
    editions.edition_dispatch(edition_id=edition.pk)
    leaves.status = "unsubscribed"
    leaves.save()
    for first, last in editions.batch_ranges(edition):
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
    edition = editions.edition_create_alert(story=story(cat), by=None)
    editions.edition_dispatch(edition_id=edition.pk)
    [(first, last)] = editions.batch_ranges(edition)
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
    edition = editions.edition_create_alert(story=story(cat), by=None)
    editions.edition_dispatch(edition_id=edition.pk)
    [(first, last)] = editions.batch_ranges(edition)
    assert batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last).retry
    report = batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    assert report.retry == [] and report.failed == 1
    edition.refresh_from_db()
    assert edition.status == "done" and edition.failed == 1


def test_pause_resume_cancel_and_retry_failed(smtp, no_enqueue):
    cat = category("policy")
    subs = [subscriber(f"p{i}@example.com", categories=[cat]) for i in range(3)]
    edition = editions.edition_create_alert(story=story(cat), by=None)
    editions.edition_dispatch(edition_id=edition.pk)
    assert editions.edition_pause(edition=edition)
    [(first, last)] = editions.batch_ranges(edition)
    report = batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    assert report.claimed == 0 and "paused" in report.reason and not smtp.handler.messages
    assert editions.edition_resume(edition=edition)
    batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    assert len(smtp.handler.messages) == 3
    assert editions.edition_cancel(edition=edition) == 0  # done already: nothing to cancel

    Delivery.objects.filter(subscriber=subs[0]).update(status="failed")
    Edition.objects.filter(pk=edition.pk).update(failed=1, sent=2)
    assert editions.edition_retry_failed(edition=edition) == 1
    [(first, last)] = editions.batch_ranges(edition)
    batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    assert len(smtp.handler.to(subs[0].email)) == 2
    edition.refresh_from_db()
    assert (edition.status, edition.failed) == ("done", 0)


def test_cancel_skips_what_is_left(no_enqueue):
    cat = category("policy")
    for i in range(4):
        subscriber(f"c{i}@example.com", categories=[cat])
    edition = editions.edition_create_alert(story=story(cat), by=None)
    editions.edition_dispatch(edition_id=edition.pk)
    assert editions.edition_cancel(edition=edition) == 4
    edition.refresh_from_db()
    assert (edition.status, edition.skipped) == ("cancelled", 4)
    [(first, last)] = editions.batch_ranges(edition, statuses=("skipped",))
    assert batches.deliveries_send(edition_id=edition.pk, first_id=first,
                                      last_id=last).claimed == 0


def test_batches_cover_every_delivery_once(no_enqueue, settings):
    settings.NEWSROOM_BATCH_SIZE = 7
    cat = category("policy")
    for i in range(30):
        subscriber(f"b{i}@example.com", categories=[cat])
    edition = editions.edition_create_alert(story=story(cat), by=None)
    editions.edition_dispatch(edition_id=edition.pk)
    ranges = editions.batch_ranges(edition)
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
    edition = editions.edition_create_alert(story=story(cat), by=None)
    editions.edition_dispatch(edition_id=edition.pk)
    [(first, last)] = editions.batch_ranges(edition)
    with django_assert_max_num_queries(11):
        report = batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    assert report.sent == 300
    assert Delivery.objects.filter(status="sent").count() == 300
