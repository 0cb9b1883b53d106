"""Two-step dispatch: the first batches go before the rest of the audience is
written, an edition is done only once all of it is, and a dispatch that stopped
halfway is completed (by its redelivered task, a resume, or editions_reconcile)."""

import logging
import re
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings as django_settings
from django.db import OperationalError, connection, connections
from django.urls import reverse
from django.utils import timezone

from newsroom.models import Story
from subscriptions import tasks
from subscriptions.models import Delivery, Edition, Subscriber
from subscriptions.selectors import edition_progress
from subscriptions.sending import batches, dispatch, enqueue, reconcile, scheduling, steering
from tests.subscriptions.factories import category, subscriber

BATCH = 3
FIRST = dispatch.FIRST_BATCHES * BATCH
AUDIENCE = 20


@pytest.fixture
def enqueued(monkeypatch, settings):
    """Batch messages as (first id, last id, delivery rows written when it was sent)."""
    settings.NEWSROOM_BATCH_SIZE = BATCH
    sent: list[tuple[int, int, int]] = []

    def task_send(name, args, *, queue, countdown=None):
        assert name == enqueue.BATCH_TASK  # dispatches are recorded by `dispatches`
        edition_id, first, last = args
        sent.append((first, last, Delivery.objects.filter(edition_id=edition_id).count()))

    monkeypatch.setattr(enqueue, "task_send", task_send)
    return sent


@pytest.fixture
def dispatches(monkeypatch):
    """Edition ids whose dispatch task was enqueued."""
    calls: list[int] = []
    monkeypatch.setattr(enqueue, "enqueue_dispatch", lambda edition: calls.append(edition.pk))
    return calls


@pytest.fixture
def step_2_fails(monkeypatch):
    """The insert of the rest (step 2) raises, as when the database connection drops;
    set ["on"] to False to let it through."""
    real = dispatch.insert_deliveries
    switch = {"on": True}

    def insert(edition, audience, *, window, limit=None):
        if limit is None and switch["on"]:
            raise OperationalError("server closed the connection unexpectedly")
        return real(edition, audience, window=window, limit=limit)

    monkeypatch.setattr(dispatch, "insert_deliveries", insert)
    return switch


def alert(n: int = AUDIENCE) -> Edition:
    cat = category("policy")
    for i in range(n):
        subscriber(f"a{i:02d}@example.com", categories=[cat])
    story = Story.objects.create(
        category=cat, status=Story.Status.PUBLISHED, headline="Dam bursts", slug="dam-bursts",
        body="What we know.", breaking=True, published_at=timezone.now() - timedelta(minutes=1),
    )
    return dispatch.edition_create_alert(story=story, by=None)


def send(edition: Edition, ranges) -> None:
    for first, last, *_ in ranges:
        batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)


def ids(edition: Edition) -> list[int]:
    rows = Delivery.objects.filter(edition=edition).order_by("id")
    return list(rows.values_list("id", flat=True))


def covered(ranges, all_ids: list[int]) -> list[int]:
    return sorted(i for first, last, *_ in ranges for i in all_ids if first <= i <= last)


def stale(now=None) -> datetime:
    return (now or timezone.now()) + timedelta(seconds=django_settings.NEWSROOM_STALL_AFTER + 1)


# --- The normal path ------------------------------------------------------------------------

@pytest.mark.django_db
def test_the_first_batches_are_enqueued_before_the_rest_is_written(enqueued, dispatches):
    edition = alert()
    assert dispatch.edition_dispatch(edition_id=edition.pk) == AUDIENCE
    all_ids = ids(edition)
    assert len(all_ids) == AUDIENCE
    head, rest = enqueued[:dispatch.FIRST_BATCHES], enqueued[dispatch.FIRST_BATCHES:]
    assert [written for *_, written in head] == [FIRST] * dispatch.FIRST_BATCHES
    assert covered(head, all_ids) == all_ids[:FIRST]
    assert {written for *_, written in rest} == {AUDIENCE}
    assert covered(rest, all_ids) == all_ids[FIRST:]  # the first batches are not sent twice
    # The first rows are the head of the same order as the whole (subscriber id).
    by_id = Delivery.objects.filter(edition=edition).order_by("id")
    subscribers = list(by_id.values_list("subscriber_id", flat=True))
    assert subscribers == sorted(subscribers)
    edition.refresh_from_db()
    assert (edition.status, edition.targeted) == ("sending", AUDIENCE)
    assert edition.dispatched_at is not None


@pytest.mark.django_db
def test_a_dispatch_delivered_again_after_it_finished_does_nothing(enqueued, dispatches):
    edition = alert()
    dispatch.edition_dispatch(edition_id=edition.pk)
    before = list(enqueued)
    assert tasks.edition_dispatch(edition.pk) == 0
    assert enqueued == before and len(ids(edition)) == AUDIENCE


