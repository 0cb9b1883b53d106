"""Digests: due at each reader's hour in their own time zone, filtered and grouped."""

import email
from datetime import UTC, datetime, timedelta
from email import policy
from itertools import pairwise

import pytest

from newsroom.models import Story
from subscriptions.models import Delivery, Edition, Subscriber
from subscriptions.sending import batches, dispatch, enqueue
from subscriptions.sending.scheduling import digests_schedule, due_instant
from tests.subscriptions.factories import category, subscriber


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(("now", "tz", "hour", "frequency", "due"), [
    (utc(2026, 11, 27, 6, 30), "Europe/Berlin", 7, "daily", utc(2026, 11, 27, 6, 0)),
    (utc(2026, 11, 27, 5, 30), "Europe/Berlin", 7, "daily", utc(2026, 11, 26, 6, 0)),
    (utc(2026, 11, 27, 2, 0), "Asia/Kolkata", 7, "daily", utc(2026, 11, 27, 1, 30)),
    (utc(2026, 7, 1, 12, 0), "America/New_York", 8, "daily", utc(2026, 7, 1, 12, 0)),
    (utc(2026, 12, 1, 12, 0), "America/New_York", 8, "daily", utc(2026, 12, 1, 13, 0)
     - timedelta(days=1)),
    # 2026-11-27 is a Friday; weekly digests go out on Mondays (the default).
    (utc(2026, 11, 27, 9, 0), "UTC", 7, "weekly", utc(2026, 11, 23, 7, 0)),
    (utc(2026, 11, 30, 6, 59), "UTC", 7, "weekly", utc(2026, 11, 23, 7, 0)),
    (utc(2026, 11, 30, 7, 0), "UTC", 7, "weekly", utc(2026, 11, 30, 7, 0)),
    # Across the spring-forward night in Berlin (2026-03-29), 7:00 local is 05:00 UTC.
    (utc(2026, 3, 29, 5, 30), "Europe/Berlin", 7, "daily", utc(2026, 3, 29, 5, 0)),
])
def test_due_instant_in_the_readers_time_zone(now, tz, hour, frequency, due):
    assert due_instant(now, tz, hour, frequency) == due


@pytest.fixture
def no_enqueue(monkeypatch):
    monkeypatch.setattr(enqueue, "enqueue_dispatch", lambda edition: None)
    monkeypatch.setattr(enqueue, "enqueue_batches", lambda edition, **kwargs: 0)


def run(edition: Edition) -> Edition:
    dispatch.edition_dispatch(edition_id=edition.pk)
    edition.refresh_from_db()
    for first, last in enqueue.batch_ranges(edition):
        batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    edition.refresh_from_db()
    return edition


def publish(cat, headline: str, at: datetime, **fields) -> Story:
    return Story.objects.create(
        headline=headline, slug=headline.lower().replace(" ", "-"), category=cat,
        body=f"{headline} in detail.", status=Story.Status.PUBLISHED, published_at=at, **fields,
    )


def digest_text(smtp, address: str) -> list[str]:
    return [
        email.message_from_bytes(m.data, policy=policy.default).get_body(("plain",)).get_content()
        for m in smtp.handler.to(address)
    ]


