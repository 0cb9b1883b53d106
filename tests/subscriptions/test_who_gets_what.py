"""Who gets which story, across the ordinary accidents of a newsroom's day.

Readers' digest windows move only when a digest reached them (or they had
nothing new), so a cancelled digest, a skipped reader or a missed schedule
loses no story; due moments are real instants; late slots join their edition.
Each test is named after the scenario it reproduces.
"""

from __future__ import annotations

import email
import logging
from datetime import UTC, datetime, timedelta
from email import policy

import pytest
from django.core.cache import cache

from newsroom.models import Story
from subscriptions import selectors
from subscriptions.models import Delivery, Edition, Subscriber
from subscriptions.sending import batches, dispatch, enqueue, scheduling, steering
from subscriptions.sending.scheduling import digests_schedule, due_instant
from subscriptions.services.subscribers import (
    RequestInfo,
    subscriber_resubscribe,
    subscriber_unsubscribe,
)
from tests.subscriptions.factories import category, subscriber

pytestmark = pytest.mark.django_db

DUE = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)


@pytest.fixture
def no_enqueue(monkeypatch):
    monkeypatch.setattr(enqueue, "enqueue_dispatch", lambda edition, **kwargs: None)
    monkeypatch.setattr(enqueue, "enqueue_batches", lambda edition, **kwargs: 0)


def send_all(edition: Edition) -> Edition:
    for first, last in enqueue.batch_ranges(edition):
        batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    edition.refresh_from_db()
    return edition


def run(edition: Edition) -> Edition:
    dispatch.edition_dispatch(edition_id=edition.pk)
    edition.refresh_from_db()
    return send_all(edition)


def publish(cat, headline: str, at: datetime) -> Story:
    return Story.objects.create(
        headline=headline, slug=headline.lower().replace(" ", "-"), category=cat,
        body=f"{headline} in detail.", status=Story.Status.PUBLISHED, published_at=at,
    )


def texts(smtp, address: str) -> list[str]:
    return [email.message_from_bytes(m.data, policy=policy.default)
            .get_body(("plain",)).get_content() for m in smtp.handler.to(address)]


def test_cancelling_a_digest_after_dispatch_loses_none_of_its_stories(smtp, no_enqueue):
    world = category("world", name="World")
    reader = subscriber("r@example.com", categories=[world], digest_hour=7)
    publish(world, "First day story", DUE - timedelta(hours=3))
    [edition] = digests_schedule(now=DUE + timedelta(minutes=1))
    dispatch.edition_dispatch(edition_id=edition.pk)
    steering.edition_cancel(edition=Edition.objects.get(pk=edition.pk))
    reader.refresh_from_db()
    assert reader.last_digest_due_at == DUE - timedelta(days=1)  # its start, not its end

    publish(world, "Second day story", DUE + timedelta(hours=5))
    [next_day] = digests_schedule(now=DUE + timedelta(days=1, minutes=1))
    run(next_day)
    [text] = texts(smtp, reader.email)
    assert "First day story" in text and "Second day story" in text


def test_a_reader_unsubscribed_mid_edition_and_back_starts_afresh(smtp, no_enqueue):
    world = category("world", name="World")
    reader = subscriber("r@example.com", categories=[world], digest_hour=7,
                        last_digest_due_at=DUE - timedelta(days=1))
    publish(world, "Before they left", DUE - timedelta(hours=3))
    [edition] = digests_schedule(now=DUE + timedelta(minutes=1))
    dispatch.edition_dispatch(edition_id=edition.pk)
    info = RequestInfo()
    subscriber_unsubscribe(subscriber=reader, info=info, method="test", send_goodbye=False)
    send_all(Edition.objects.get(pk=edition.pk))
    assert smtp.handler.to(reader.email) == []  # skipped: they had left
    subscriber_resubscribe(subscriber=reader, info=info)
    reader.refresh_from_db()
    assert reader.last_digest_due_at > DUE  # the window starts at their return
    # Replayed in the past (a digest is never sent before it is due by the real clock).
    back = DUE + timedelta(hours=1)
    Subscriber.objects.filter(pk=reader.pk).update(confirmed_at=back, last_digest_due_at=back)
    publish(world, "After they came back", back + timedelta(minutes=1))
    [next_day] = digests_schedule(now=DUE + timedelta(days=1, minutes=1))
    run(next_day)
    [text] = texts(smtp, reader.email)
    assert "After they came back" in text and "Before they left" not in text


