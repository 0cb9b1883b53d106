"""Find sends that stopped moving and set them going again (beat, every minute).

Each repair is its own function, run in the order of editions_reconcile's
docstring. What a run did is added to counters in Redis, which /metrics reads
(newsroom.ops.metrics): the key is owned here, the wording of each action there.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Count, F
from django.utils import timezone

from subscriptions.models import Delivery, Edition
from subscriptions.reconcile_counters import reconcile_actions_record
from subscriptions.sending import enqueue
from subscriptions.sending.dispatch import edition_dispatch_complete
from subscriptions.sending.steering import (
    alert_expire,
    alert_stale_after,
    edition_finish_if_complete,
    edition_log_state,
)

logger = logging.getLogger(__name__)



@dataclass
class ReconcileReport:
    redispatched: list[int]
    released: int  # deliveries taken back from dead batch runs
    requeued_editions: list[int]
    expired: list[int]
    finished: list[int]
    dispatch_completed: list[int] = field(default_factory=list)  # dispatch died halfway

    @property
    def acted(self) -> bool:
        return bool(self.redispatched or self.released or self.requeued_editions
                    or self.expired or self.finished or self.dispatch_completed)

    def counts(self) -> dict[str, int]:
        """Each action's count, as the /metrics counters add them up."""
        return {name: value if isinstance(value, int) else len(value)
                for name, value in asdict(self).items()}


def editions_reconcile(*, now: datetime | None = None, dry_run: bool = False) -> ReconcileReport:
    """Find sends that stopped moving and set them going again.

    * a planned alert older than NEWSROOM_ALERT_STALE_AFTER expires (counted
      in `expired`), whether or not its dispatch message ever arrives;
    * a planned edition whose dispatch message was lost is dispatched again;
    * deliveries claimed by a batch run that died (claimed longer ago than any
      task may run) go back to the queue: these are the only possible
      duplicates, and they are counted on the edition;
    * a sending edition whose dispatch stopped between its two steps (worker
      and dispatch message lost) and that has made no progress for a while has
      its dispatch completed: the rest of its rows written, every batch enqueued;
    * a sending edition with queued deliveries and no progress for a while
      (its batch messages were lost with Redis) gets its batches enqueued again;
      batch runs claim rows, so a batch that was not lost runs once anyway.
    """
    now = now or timezone.now()
    stall = timedelta(seconds=settings.NEWSROOM_STALL_AFTER)
    report = ReconcileReport([], 0, [], [], [])
    report.expired = _stale_alerts_expire(now=now, dry_run=dry_run)
    report.redispatched = _lost_dispatches_enqueue(
        before=now - stall, skip=report.expired, dry_run=dry_run)
    report.released = _dead_claims_release(
        before=now - timedelta(seconds=settings.NEWSROOM_CLAIM_TIMEOUT), dry_run=dry_run)
    for edition in Edition.objects.filter(
        status=Edition.Status.SENDING, last_progress_at__lt=now - stall
    ):
        _stalled_repair(edition, report, now=now, dry_run=dry_run)
    if not dry_run:
        reconcile_actions_record(report.counts())
    return report


def _stale_alerts_expire(*, now: datetime, dry_run: bool) -> list[int]:
    """Expired here rather than by a dispatch message that may never come (lost
    with Redis, or a queue nobody consumes): the edition's page and /metrics
    then say so within a minute of the deadline."""
    return [
        edition.pk for edition in Edition.objects.filter(
            status=Edition.Status.PLANNED, kind=Edition.Kind.ALERT,
            scheduled_at__lt=now - alert_stale_after(),
        )
        if dry_run or alert_expire(edition, now=now)
    ]


def _lost_dispatches_enqueue(*, before: datetime, skip: list[int], dry_run: bool) -> list[int]:
    """Planned editions still waiting for a dispatch due before `before`."""
    redispatched = []
    for edition in Edition.objects.filter(
        status=Edition.Status.PLANNED, scheduled_at__lte=before
    ).exclude(pk__in=skip):
        redispatched.append(edition.pk)
        if not dry_run:
            edition_log_state(edition, "dispatched again", level=logging.WARNING)
            enqueue.enqueue_dispatch(edition)
    return redispatched


def _dead_claims_release(*, before: datetime, dry_run: bool) -> int:
    """Queue again the deliveries claimed before `before` (their batch run died);
    returns how many, and counts them on each edition."""
    dead = Delivery.objects.filter(status=Delivery.Status.SENDING, claimed_at__lt=before)
    per_edition = dict(
        dead.values("edition_id").annotate(n=Count("id")).values_list("edition_id", "n")
    )
    if dry_run:
        return sum(per_edition.values())
    for edition_id in per_edition:
        with transaction.atomic():
            released = dead.filter(edition_id=edition_id).update(
                status=Delivery.Status.QUEUED, claim=None,
                last_error="requeued: its batch run died",
            )
            Edition.objects.filter(pk=edition_id).update(requeued=F("requeued") + released)
        logger.warning("edition #%s: %d deliveries requeued after a dead batch run",
                       edition_id, released,
                       extra={"edition_id": edition_id, "count": released})
    return sum(per_edition.values())


def _stalled_repair(edition: Edition, report: ReconcileReport, *, now: datetime,
                    dry_run: bool) -> None:
    """A sending edition with no progress for a while: complete its dispatch,
    enqueue its batches again, or mark it done, and say which in `report`."""
    if edition.dispatched_at is None:
        report.dispatch_completed.append(edition.pk)
        if not dry_run:
            edition_log_state(edition, "dispatch interrupted; completing it",
                              level=logging.WARNING)
            try:
                edition_dispatch_complete(edition=edition)
            except DatabaseError:  # the others still get their repairs; next run retries
                logger.exception("edition #%s: completing its dispatch failed", edition.pk,
                                 extra={"edition_id": edition.pk})
    elif Delivery.objects.filter(edition=edition, status=Delivery.Status.QUEUED).exists():
        report.requeued_editions.append(edition.pk)
        if not dry_run:
            Edition.objects.filter(pk=edition.pk).update(last_progress_at=now)
            batches = enqueue.enqueue_batches(edition)
            logger.warning("edition #%s stalled: %d batches enqueued again",
                           edition.pk, batches,
                           extra={"edition_id": edition.pk, "batches": batches})
    elif not Delivery.objects.filter(edition=edition, status=Delivery.Status.SENDING).exists():
        report.finished.append(edition.pk)
        if not dry_run:
            edition_finish_if_complete(edition_id=edition.pk)
