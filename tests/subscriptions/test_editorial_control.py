"""An editor's control of a send, through a real worker, Redis and SMTP listener:
pause and cancel stop within one transport call whatever the rate limit,
corrections reach the readers still waiting, a story that cannot be sent stops
the edition with its reason (no requeue loop), and unpublishing withdraws the
alert. Each test counts what the SMTP listener received.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

import pytest
from django.db.models import Count

from newsroom.celery import app
from newsroom.models import Category, Story
from newsroom.services import story_unpublish
from subscriptions.models import Delivery, Edition, Subscriber
from subscriptions.sending import dispatch, reconcile, scheduling, steering
from tests.subscriptions.sending.test_batches_worker import (
    audience,
    breaking,
    edition_done,
    served,
    wait_for,
)
from tests.workers import Worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RATE = 40
CALL = RATE // 4  # messages in one paced transport call (batches._calls)


@pytest.fixture
def paced(settings, smtp_sink):
    """Workers on a queue of their own with a global send rate; returns a starter."""
    smtp_sink.handler.reject.clear()
    with smtp_sink.handler.lock:
        smtp_sink.handler.messages.clear()
    queue = f"paced-{uuid.uuid4().hex[:8]}"
    settings.NEWSROOM_ALERTS_QUEUE = settings.NEWSROOM_DIGESTS_QUEUE = queue
    settings.NEWSROOM_STALL_AFTER = 3
    workers: list[Worker] = []

    def start(*, rate: int = RATE, batch: int = 1000) -> Worker:
        settings.NEWSROOM_BATCH_SIZE = batch
        env = {"NEWSROOM_ALERTS_QUEUE": queue, "NEWSROOM_DIGESTS_QUEUE": queue,
               "NEWSROOM_BATCH_SIZE": str(batch),
               "NEWSROOM_SEND_RATE": str(rate), "CELERY_TASK_TIME_LIMIT": "120"}
        # Each test starts with a full bucket, whatever ran before.
        with app.connection_for_write() as conn:
            conn.default_channel.client.delete("newsroom:throttle:smtp")
        worker = Worker(queues=queue, smtp_port=smtp_sink.port, concurrency=2, **env).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.kill()
    with app.connection_for_write() as conn:
        conn.default_channel.client.delete(queue)


def received(sink) -> int:
    with sink.handler.lock:
        return len(sink.handler.messages)


def none_held(edition: Edition) -> bool:
    return not Delivery.objects.filter(edition=edition, status="sending").exists()


def subjects(sink) -> list[str]:
    with sink.handler.lock:
        data = [m.data for m in sink.handler.messages]
    return [str(message_from_bytes(d, policy=policy.default)["Subject"]) for d in data]


def test_pause_then_cancel_stop_within_one_call_at_a_slow_rate(paced, smtp_sink):
    cat = Category.objects.create(name="Policy", slug="policy")
    addresses = audience(300, cat, "pace")
    paced(rate=RATE, batch=1000)
    edition = dispatch.edition_create_alert(story=breaking(cat), by=None)
    wait_for(lambda: received(smtp_sink) >= 60, 30, "the first 60 messages")

    assert steering.edition_pause(edition=edition)
    at_click = received(smtp_sink)
    wait_for(lambda: none_held(edition), 10, "the batch to give its rows back")
    time.sleep(1.0)  # four paced calls' worth: none may go
    assert received(smtp_sink) - at_click <= CALL
    edition.refresh_from_db()
    assert edition.status == Edition.Status.PAUSED and edition.requeued == 0

    assert steering.edition_resume(edition=edition)
    wait_for(lambda: received(smtp_sink) >= at_click + 60, 30, "sending to carry on")
    edition.refresh_from_db()
    assert steering.edition_cancel(edition=edition) >= 0
    at_click = received(smtp_sink)
    wait_for(lambda: none_held(edition), 10, "the batch to skip its rows")
    time.sleep(1.0)
    assert received(smtp_sink) - at_click <= CALL

    edition.refresh_from_db()
    missing, duplicates = served(smtp_sink, addresses)
    assert duplicates == 0
    assert edition.status == Edition.Status.CANCELLED
    assert edition.sent == received(smtp_sink) == 300 - len(missing)
    assert edition.sent + edition.skipped == edition.targeted == 300
    assert Delivery.objects.filter(edition=edition, status="skipped").count() == edition.skipped


def test_a_correction_mid_send_reaches_every_reader_not_yet_sent(paced, smtp_sink):
    cat = Category.objects.create(name="Policy", slug="policy")
    addresses = audience(400, cat, "fix")
    story = breaking(cat)
    paced(rate=100, batch=25)  # four seconds of sending: the correction lands mid-send
    edition = dispatch.edition_create_alert(story=story, by=None)
    wait_for(lambda: received(smtp_sink) >= 50, 30, "the first 50 messages")

    story.headline = "Corrected: the real numbers"
    story.save()
    at_save = received(smtp_sink)
    wait_for(lambda: edition_done(edition), 60, "the alert to finish")

    assert served(smtp_sink, addresses) == ([], 0)
    got = subjects(smtp_sink)
    later = got[at_save:]
    stale = [s for s in later if "Corrected" not in s]
    # Only batches already built when the save landed (two processes, one each).
    assert len(stale) <= 2 * 25
    assert all("Corrected" in s for s in later[2 * 25:])
    assert _count_by_revision(edition) == {1: sum("Corrected" not in s for s in got),
                           2: sum("Corrected" in s for s in got)}


def _count_by_revision(edition: Edition) -> dict[int, int]:
    return dict(Delivery.objects.filter(edition=edition, status="sent").order_by()
                .values("revision").annotate(n=Count("id")).values_list("revision", "n"))


def test_a_story_that_cannot_be_sent_stops_the_edition_with_its_reason(paced, smtp_sink):
    cat = Category.objects.create(name="Policy", slug="policy")
    addresses = audience(200, cat, "big")
    story = breaking(cat)
    paced(rate=RATE, batch=25)  # five seconds of sending: the correction lands mid-send
    edition = dispatch.edition_create_alert(story=story, by=None)
    wait_for(lambda: received(smtp_sink) >= 25, 30, "the first batch")

    body = story.body
    story.body = "A paragraph long enough to matter, over and over. " * 6000  # ~300 KB
    story.save()
    wait_for(lambda: Edition.objects.get(pk=edition.pk).status == Edition.Status.FAILED, 30,
             "the edition to fail")
    wait_for(lambda: none_held(edition), 10, "every batch to give its rows back")
    for _ in range(3):  # reconcile passes: nothing is put back, nothing counted
        reconcile.editions_reconcile()
    edition.refresh_from_db()
    assert edition.status == Edition.Status.FAILED
    assert "KB" in edition.note and "shorten the story" in edition.note
    assert edition.requeued == 0
    stopped_at = received(smtp_sink)
    time.sleep(0.5)
    assert received(smtp_sink) == stopped_at

    with pytest.raises(steering.EditionError, match="still cannot be sent"):
        steering.edition_retry_failed(edition=edition)
    story.body = body
    story.save()
    steering.edition_retry_failed(edition=edition)
    wait_for(lambda: edition_done(edition), 60, "the alert to finish after the fix")
    assert served(smtp_sink, addresses) == ([], 0)
    edition.refresh_from_db()
    assert (edition.sent, edition.failed, edition.requeued, edition.note) == (200, 0, 0, "")


def test_unpublishing_the_story_cancels_its_alert(paced, smtp_sink):
    cat = Category.objects.create(name="Policy", slug="policy")
    addresses = audience(200, cat, "gone")
    story = breaking(cat)
    paced(rate=RATE, batch=1000)
    edition = dispatch.edition_create_alert(story=story, by=None)
    wait_for(lambda: received(smtp_sink) >= 50, 30, "the first 50 messages")

    assert story_unpublish(story=story, by=None)  # commits at once: the receiver runs
    at_click = received(smtp_sink)
    edition.refresh_from_db()
    assert edition.status == Edition.Status.CANCELLED
    assert edition.note == "cancelled: the story was unpublished"
    wait_for(lambda: none_held(edition), 10, "the batch to skip its rows")
    time.sleep(1.0)
    assert received(smtp_sink) - at_click <= CALL
    edition.refresh_from_db()
    assert served(smtp_sink, addresses)[1] == 0
    assert edition.sent + edition.skipped == edition.targeted == 200


def test_story_text_that_looks_like_template_syntax_reaches_readers_verbatim(
        paced, smtp_sink):
    cat = Category.objects.create(name="Policy", slug="policy")
    addresses = audience(20, cat, "lit")
    story = breaking(cat)
    story.headline = "Vote @@email@@ {{ x }} %s $x %recipient.email% [[var:email]]"
    story.dek = "Dek @@unsubscribe_url@@ and {% if %}"
    story.save()
    paced(rate=0, batch=1000)
    edition = dispatch.edition_create_alert(story=story, by=None)
    wait_for(lambda: edition_done(edition), 30, "the alert to finish")
    assert served(smtp_sink, addresses) == ([], 0)
    message = message_from_bytes(smtp_sink.handler.to(addresses[0])[0].data,
                                 policy=policy.default)
    assert str(message["Subject"]) == f"Breaking: {story.headline}"
    text = message.get_body(("plain",)).get_content()
    assert story.headline in text and story.dek in text
    assert addresses[0] in text  # the reader's own value still fills its hole


# --- Who gets what, through the worker (issue: every story to each follower once) ----------

def test_a_digest_cancelled_while_sending_loses_no_story_for_the_next(paced, smtp_sink):
    """Cancelling a digest after dispatch: its readers' windows stay where they
    were, so the next day's digest holds that day's stories too, once."""
    due = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    world = Category.objects.create(name="World", slug="world")
    readers = audience(120, world, "dig")
    Subscriber.objects.update(digest_hour=7, last_digest_due_at=due - timedelta(days=1),
                              confirmed_at=due - timedelta(days=30))
    Story.objects.create(headline="Day one", slug="day-one", category=world, body="Text.",
                         status=Story.Status.PUBLISHED, published_at=due - timedelta(hours=2))
    paced(rate=RATE, batch=1000)
    [edition] = scheduling.digests_schedule(now=due + timedelta(minutes=2))
    wait_for(lambda: received(smtp_sink) >= 20, 30, "the first digests")
    steering.edition_cancel(edition=Edition.objects.get(pk=edition.pk))
    wait_for(lambda: none_held(edition), 10, "the batch to skip its rows")
    assert 0 < received(smtp_sink) < 120

    Story.objects.create(headline="Day two", slug="day-two", category=world, body="Text.",
                         status=Story.Status.PUBLISHED, published_at=due + timedelta(hours=20))
    [next_day] = scheduling.digests_schedule(now=due + timedelta(days=1, minutes=2))
    wait_for(lambda: edition_done(next_day), 60, "the next digest")
    for address in readers:
        texts = [message_from_bytes(m.data, policy=policy.default).get_body(("plain",))
                 .get_content() for m in smtp_sink.handler.to(address)]
        assert sum("Day one" in t for t in texts) == 1, address  # once, whichever day
        assert sum("Day two" in t for t in texts) == 1, address


def test_an_alert_skips_readers_who_unfollow_its_category_while_it_sends(paced, smtp_sink):
    """Readers whose batch has not started yet when they unfollow get nothing."""
    cat = Category.objects.create(name="Policy", slug="policy")
    addresses = audience(100, cat, "unf")
    paced(rate=RATE, batch=10)
    edition = dispatch.edition_create_alert(story=breaking(cat), by=None)
    wait_for(lambda: received(smtp_sink) >= 20, 30, "the first 20 messages")
    leaving = Subscriber.objects.filter(email__in=addresses[-40:])
    Subscriber.categories.through.objects.filter(subscriber__in=leaving).delete()
    wait_for(lambda: edition_done(edition), 60, "the alert to finish")
    counts = smtp_sink.handler.counts()
    assert not [a for a in addresses[-40:] if counts.get(a)]
    assert [a for a in addresses[:40] if counts.get(a) != 1] == []
    edition.refresh_from_db()
    assert edition.skipped >= 40 and edition.sent + edition.skipped == 100