def test_a_reader_back_after_weeks_gets_no_backlog(smtp, no_enqueue):
    world = category("world", name="World")
    reader = subscriber("r@example.com", categories=[world], digest_hour=7,
                        last_digest_due_at=DUE - timedelta(days=30))
    for day in range(1, 20):
        publish(world, f"Old story {day}", DUE - timedelta(days=day))
    info = RequestInfo()
    subscriber_unsubscribe(subscriber=reader, info=info, method="test", send_goodbye=False)
    subscriber_resubscribe(subscriber=reader, info=info)
    reader.refresh_from_db()
    assert reader.last_digest_due_at > DUE  # the window starts at their return


@pytest.mark.parametrize(("tz", "hour", "now"), [
    # Pacific/Chatham skips 02:45 -> 03:45 on 2026-09-27: 03:00 does not exist there.
    ("Pacific/Chatham", 3, datetime(2026, 9, 26, 14, 5, tzinfo=UTC)),  # 03:50 local, new time
    ("Europe/Berlin", 2, datetime(2026, 3, 29, 1, 10, tzinfo=UTC)),  # 03:10 local
    ("America/New_York", 2, datetime(2026, 3, 8, 7, 5, tzinfo=UTC)),  # 03:05 local
    ("Australia/Lord_Howe", 2, datetime(2026, 10, 3, 15, 40, tzinfo=UTC)),  # 30-minute jump
])
def test_a_digest_due_in_a_skipped_hour_is_never_due_in_the_future(tz, hour, now):
    due = due_instant(now, tz, hour, "daily")
    assert due <= now
    for minutes in range(0, 24 * 60, 7):  # and anywhere around the change
        later = now + timedelta(minutes=minutes)
        assert due_instant(later, tz, hour, "daily") <= later


def test_a_digest_made_early_by_a_fast_clock_waits_for_its_due_moment(monkeypatch):
    calls = []
    monkeypatch.setattr(enqueue, "enqueue_dispatch",
                        lambda edition, **kwargs: calls.append(kwargs))
    world = category("world", name="World")
    subscriber("r@example.com", categories=[world], digest_hour=7)
    real_now = selectors.db_now()
    edition = Edition.objects.create(
        key="digest:daily:future", kind=Edition.Kind.DIGEST, frequency="daily",
        scheduled_at=real_now + timedelta(minutes=10), window_end=real_now + timedelta(minutes=10),
        audience={"frequency": "daily", "slots": [["UTC", 7]]},
    )
    assert dispatch.edition_dispatch(edition_id=edition.pk) == 0
    edition.refresh_from_db()
    assert edition.status == Edition.Status.PLANNED and not edition.deliveries.exists()
    assert 590 < calls[0]["countdown"] <= 602


def test_a_reader_whose_slot_appears_after_the_edition_was_made_joins_it(smtp, no_enqueue):
    world = category("world", name="World")
    subscriber("early@example.com", categories=[world], digest_hour=7)
    publish(world, "Morning news", DUE - timedelta(hours=2))
    [edition] = digests_schedule(now=DUE + timedelta(minutes=1))
    run(edition)
    # Moves to a slot due at the same instant (London is UTC in November), after dispatch.
    late = subscriber("late@example.com", categories=[world], digest_hour=7,
                      timezone="Europe/London")
    assert digests_schedule(now=DUE + timedelta(minutes=6)) == []  # no twin edition
    edition.refresh_from_db()
    assert ["Europe/London", 7] in edition.audience["slots"]
    send_all(edition)
    assert edition.status == Edition.Status.DONE and edition.targeted == 2
    [text] = texts(smtp, late.email)
    assert "Morning news" in text
    assert len(smtp.handler.to("early@example.com")) == 1