@pytest.mark.django_db
def test_nothing_is_dispatched_for_a_gone_or_unstarted_paused_edition(enqueued, dispatches):
    assert dispatch.edition_dispatch(edition_id=10**9) == 0
    edition = alert()
    assert steering.edition_pause(edition=edition)  # paused while still planned
    assert tasks.edition_dispatch(edition.pk) == 0
    assert dispatch.edition_dispatch_complete(edition=edition) is None
    edition.refresh_from_db()
    assert (edition.status, edition.started_at, ids(edition), enqueued) == ("paused", None, [], [])


@pytest.mark.django_db
def test_an_audience_within_the_first_batches_is_written_once(enqueued, dispatches,
                                                              step_2_fails):
    edition = alert(FIRST - 1)  # step 2 has nothing left to write: it does not try
    assert dispatch.edition_dispatch(edition_id=edition.pk) == FIRST - 1
    edition.refresh_from_db()
    assert (edition.targeted, len(ids(edition))) == (FIRST - 1, FIRST - 1)
    assert edition.dispatched_at is not None
    assert covered(enqueued, ids(edition)) == ids(edition)


@pytest.mark.django_db
def test_an_empty_audience_is_done_at_once(enqueued, dispatches):
    edition = alert(0)
    assert dispatch.edition_dispatch(edition_id=edition.pk) == 0
    edition.refresh_from_db()
    assert (edition.status, edition.targeted, enqueued) == ("done", 0, [])
    assert edition.dispatched_at is not None


# --- Stopped between the steps --------------------------------------------------------------

@pytest.mark.django_db
def test_when_step_2_fails_the_first_batches_still_go_and_the_edition_is_not_done(
        enqueued, dispatches, step_2_fails, smtp, admin_client):
    edition = alert()
    with pytest.raises(OperationalError):
        tasks.edition_dispatch(edition.pk)
    assert len(enqueued) == dispatch.FIRST_BATCHES
    assert {written for *_, written in enqueued} == {FIRST}
    edition.refresh_from_db()
    assert edition.status == "sending" and edition.dispatched_at is None
    assert len(ids(edition)) == FIRST
    # Progress is measured against the whole audience, not the rows written so far.
    assert edition.targeted == AUDIENCE

    send(edition, enqueued)
    edition.refresh_from_db()
    assert (edition.status, edition.sent) == ("sending", FIRST)  # not done: not dispatched
    assert not steering.edition_finish_if_complete(edition_id=edition.pk)
    assert edition_progress(edition, now=timezone.now()).percent == FIRST * 100 // AUDIENCE
    page = admin_client.get(reverse("admin:subscriptions_edition_change", args=[edition.pk]))
    assert re.search(r"Dispatched at:</label>\s*<div class=\"readonly\">-</div>",
                     page.content.decode())

    # Celery retries the task (or delivers it again): it completes step 2.
    step_2_fails["on"] = False
    head = len(enqueued)
    assert tasks.edition_dispatch(edition.pk) == AUDIENCE
    edition.refresh_from_db()
    assert edition.dispatched_at is not None and edition.targeted == AUDIENCE
    assert covered(enqueued[head:], ids(edition)) == ids(edition)[FIRST:]  # all still queued
    send(edition, enqueued[head:])
    edition.refresh_from_db()
    assert (edition.status, edition.sent) == ("done", AUDIENCE)
    assert Counter(m.rcpt_to for m in smtp.handler.messages) == {
        s.email: 1 for s in Subscriber.objects.all()
    }


@pytest.mark.django_db
def test_reconcile_completes_a_dispatch_stopped_halfway(enqueued, dispatches, step_2_fails,
                                                        smtp):
    edition = alert()
    with pytest.raises(OperationalError):
        dispatch.edition_dispatch(edition_id=edition.pk)
    step_2_fails["on"] = False  # the worker died; its task is lost

    assert reconcile.editions_reconcile().dispatch_completed == []  # not stale yet
    report = reconcile.editions_reconcile(now=stale(), dry_run=True)
    assert report.dispatch_completed == [edition.pk] and report.acted
    assert len(ids(edition)) == FIRST  # a dry run changes nothing

    head = len(enqueued)
    report = reconcile.editions_reconcile(now=stale())
    assert report.dispatch_completed == [edition.pk] and report.requeued_editions == []
    edition.refresh_from_db()
    assert edition.dispatched_at is not None and edition.targeted == AUDIENCE
    rows = Delivery.objects.filter(edition=edition)
    assert rows.count() == rows.values("subscriber_id").distinct().count() == AUDIENCE
    # Nobody knows whether the first batches were enqueued: every queued row is.
    assert covered(enqueued[head:], ids(edition)) == ids(edition)
    send(edition, enqueued)  # the first batches' messages were not lost after all
    edition.refresh_from_db()
    assert (edition.status, edition.sent) == ("done", AUDIENCE)
    assert sorted(Counter(m.rcpt_to for m in smtp.handler.messages).values()) == [1] * AUDIENCE
    assert reconcile.editions_reconcile(now=stale(stale())).dispatch_completed == []


