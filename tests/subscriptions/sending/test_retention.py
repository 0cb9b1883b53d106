"""The ledger stays small: old per-reader rows go in chunks, counters and consent stay."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from subscriptions import tasks
from subscriptions.models import ConsentRecord, Delivery, Edition, TrackingEvent
from subscriptions.sending.retention import ledger_purge
from tests.subscriptions import factories

pytestmark = pytest.mark.django_db

NOW = timezone.now()


def edition(key, *, status=Edition.Status.DONE, finished_days_ago=100, readers=()):
    finished = NOW - timedelta(days=finished_days_ago)
    ed = Edition.objects.create(
        key=key, kind=Edition.Kind.ALERT, status=status, scheduled_at=finished,
        finished_at=finished if status in (Edition.Status.DONE, Edition.Status.CANCELLED)
        else None, targeted=len(readers), sent=len(readers),
    )
    Delivery.objects.bulk_create(
        Delivery(edition=ed, subscriber=r, status=Delivery.Status.SENT) for r in readers)
    return ed


@pytest.fixture
def readers():
    return [factories.subscriber() for _ in range(7)]


def test_old_finished_editions_lose_rows_keep_counters(readers):
    old = edition("old", readers=readers)
    recent = edition("recent", finished_days_ago=10, readers=readers)
    report = ledger_purge(now=NOW, days=90, chunk=3)  # 7 rows: three chunks
    assert (report.editions, report.deliveries, report.complete) == (1, 7, True)
    assert not Delivery.objects.filter(edition=old).exists()
    assert Delivery.objects.filter(edition=recent).count() == 7
    old.refresh_from_db()
    assert (old.targeted, old.sent, old.status) == (7, 7, Edition.Status.DONE)
    assert old.ledger_purged_at is not None
    assert ledger_purge(now=NOW, days=90) == type(report)()  # nothing left: a no-op


@pytest.mark.parametrize("status", [Edition.Status.SENDING, Edition.Status.PAUSED,
                                    Edition.Status.PLANNED])
def test_unfinished_editions_are_never_touched(readers, status):
    ed = edition("running", status=status, readers=readers)
    assert ledger_purge(now=NOW, days=90).deliveries == 0
    assert Delivery.objects.filter(edition=ed).count() == 7


def test_failed_and_expired_editions_go_by_their_slot(readers):
    failed = edition("failed", status=Edition.Status.FAILED, readers=readers[:2])
    expired = edition("expired", status=Edition.Status.EXPIRED, finished_days_ago=5,
                      readers=readers[2:4])
    ledger_purge(now=NOW, days=90)
    assert not Delivery.objects.filter(edition=failed).exists()
    assert Delivery.objects.filter(edition=expired).count() == 2


def test_webhook_events_go_consent_and_suppression_stay(readers):
    reader = readers[0]
    reader.status = reader.Status.BOUNCED
    reader.suppression_reason = "hard bounce: 550 no such user"
    reader.save()
    ConsentRecord.objects.create(subscriber=reader, action=ConsentRecord.Action.SIGNUP)
    old_event = TrackingEvent.objects.create(esp="mailgun", event_id="e1",
                                             event_type="bounced", recipient=reader.email)
    TrackingEvent.objects.filter(pk=old_event.pk).update(received_at=NOW - timedelta(days=91))
    new_event = TrackingEvent.objects.create(esp="mailgun", event_id="e2",
                                             event_type="bounced", recipient=reader.email)
    consent_before = ConsentRecord.objects.count()
    report = ledger_purge(now=NOW, days=90)
    assert report.tracking_events == 1
    assert list(TrackingEvent.objects.values_list("pk", flat=True)) == [new_event.pk]
    assert ConsentRecord.objects.count() == consent_before
    reader.refresh_from_db()
    assert reader.suppression_reason == "hard bounce: 550 no such user"


def test_time_budget_stops_and_the_next_run_carries_on(readers):
    first, second = edition("a", readers=readers), edition("b", readers=readers)
    report = ledger_purge(now=NOW, days=90, chunk=2, time_budget=0)
    assert not report.complete
    assert 0 < report.deliveries < 14
    while not report.complete:
        report = ledger_purge(now=NOW, days=90, chunk=2, time_budget=0)
    assert not Delivery.objects.filter(edition__in=[first, second]).exists()
    assert Edition.objects.filter(ledger_purged_at__isnull=False).count() == 2


def test_zero_days_keeps_everything(readers):
    edition("old", finished_days_ago=5000, readers=readers)
    assert ledger_purge(now=NOW, days=0).deliveries == 0
    assert Delivery.objects.count() == 7


@override_settings(NEWSROOM_DELIVERY_RETENTION_DAYS=30)
def test_beat_task_uses_the_setting(readers):
    edition("month-old", finished_days_ago=31, readers=readers)
    edition("fresh", finished_days_ago=29, readers=readers)
    assert tasks.ledger_purge.apply().get() == {
        "editions": 1, "deliveries": 7, "tracking_events": 0, "complete": True}


def test_purge_is_on_the_beat_schedule():
    from django.conf import settings

    entry = settings.CELERY_BEAT_SCHEDULE["ledger-purge"]
    assert entry["task"] == tasks.ledger_purge.name