@pytest.mark.django_db
def test_digests_are_filtered_grouped_and_skip_readers_with_nothing_new(smtp, no_enqueue):
    now = utc(2026, 11, 27, 7, 5)
    due = utc(2026, 11, 27, 7, 0)
    world = category("world", name="World", order=1)
    tech = category("tech", name="Tech", order=2)
    sport = category("sport", name="Sport", order=3)
    both = subscriber("both@example.com", categories=[tech, world], digest_hour=7)
    tech_only = subscriber("tech@example.com", categories=[tech], digest_hour=7)
    bored = subscriber("sport@example.com", categories=[sport], digest_hour=7)
    subscriber("later@example.com", categories=[world], digest_hour=9)  # not due yet
    subscriber("off@example.com", categories=[world], digest_hour=7, frequency="off")
    subscriber("pending@example.com", categories=[world], digest_hour=7, status="pending")
    subscriber("weekly@example.com", categories=[world], digest_hour=7, frequency="weekly")
    subscriber("new@example.com", categories=[world], digest_hour=7, confirmed_at=now)

    publish(world, "Summit ends without deal", due - timedelta(hours=3))
    publish(tech, "Chip export rules tighten", due - timedelta(hours=5))
    publish(tech, "Old tech story", due - timedelta(days=2))  # before the look-back
    publish(world, "After the digest was due", due + timedelta(minutes=2))
    draft = publish(world, "Unpublished draft", due - timedelta(hours=1))
    Story.objects.filter(pk=draft.pk).update(status=Story.Status.DRAFT)

    [edition] = digests_schedule(now=now)
    assert edition.key == "digest:daily:2026-11-27T07:00Z"
    assert digests_schedule(now=now + timedelta(minutes=5)) == []  # the next tick: no twin
    edition = run(edition)

    assert sorted(m.rcpt_to for m in smtp.handler.messages) == [
        "both@example.com", "tech@example.com"
    ]
    [text] = digest_text(smtp, "both@example.com")
    assert text.index("WORLD") < text.index("Summit ends without deal") < text.index("TECH")
    assert text.index("TECH") < text.index("Chip export rules tighten")
    for absent in ("Old tech story", "After the digest was due", "Unpublished draft", "SPORT"):
        assert absent not in text
    [text] = digest_text(smtp, "tech@example.com")
    assert "Chip export rules tighten" in text and "Summit" not in text
    message = email.message_from_bytes(smtp.handler.to("tech@example.com")[0].data,
                                       policy=policy.default)
    assert message["Subject"] == "Your daily Newsroom: Chip export rules tighten"
    assert message["List-Id"] == "Newsroom <digest.daily.lists.testserver>"

    assert (edition.status, edition.targeted, edition.sent) == ("done", 2, 2)
    for sub in (both, tech_only, bored):
        sub.refresh_from_db()
        assert sub.last_digest_due_at == due  # the next window starts here, news or not
    assert not Delivery.objects.filter(subscriber=bored).exists()


@pytest.mark.django_db
def test_the_next_digest_holds_only_what_is_new_since_the_last(smtp, no_enqueue):
    world = category("world", order=1)
    reader = subscriber("r@example.com", categories=[world], digest_hour=7)
    day1 = utc(2026, 11, 26, 7, 0)
    publish(world, "Monday story", day1 - timedelta(hours=2))
    run(digests_schedule(now=day1 + timedelta(minutes=1))[0])
    publish(world, "Tuesday story", day1 + timedelta(hours=5))
    smtp.handler.messages.clear()
    run(digests_schedule(now=day1 + timedelta(days=1, minutes=1))[0])
    [text] = digest_text(smtp, reader.email)
    assert "Tuesday story" in text and "Monday story" not in text


@pytest.mark.django_db
def test_a_digest_too_late_waits_for_the_next_one(no_enqueue, settings):
    subscriber(categories=[category("world")], digest_hour=7)
    due = utc(2026, 11, 27, 7, 0)
    late = due + timedelta(seconds=settings.NEWSROOM_DIGEST_MAX_LATENESS + 60)
    assert digests_schedule(now=late) == []


@pytest.mark.django_db
def test_one_edition_per_due_moment_across_time_zones(no_enqueue):
    world = category("world")
    subscriber("berlin@example.com", categories=[world], timezone="Europe/Berlin", digest_hour=8)
    subscriber("paris@example.com", categories=[world], timezone="Europe/Paris", digest_hour=8)
    subscriber("london@example.com", categories=[world], timezone="Europe/London", digest_hour=7)
    subscriber("tokyo@example.com", categories=[world], timezone="Asia/Tokyo", digest_hour=16)
    created = digests_schedule(now=utc(2026, 11, 27, 7, 2))
    assert [e.key for e in created] == ["digest:daily:2026-11-27T07:00Z"]
    slots = sorted(map(tuple, created[0].audience["slots"]))
    assert slots == [("Asia/Tokyo", 16), ("Europe/Berlin", 8), ("Europe/London", 7),
                     ("Europe/Paris", 8)]