@pytest.mark.django_db
def test_a_reconcile_whose_completion_fails_logs_it_and_repairs_the_rest(
        enqueued, dispatches, step_2_fails, caplog):
    broken = alert()
    with pytest.raises(OperationalError):
        dispatch.edition_dispatch(edition_id=broken.pk)
    stalled = Edition.objects.create(
        key="alert:story:999", kind="alert", status="sending", scheduled_at=timezone.now(),
        started_at=timezone.now(), dispatched_at=timezone.now(),
        last_progress_at=timezone.now(),
    )
    Delivery.objects.create(edition=stalled, subscriber=Subscriber.objects.first())
    with caplog.at_level(logging.INFO, logger="subscriptions.sending"):
        report = reconcile.editions_reconcile(now=stale())
    assert report.dispatch_completed == [broken.pk]
    assert report.requeued_editions == [stalled.pk]
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert f"edition #{broken.pk}: completing its dispatch failed" in error.getMessage()
    broken.refresh_from_db()
    assert broken.dispatched_at is None and len(ids(broken)) == FIRST
    assert broken.status == "sending"


@pytest.mark.django_db
def test_pause_and_resume_between_the_steps(enqueued, dispatches, step_2_fails):
    edition = alert()
    with pytest.raises(OperationalError):
        dispatch.edition_dispatch(edition_id=edition.pk)
    assert steering.edition_pause(edition=edition)
    assert steering.edition_resume(edition=edition)
    assert dispatches == [edition.pk]  # resuming completes the dispatch first
    assert steering.edition_pause(edition=edition)

    step_2_fails["on"] = False  # the dispatch task runs: paused, its rows are written anyway
    assert dispatch.edition_dispatch(edition_id=edition.pk) == AUDIENCE
    edition.refresh_from_db()
    assert (edition.status, edition.targeted) == ("paused", AUDIENCE)
    assert edition.dispatched_at is not None
    head = len(enqueued)
    assert steering.edition_resume(edition=edition)
    assert dispatches == [edition.pk]  # dispatched now: its batches are enqueued
    assert covered(enqueued[head:], ids(edition)) == ids(edition)


@pytest.mark.django_db
def test_cancel_between_the_steps_stops_the_dispatch(enqueued, dispatches, step_2_fails):
    edition = alert()
    with pytest.raises(OperationalError):
        dispatch.edition_dispatch(edition_id=edition.pk)
    assert steering.edition_cancel(edition=edition) == FIRST
    step_2_fails["on"] = False
    assert tasks.edition_dispatch(edition.pk) == 0
    assert dispatch.edition_dispatch_complete(edition=edition) is None
    edition.refresh_from_db()
    assert (edition.status, edition.targeted, edition.skipped) == ("cancelled", FIRST, FIRST)
    assert len(ids(edition)) == FIRST and edition.dispatched_at is None


# --- Digests --------------------------------------------------------------------------------