def test_an_alert_skips_a_reader_who_unfollowed_its_category_after_dispatch(smtp, no_enqueue):
    policy_cat = category("policy", name="Policy")
    stays = subscriber("stays@example.com", categories=[policy_cat])
    leaves = subscriber("leaves@example.com", categories=[policy_cat])
    story = Story.objects.create(
        headline="Vote", slug="vote", category=policy_cat, body="Text.", breaking=True,
        status=Story.Status.PUBLISHED, published_at=datetime.now(UTC) - timedelta(minutes=1))
    edition = dispatch.edition_create_alert(story=story, by=None)
    dispatch.edition_dispatch(edition_id=edition.pk)
    leaves.categories.clear()
    send_all(Edition.objects.get(pk=edition.pk))
    assert [m.rcpt_to for m in smtp.handler.messages] == [stays.email]
    assert Delivery.objects.get(subscriber=leaves).status == "skipped"


def test_a_schedule_down_past_the_lateness_catches_up_loudly(smtp, no_enqueue, caplog):
    world = category("world", name="World")
    reader = subscriber("r@example.com", categories=[world], digest_hour=7)
    publish(world, "While beat was down", DUE - timedelta(hours=2))
    digests_schedule(now=DUE - timedelta(minutes=2))  # its last run before it stopped
    with caplog.at_level(logging.WARNING, logger="subscriptions.sending"):
        [edition] = digests_schedule(now=DUE + timedelta(hours=7))
    assert edition.window_end == DUE and edition.note.startswith("caught up")
    assert any("caught up" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)
    run(edition)
    [text] = texts(smtp, reader.email)
    assert "While beat was down" in text


def test_a_late_slot_the_schedule_saw_in_time_is_not_caught_up(no_enqueue):
    world = category("world", name="World")
    subscriber("r@example.com", categories=[world], digest_hour=7)
    publish(world, "News", DUE - timedelta(hours=2))
    cache.set(scheduling._SCHEDULE_RUN_KEY, (DUE + timedelta(hours=6, minutes=55)).isoformat())
    # A slot past the lateness that earlier runs saw come and go: left to the next digest.
    assert digests_schedule(now=DUE + timedelta(hours=7)) == []


# --- A story's place in digests: when it went live, not its date -------------------------

def day(n: int) -> datetime:
    """Digest n's due moment (daily at 07:00 UTC, n days after DUE)."""
    return DUE + timedelta(days=n)


def digest_on(n: int, smtp) -> None:
    [edition] = digests_schedule(now=day(n) + timedelta(minutes=1))
    run(edition)


def live(story: Story, at: datetime) -> None:
    """As if published at `at` (services.story_publish stamps the real clock)."""
    Story.objects.filter(pk=story.pk).update(live_since=at)


def received_headlines(smtp, address: str) -> list[str]:
    return [line.strip()[2:] for text in texts(smtp, address) for line in text.splitlines()
            if line.strip().startswith("* ")]


@pytest.fixture
def reader(db):
    world = category("world", name="World")
    return subscriber("r@example.com", categories=[world], digest_hour=7,
                      last_digest_due_at=day(0)), world


def test_unpublished_before_a_digest_and_republished_after_it_is_in_the_next(
        smtp, no_enqueue, reader):
    from newsroom.services import story_publish, story_unpublish

    sub, world = reader
    story = publish(world, "Back again", day(0) + timedelta(hours=2))
    story_unpublish(story=story, by=None)
    digest_on(1, smtp)  # the story was down
    story_publish(story=story, by=None)
    live(story, day(1) + timedelta(hours=3))
    digest_on(2, smtp)
    assert received_headlines(smtp, sub.email) == ["Back again"]


def test_a_dated_draft_published_after_the_digest_of_its_date_is_in_the_next(
        smtp, no_enqueue, reader):
    from newsroom.services import story_publish

    sub, world = reader
    publish(world, "On time", day(0) + timedelta(hours=1))
    draft = Story.objects.create(headline="Dated draft", slug="dated", category=world,
                                 body="Text.", published_at=day(0) + timedelta(hours=2))
    digest_on(1, smtp)
    story_publish(story=draft, by=None)  # keeps its date, day 0
    draft.refresh_from_db()
    assert draft.published_at == day(0) + timedelta(hours=2) and draft.live_since > day(1)
    live(draft, day(1) + timedelta(hours=5))
    digest_on(2, smtp)
    assert received_headlines(smtp, sub.email) == ["On time", "Dated draft"]


