"""An edition's state changes: pause, resume, cancel, retry, fail, expire, finish.

Each change is one conditional update guarded by the current state, so a double
click or a race changes it once, and logs one line. This is the bottom of the
sending services: dispatch, scheduling, reconcile and the batches call it; it
calls none of them (what it must start again goes through `enqueue`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, F, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from subscriptions.models import TEXT_LIMIT, Delivery, Edition
from subscriptions.sending import enqueue
from subscriptions.sending.content import alert_content_problem

logger = logging.getLogger(__name__)

class EditionError(ValueError):
    """An edition cannot be created or changed as asked."""


def edition_log_state(edition: Edition, state: str, *, level: int = logging.INFO,
                      **extra: object) -> None:
    """One line per state change; the id is in the text too, for LOG_FORMAT=text."""
    logger.log(level, "edition #%s %s (%s)", edition.pk, state, edition.key,
               extra={"edition_id": edition.pk, "edition_key": edition.key, "state": state,
                      **extra})


def alert_stale_after() -> timedelta:
    return timedelta(seconds=settings.NEWSROOM_ALERT_STALE_AFTER)


def alert_expire(edition: Edition, *, now: datetime) -> bool:
    """Mark a planned alert expired (news too old to send late); False if it was not planned."""
    stale = alert_stale_after()
    if not Edition.objects.filter(pk=edition.pk, status=Edition.Status.PLANNED).update(
        status=Edition.Status.EXPIRED, finished_at=now,
        note=f"not started within {stale}; not sent late",
    ):
        return False
    edition_log_state(edition, "expired", level=logging.ERROR)
    return True


def edition_fail(*, edition_id: int, reason: str) -> bool:
    """Stop an edition that cannot go on by itself (its content cannot be built,
    say): it waits, failed, with the reason, for a person to fix the cause and
    retry it (edition_retry_failed). Retrying it automatically would fail again.
    """
    changed = Edition.objects.filter(
        pk=edition_id, status__in=(*Edition.ACTIVE, Edition.Status.PAUSED)
    ).update(status=Edition.Status.FAILED, note=reason[:TEXT_LIMIT],
             last_progress_at=timezone.now())
    if changed:
        edition = Edition.objects.get(pk=edition_id)
        edition_log_state(edition, "failed", level=logging.ERROR, reason=reason[:TEXT_LIMIT])
    return bool(changed)


def edition_finish_if_complete(*, edition_id: int) -> bool:
    """Mark a sending edition done once it is dispatched and nothing is left to send.

    One statement, so it reads the edition and its rows at one moment: the rows
    of step 2 commit with dispatched_at, so a batch that ends while they are
    being written sees the edition undispatched and leaves it sending.
    """
    left = Delivery.objects.filter(
        edition_id=edition_id, status__in=(Delivery.Status.QUEUED, Delivery.Status.SENDING)
    )
    done = Edition.objects.filter(
        ~Exists(left), pk=edition_id, status=Edition.Status.SENDING, dispatched_at__isnull=False,
    ).update(status=Edition.Status.DONE, finished_at=timezone.now())
    if done:
        edition = Edition.objects.get(pk=edition_id)
        edition_log_state(edition, "done", sent=edition.sent, failed=edition.failed,
                          skipped=edition.skipped)
    return bool(done)


def edition_pause(*, edition: Edition) -> bool:
    changed = Edition.objects.filter(
        pk=edition.pk, status__in=(Edition.Status.SENDING, Edition.Status.PLANNED)
    ).update(status=Edition.Status.PAUSED)
    if changed:
        edition_log_state(edition, "paused")
    return bool(changed)


def edition_resume(*, edition: Edition) -> bool:
    """Continue a paused edition: its batches are enqueued again."""
    changed = Edition.objects.filter(pk=edition.pk, status=Edition.Status.PAUSED).update(
        status=Edition.Status.SENDING, last_progress_at=timezone.now()
    )
    if changed:
        edition.refresh_from_db()
        if edition.started_at is None:  # paused before it was dispatched
            Edition.objects.filter(pk=edition.pk).update(status=Edition.Status.PLANNED)
            enqueue.enqueue_dispatch(edition)
        elif edition.dispatched_at is None:  # its dispatch stopped halfway: the task
            enqueue.enqueue_dispatch(edition)  # completes it, then enqueues every batch
        else:
            enqueue.enqueue_batches(edition)
        edition_log_state(edition, "resumed")
    return bool(changed)


def edition_cancel(*, edition: Edition, reason: str = "") -> int:
    """Stop for good; what was not sent yet is skipped (rows a running batch holds:
    before its next transport call). Returns deliveries skipped now."""
    with transaction.atomic():
        changed = Edition.objects.filter(
            pk=edition.pk,
            status__in=(*Edition.ACTIVE, Edition.Status.PAUSED, Edition.Status.FAILED),
        ).update(status=Edition.Status.CANCELLED, finished_at=timezone.now(),
                 note=(reason or "cancelled")[:TEXT_LIMIT])
        if not changed:
            return 0
        skipped = Delivery.objects.filter(
            edition=edition, status=Delivery.Status.QUEUED
        ).update(status=Delivery.Status.SKIPPED, last_error="edition cancelled")
        Edition.objects.filter(pk=edition.pk).update(skipped=F("skipped") + skipped)
        # Cancelled halfway through its dispatch: it targeted the rows written.
        Edition.objects.filter(
            pk=edition.pk, started_at__isnull=False, dispatched_at__isnull=True
        ).update(targeted=Coalesce(Subquery(
            Delivery.objects.filter(edition_id=edition.pk).order_by()
            .values("edition_id").annotate(n=Count("pk")).values("n")
        ), 0))
    edition_log_state(edition, "cancelled", skipped=skipped, reason=reason)
    return skipped


def alerts_withdraw(*, story_id: int) -> list[int]:
    """Cancel the alerts of a story that was unpublished and not sent to everyone yet
    (their links would lead to a page that is gone). Returns the editions cancelled."""
    cancelled = []
    for edition in Edition.objects.filter(
        kind=Edition.Kind.ALERT, stories=story_id,
        status__in=(*Edition.ACTIVE, Edition.Status.PAUSED, Edition.Status.FAILED),
    ):
        edition_cancel(edition=edition, reason="cancelled: the story was unpublished")
        cancelled.append(edition.pk)
    return cancelled


def edition_retry_failed(*, edition: Edition) -> int:
    """Queue the failed deliveries again (after fixing what made them fail); a
    failed edition (stopped by a content error, say) goes on sending, its content
    checked first. Returns the deliveries queued again."""
    if edition.status not in (Edition.Status.SENDING, Edition.Status.DONE, Edition.Status.FAILED):
        raise EditionError(f"A {edition.get_status_display().lower()} edition is not retried.")
    if edition.status == Edition.Status.FAILED:
        return _edition_resume_failed(edition)
    with transaction.atomic():
        count = Delivery.objects.filter(edition=edition, status=Delivery.Status.FAILED).update(
            status=Delivery.Status.QUEUED, attempts=0, last_error=""
        )
        if not count:
            return 0
        Edition.objects.filter(pk=edition.pk).update(
            failed=F("failed") - count, finished_at=None, status=Edition.Status.SENDING,
            last_progress_at=timezone.now(),
        )
    edition.refresh_from_db()
    edition_log_state(edition, "retrying failed", count=count)
    enqueue.enqueue_batches(edition)
    return count


def _edition_resume_failed(edition: Edition) -> int:
    stale = alert_stale_after()
    if edition.kind == Edition.Kind.ALERT:
        if timezone.now() - edition.scheduled_at > stale:
            raise EditionError(f"This alert is over {stale} old: it is not sent late. "
                               "Cancel it, and send a new story if the news still matters.")
        story = edition.stories.get()
        if problem := alert_content_problem(story=story):
            raise EditionError(f"Its content still cannot be sent: {problem}.")
    with transaction.atomic():
        if not Edition.objects.filter(pk=edition.pk, status=Edition.Status.FAILED).update(
            status=Edition.Status.PLANNED if edition.started_at is None
            else Edition.Status.SENDING,
            note="", last_progress_at=timezone.now(),
        ):
            raise EditionError("The edition changed meanwhile; reload its page.")
        count = Delivery.objects.filter(edition=edition, status=Delivery.Status.FAILED).update(
            status=Delivery.Status.QUEUED, attempts=0, last_error=""
        )
        if count:
            Edition.objects.filter(pk=edition.pk).update(failed=F("failed") - count)
    edition.refresh_from_db()
    edition_log_state(edition, "retrying after failure", count=count)
    if edition.started_at is None or edition.dispatched_at is None:
        # dispatch, or complete it
        transaction.on_commit(lambda: enqueue.enqueue_dispatch(edition))
    else:
        transaction.on_commit(lambda: enqueue.enqueue_batches(edition))
    return count