@pytest.mark.django_db
def test_a_digest_is_written_in_one_step_in_content_order(enqueued, dispatches, step_2_fails,
                                                          monkeypatch):
    """A digest's audience is sorted by window and topics, so its first rows cost as
    much as all of them: it is written whole, once; a failed write leaves it planned."""
    due = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    world, tech = category("world"), category("tech")
    for i in range(10):
        subscriber(f"d{i}@example.com", categories=[world] if i % 3 else [world, tech],
                   digest_hour=7,
                   last_digest_due_at=due - timedelta(days=1 + i % 2) if i % 4 else None)
    Story.objects.create(category=world, status=Story.Status.PUBLISHED, headline="News",
                         slug="news", body="Text.", published_at=due - timedelta(hours=1))
    [edition] = scheduling.digests_schedule(now=due + timedelta(minutes=1))

    with pytest.raises(OperationalError):  # the database drops during the insert
        dispatch.edition_dispatch(edition_id=edition.pk)
    assert ids(edition) == []
    assert not Subscriber.objects.filter(last_digest_due_at=due).exists()  # rolled back
    edition.refresh_from_db()
    assert edition.status == Edition.Status.PLANNED  # the task's retry starts it afresh

    step_2_fails["on"] = False
    limits = []
    real = dispatch.insert_deliveries
    monkeypatch.setattr(dispatch, "insert_deliveries", lambda *args, **kwargs: (
        limits.append(kwargs.get("limit")), real(*args, **kwargs))[1])
    assert dispatch.edition_dispatch(edition_id=edition.pk) == 10
    assert limits == [None]  # one INSERT ... SELECT, no second pass over the audience
    # Every reader has news: their windows move as each one's digest is sent, not here.
    assert not Subscriber.objects.filter(last_digest_due_at=due).exists()
    assert list(edition.stories.values_list("slug", flat=True)) == ["news"]
    edition.refresh_from_db()
    assert edition.dispatched_at is not None and edition.targeted == 10

    def signature(sub: Subscriber) -> int:
        return sum(2 ** (c % 50) for c in sub.categories.values_list("id", flat=True))

    rows = Delivery.objects.filter(edition=edition).order_by("id").select_related("subscriber")
    keys = [(d.window_start, signature(d.subscriber), d.subscriber_id) for d in rows]
    assert keys == sorted(keys)  # readers with the same content are neighbours


# --- Concurrency ----------------------------------------------------------------------------

def _in_thread(target):
    """Run target in a thread with its own database connection; returns (thread, box)."""
    box: dict = {}

    def run():
        try:
            box["result"] = target()
        except Exception as exc:  # reported by the test
            box["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


@pytest.mark.django_db(transaction=True)
def test_two_runs_of_step_2_at_once_complete_it_once(enqueued, dispatches, step_2_fails,
                                                      monkeypatch):
    edition = alert()
    with pytest.raises(OperationalError):
        dispatch.edition_dispatch(edition_id=edition.pk)
    step_2_fails["on"] = False
    insert = dispatch.insert_deliveries

    def slow(edition, audience, *, window, limit=None):
        time.sleep(0.3)  # long enough for the other run to arrive meanwhile
        return insert(edition, audience, window=window, limit=limit)

    monkeypatch.setattr(dispatch, "insert_deliveries", slow)
    runs = [_in_thread(lambda: dispatch.edition_dispatch_complete(
        edition=Edition.objects.get(pk=edition.pk))) for _ in range(2)]
    for thread, _box in runs:
        thread.join(30)
    boxes = [box for _thread, box in runs]
    assert {"result": AUDIENCE} in boxes and {"result": None} in boxes, boxes
    rows = Delivery.objects.filter(edition=edition)
    assert rows.count() == rows.values("subscriber_id").distinct().count() == AUDIENCE
    edition.refresh_from_db()
    assert edition.targeted == AUDIENCE and edition.dispatched_at is not None


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor == "sqlite",
                    reason="SQLite has one writer: a finish check waits for step 2's commit")
def test_a_batch_ending_while_the_rest_is_written_does_not_finish_the_edition(
        enqueued, dispatches, monkeypatch):
    edition = alert()
    writing, go = threading.Event(), threading.Event()
    real = dispatch.insert_deliveries

    def insert(edition, audience, *, window, limit=None):
        if limit is None:
            writing.set()
            go.wait(20)
        return real(edition, audience, window=window, limit=limit)

    monkeypatch.setattr(dispatch, "insert_deliveries", insert)
    thread, box = _in_thread(lambda: dispatch.edition_dispatch(edition_id=edition.pk))
    try:
        assert writing.wait(20)
        # The first batches are all through while the rest is being written.
        Delivery.objects.filter(edition=edition).update(status=Delivery.Status.SENT)
        assert not steering.edition_finish_if_complete(edition_id=edition.pk)
    finally:
        go.set()
        thread.join(30)
    assert box == {"result": AUDIENCE}
    edition.refresh_from_db()
    assert edition.status == "sending"
    assert Delivery.objects.filter(edition=edition, status="queued").count() == AUDIENCE - FIRST


# --- Indexes --------------------------------------------------------------------------------

@pytest.mark.django_db
def test_deliveries_carry_only_the_indexes_their_queries_need():
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, Delivery._meta.db_table)
    indexed = {tuple(c["columns"]) for c in found.values() if c["index"] or c["unique"]}
    assert ("edition_id",) not in indexed  # (edition, subscriber) and (edition, status) lead
    assert {("edition_id", "subscriber_id"), ("edition_id", "status")} <= indexed
    if connection.vendor == "sqlite":  # the dead-claims query reads the partial index
        plan = Delivery.objects.filter(
            status=Delivery.Status.SENDING, claimed_at__lt=timezone.now()
        ).explain()
        assert "delivery_sending_claimed" in plan, plan