def test_an_imported_story_dated_before_a_sent_digest_is_in_the_next(smtp, no_enqueue, reader):
    from newsroom.importer import StoryFile
    from newsroom.imports import story_import

    sub, world = reader
    publish(world, "On time", day(0) + timedelta(hours=1))
    digest_on(1, smtp)
    story_import(StoryFile(headline="Imported late", slug="late-import", category="world",
                           date=day(0) + timedelta(hours=2), body_markdown="Text."))
    assert Story.objects.get(slug="late-import").live_since > day(1)  # the real clock
    live(Story.objects.get(slug="late-import"), day(1) + timedelta(hours=1))
    digest_on(2, smtp)
    assert received_headlines(smtp, sub.email) == ["On time", "Imported late"]


def test_moving_a_published_storys_date_forward_repeats_nothing(smtp, no_enqueue, reader):
    sub, world = reader
    story = publish(world, "Moved", day(0) + timedelta(hours=2))
    digest_on(1, smtp)
    story.published_at = day(1) + timedelta(hours=4)  # into the next window, still past
    story.save()
    publish(world, "Next day", day(1) + timedelta(hours=2))
    digest_on(2, smtp)
    assert received_headlines(smtp, sub.email) == ["Moved", "Next day"]


def test_moving_a_published_storys_date_back_skips_nothing(smtp, no_enqueue, reader):
    sub, world = reader
    story = publish(world, "Moved", day(0) + timedelta(hours=2))
    story.published_at = day(-3)  # before the reader's window, before its digest
    story.save()
    digest_on(1, smtp)
    assert received_headlines(smtp, sub.email) == ["Moved"]


# --- Alerts sent again ---------------------------------------------------------------------

def test_a_cancelled_alert_can_be_sent_again_to_the_readers_it_did_not_reach(
        smtp, no_enqueue):
    policy_cat = category("policy", name="Policy")
    got_it = subscriber("got@example.com", categories=[policy_cat])
    waiting = subscriber("waiting@example.com", categories=[policy_cat])
    story = Story.objects.create(
        headline="Vote", slug="vote", category=policy_cat, body="Text.", breaking=True,
        status=Story.Status.PUBLISHED, published_at=datetime.now(UTC) - timedelta(minutes=1))
    first = dispatch.edition_create_alert(story=story, by=None)
    dispatch.edition_dispatch(edition_id=first.pk)
    Delivery.objects.filter(edition=first, subscriber=got_it).update(status="sent")
    steering.edition_cancel(edition=Edition.objects.get(pk=first.pk))

    again = dispatch.edition_create_alert(story=story, by=None)
    assert again.key == f"alert:story:{story.pk}:2"
    with pytest.raises(dispatch.AlertAlreadySent):
        dispatch.edition_create_alert(story=story, by=None)
    run(again)
    assert [m.rcpt_to for m in smtp.handler.messages] == [waiting.email]
    assert selectors.alert_audience(category_id=policy_cat.pk,
                                   not_reached_for=story.pk).count() == 0


def test_an_expired_alert_with_nothing_sent_can_be_sent_again(smtp, no_enqueue, settings):
    policy_cat = category("policy", name="Policy")
    reader = subscriber("r@example.com", categories=[policy_cat])
    story = Story.objects.create(
        headline="Vote", slug="vote", category=policy_cat, body="Text.", breaking=True,
        status=Story.Status.PUBLISHED, published_at=datetime.now(UTC) - timedelta(minutes=1))
    first = dispatch.edition_create_alert(story=story, by=None)
    Edition.objects.filter(pk=first.pk).update(
        scheduled_at=datetime.now(UTC) - timedelta(seconds=settings.NEWSROOM_ALERT_STALE_AFTER + 1))
    dispatch.edition_dispatch(edition_id=first.pk)
    assert Edition.objects.get(pk=first.pk).status == Edition.Status.EXPIRED
    run(dispatch.edition_create_alert(story=story, by=None))
    assert [m.rcpt_to for m in smtp.handler.messages] == [reader.email]
