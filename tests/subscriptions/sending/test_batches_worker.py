"""The delivery engine through real Celery workers on the real broker, with faults.

Each test ends the same way: every targeted subscriber got the edition, and
duplicates stay within what the edition itself counted as possibly resent.
"""

import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from newsroom.celery import app
from newsroom.models import Category, Story
from subscriptions.models import Delivery, Edition, Subscriber
from subscriptions.sending import dispatch, reconcile
from tests.workers import Worker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def audience(n: int, cat: Category, prefix: str) -> list[str]:
    subs = Subscriber.objects.bulk_create(
        Subscriber(email=f"{prefix}{i}@example.com", status="active", wants_alerts=True,
                   confirmed_at=timezone.now())
        for i in range(n)
    )
    Subscriber.categories.through.objects.bulk_create(
        Subscriber.categories.through(subscriber_id=s.pk, category_id=cat.pk) for s in subs
    )
    return [s.email for s in subs]


def breaking(cat: Category) -> Story:
    return Story.objects.create(
        headline="Breaking news", slug=f"breaking-{uuid.uuid4().hex[:6]}", category=cat,
        body="What happened.", breaking=True, status=Story.Status.PUBLISHED,
        published_at=timezone.now() - timedelta(minutes=1),
    )


def wait_for(predicate, timeout: float, what: str, tick=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tick:
            tick()
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def edition_done(edition: Edition) -> bool:
    edition.refresh_from_db()
    return edition.status == Edition.Status.DONE


def served(sink, addresses: list[str]) -> tuple[list[str], int]:
    counts = sink.handler.counts()
    missing = [a for a in addresses if counts.get(a, 0) == 0]
    duplicates = sum(counts.get(a, 0) - 1 for a in addresses if counts.get(a, 0) > 1)
    return missing, duplicates


@pytest.fixture
def sink(smtp_sink):
    smtp_sink.handler.reject.clear()
    with smtp_sink.handler.lock:
        smtp_sink.handler.messages.clear()
    yield smtp_sink
    smtp_sink.handler.delay = 0.0


def test_an_alert_goes_out_through_the_worker(celery_worker, sink):
    cat = Category.objects.create(name="Policy", slug="policy")
    addresses = audience(60, cat, "e2e")
    edition = dispatch.edition_create_alert(story=breaking(cat), by=None)
    wait_for(lambda: edition_done(edition), 60, "the alert to finish")
    assert served(sink, addresses) == ([], 0)
    assert (edition.targeted, edition.sent, edition.failed, edition.requeued) == (60, 60, 0, 0)


@pytest.fixture
def drill(settings, sink):
    """A queue of its own, small batches, short timeouts: a fault drill in seconds."""
    queue = f"drill-{uuid.uuid4().hex[:8]}"
    settings.NEWSROOM_ALERTS_QUEUE = queue
    settings.NEWSROOM_CLAIM_TIMEOUT = 8
    settings.NEWSROOM_STALL_AFTER = 3
    sink.handler.delay = 0.004
    env = {"NEWSROOM_ALERTS_QUEUE": queue, "NEWSROOM_BATCH_SIZE": "50",
           "CELERY_TASK_TIME_LIMIT": "6"}
    settings.NEWSROOM_BATCH_SIZE = 50
    workers: list[Worker] = []

    def start() -> Worker:
        worker = Worker(queues=queue, smtp_port=sink.port, concurrency=2, **env).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.kill()
    with app.connection_for_write() as conn:
        conn.default_channel.client.delete(queue)


def test_a_worker_killed_mid_edition_loses_nothing(drill, sink):
    cat = Category.objects.create(name="Policy", slug="policy")
    addresses = audience(1500, cat, "kill")
    first = drill()
    edition = dispatch.edition_create_alert(story=breaking(cat), by=None)
    wait_for(lambda: Edition.objects.get(pk=edition.pk).sent >= 450, 60, "30% progress")
    first.kill()
    held = Delivery.objects.filter(edition=edition, status="sending").count()
    drill()  # a replacement; the reconcile task (run here as beat would) recovers the rest
    wait_for(lambda: edition_done(edition), 120, "the edition to finish",
             tick=lambda: reconcile.editions_reconcile())
    missing, duplicates = served(sink, addresses)
    assert missing == []
    assert duplicates <= edition.requeued <= 2 * 50  # at most the killed worker's batches
    assert edition.requeued == held
    assert edition.sent == 1500 and edition.failed == 0


def test_broker_queue_lost_mid_edition_loses_nothing(drill, sink):
    cat = Category.objects.create(name="Policy", slug="policy")
    addresses = audience(1500, cat, "lost")
    drill()
    edition = dispatch.edition_create_alert(story=breaking(cat), by=None)
    wait_for(lambda: Edition.objects.get(pk=edition.pk).sent >= 750, 60, "50% progress")
    with app.connection_for_write() as conn:  # as if Redis restarted without its data
        assert conn.default_channel.client.delete(edition.queue) == 1
    wait_for(lambda: edition_done(edition), 120, "the edition to finish",
             tick=lambda: reconcile.editions_reconcile())
    assert served(sink, addresses) == ([], 0)
    assert edition.requeued == 0 and edition.sent == 1500
