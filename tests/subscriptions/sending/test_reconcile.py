"""editions_reconcile ends what is too old to send late and sets lost work going
(from test_alerts; a dispatch stopped halfway: test_dispatch)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from subscriptions.models import Delivery, Edition
from subscriptions.sending import dispatch, reconcile
from tests.subscriptions.factories import breaking_story as story
from tests.subscriptions.factories import category, subscriber

pytestmark = pytest.mark.django_db


def test_reconcile_expires_a_stale_alert_whose_dispatch_never_came(smtp, no_enqueue, settings):
    """The dispatch message was lost (or its queue is not consumed): reconcile, not
    the message, ends the alert, and counts it."""
    cat = category("policy")
    subscriber(categories=[cat])
    stale = timedelta(seconds=settings.NEWSROOM_ALERT_STALE_AFTER + 1)
    old = dispatch.edition_create_alert(story=story(cat), by=None)
    recent = dispatch.edition_create_alert(story=story(cat), by=None)
    digest = Edition.objects.create(key="digest:daily:test", kind=Edition.Kind.DIGEST,
                                    frequency="daily", scheduled_at=timezone.now() - stale,
                                    window_end=timezone.now() - stale)
    Edition.objects.filter(pk=old.pk).update(scheduled_at=timezone.now() - stale)
    Edition.objects.filter(pk=recent.pk).update(scheduled_at=timezone.now() - timedelta(
        seconds=settings.NEWSROOM_STALL_AFTER + 1))

    dry = reconcile.editions_reconcile(dry_run=True)
    assert dry.expired == [old.pk]
    assert Edition.objects.get(pk=old.pk).status == Edition.Status.PLANNED  # a dry run

    report = reconcile.editions_reconcile()
    assert report.expired == [old.pk]
    assert sorted(report.redispatched) == sorted([recent.pk, digest.pk])  # not too old to send
    old.refresh_from_db()
    assert old.status == Edition.Status.EXPIRED and "not sent late" in old.note
    assert old.finished_at is not None
    assert dispatch.edition_dispatch(edition_id=old.pk) == 0  # the late message does nothing
    assert not smtp.handler.messages and not Delivery.objects.exists()
    assert reconcile.editions_reconcile().expired == []  # once
