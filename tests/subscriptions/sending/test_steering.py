"""Pause, resume, cancel and retry, on an alert run in this process (from test_alerts)."""

import pytest

from subscriptions.models import Delivery, Edition
from subscriptions.sending import batches, dispatch, enqueue, steering
from tests.subscriptions.factories import breaking_story as story
from tests.subscriptions.factories import category, subscriber

pytestmark = pytest.mark.django_db


def test_pause_resume_cancel_and_retry_failed(smtp, no_enqueue):
    cat = category("policy")
    subs = [subscriber(f"p{i}@example.com", categories=[cat]) for i in range(3)]
    edition = dispatch.edition_create_alert(story=story(cat), by=None)
    dispatch.edition_dispatch(edition_id=edition.pk)
    assert steering.edition_pause(edition=edition)
    [(first, last)] = enqueue.batch_ranges(edition)
    report = batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    assert report.claimed == 0 and "paused" in report.reason and not smtp.handler.messages
    assert steering.edition_resume(edition=edition)
    batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    assert len(smtp.handler.messages) == 3
    assert steering.edition_cancel(edition=edition) == 0  # done already: nothing to cancel

    Delivery.objects.filter(subscriber=subs[0]).update(status="failed")
    Edition.objects.filter(pk=edition.pk).update(failed=1, sent=2)
    assert steering.edition_retry_failed(edition=edition) == 1
    [(first, last)] = enqueue.batch_ranges(edition)
    batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    assert len(smtp.handler.to(subs[0].email)) == 2
    edition.refresh_from_db()
    assert (edition.status, edition.failed) == ("done", 0)


def test_cancel_skips_what_is_left(no_enqueue):
    cat = category("policy")
    for i in range(4):
        subscriber(f"c{i}@example.com", categories=[cat])
    edition = dispatch.edition_create_alert(story=story(cat), by=None)
    dispatch.edition_dispatch(edition_id=edition.pk)
    assert steering.edition_cancel(edition=edition) == 4
    edition.refresh_from_db()
    assert (edition.status, edition.skipped) == ("cancelled", 4)
    [(first, last)] = enqueue.batch_ranges(edition, statuses=("skipped",))
    assert batches.deliveries_send(edition_id=edition.pk, first_id=first,
                                      last_id=last).claimed == 0