@pytest.mark.django_db
def test_who_leaves_between_dispatch_and_send_gets_no_digest(smtp, no_enqueue):
    world = category("world")
    stays = subscriber("stays@example.com", categories=[world], digest_hour=7)
    leaves = subscriber("leaves@example.com", categories=[world], digest_hour=7)
    due = utc(2026, 11, 27, 7, 0)
    publish(world, "News", due - timedelta(hours=1))
    [edition] = digests_schedule(now=due + timedelta(minutes=1))
    dispatch.edition_dispatch(edition_id=edition.pk)
    Subscriber.objects.filter(pk=leaves.pk).update(status="unsubscribed")
    for first, last in enqueue.batch_ranges(edition):
        batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    assert [m.rcpt_to for m in smtp.handler.messages] == [stays.email]


@pytest.mark.django_db
def test_readers_with_the_same_topics_get_neighbouring_deliveries(no_enqueue):
    """Batches are id ranges: grouping contents keeps renders and ESP calls few."""
    world, tech = category("world"), category("tech")
    for i in range(12):
        subscriber(f"n{i}@example.com", categories=[world] if i % 2 else [world, tech],
                   digest_hour=7)
    due = utc(2026, 11, 27, 7, 0)
    publish(world, "News", due - timedelta(hours=1))
    [edition] = digests_schedule(now=due + timedelta(minutes=1))
    dispatch.edition_dispatch(edition_id=edition.pk)
    topics = [
        len(Subscriber.objects.get(pk=d.subscriber_id).categories.all())
        for d in Delivery.objects.filter(edition=edition).order_by("id")
    ]
    assert len(topics) == 12
    changes = sum(1 for a, b in pairwise(topics) if a != b)
    assert changes == 1  # two runs, not an interleaving


@pytest.mark.django_db
def test_a_story_unpublished_or_corrected_after_dispatch_changes_the_next_batches(
        smtp, no_enqueue, settings):
    """Each batch reads the stories afresh (contents are cached by story revision):
    a story unpublished after dispatch is in no later digest, a corrected one is
    in them as corrected."""
    settings.NEWSROOM_BATCH_SIZE = 1
    now, due = utc(2026, 11, 27, 7, 5), utc(2026, 11, 27, 7, 0)
    world = category("world", name="World")
    readers = [subscriber(f"r{i}@example.com", categories=[world], digest_hour=7)
               for i in range(3)]
    kept = publish(world, "Summit ends without deal", due - timedelta(hours=3))
    withdrawn = publish(world, "Wrong story", due - timedelta(hours=2))
    [edition] = digests_schedule(now=now)
    dispatch.edition_dispatch(edition_id=edition.pk)
    first, second, third = enqueue.batch_ranges(edition)

    batches.deliveries_send(edition_id=edition.pk, first_id=first[0], last_id=first[1])
    Story.objects.filter(pk=withdrawn.pk).update(status=Story.Status.DRAFT)
    batches.deliveries_send(edition_id=edition.pk, first_id=second[0], last_id=second[1])
    kept.headline = "Summit ends with a deal after all"
    kept.save()
    batches.deliveries_send(edition_id=edition.pk, first_id=third[0], last_id=third[1])

    by_id = {d.subscriber_id: d.id for d in Delivery.objects.filter(edition=edition)}
    texts = [digest_text(smtp, r.email)[0]
             for r in sorted(readers, key=lambda r: by_id[r.pk])]
    assert "Wrong story" in texts[0] and "Summit ends without deal" in texts[0]
    assert "Wrong story" not in texts[1] and "Summit ends without deal" in texts[1]
    assert "Wrong story" not in texts[2] and "Summit ends with a deal after all" in texts[2]
