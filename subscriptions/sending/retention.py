"""Who-got-what is kept for a while, then removed; what an edition did is kept.

Per-reader delivery rows are personal data (an address received this mail at
this moment). They are needed while an edition sends and for a while after:
bounces and complaints arrive for days, support questions ("did I get Tuesday's
alert?") for weeks. After NEWSROOM_DELIVERY_RETENTION_DAYS past an edition's
end they are deleted (GDPR data minimisation), and the ledger stops growing with
every send. The edition keeps its counters (targeted, sent, failed, skipped,
requeued) for good, and `ledger_purged_at` says when its rows went. Webhook
events (TrackingEvent) go after the same time; consent records and
suppressions are never removed here: they are the proof and the promise.

Deletes run in chunks of PURGE_CHUNK rows, each its own short transaction, so a
purge never holds a lock a sending batch waits on; a run stops at its time
budget (after at least one chunk) and the next beat run carries on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from subscriptions.models import Delivery, Edition, TrackingEvent

logger = logging.getLogger(__name__)

PURGE_CHUNK = 5_000  # rows per DELETE: milliseconds of lock, a few MB of WAL
PURGE_TIME_BUDGET = 120.0  # seconds per run; the beat runs it hourly
FINISHED = (Edition.Status.DONE, Edition.Status.CANCELLED, Edition.Status.FAILED,
            Edition.Status.EXPIRED)


@dataclass
class PurgeReport:
    editions: int = 0
    deliveries: int = 0
    tracking_events: int = 0
    complete: bool = True


def ledger_purge(*, now: datetime | None = None, days: int | None = None,
                 chunk: int = PURGE_CHUNK, time_budget: float = PURGE_TIME_BUDGET,
                 ) -> PurgeReport:
    """Delete delivery rows of editions finished more than `days` ago, and older
    webhook events; `days` 0 keeps everything. Safe to run any time, twice."""
    days = settings.NEWSROOM_DELIVERY_RETENTION_DAYS if days is None else days
    report = PurgeReport()
    if days <= 0:
        return report
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deadline = time.monotonic() + time_budget
    for done_so_far, edition_id in enumerate(editions_to_purge(cutoff)):
        if done_so_far and time.monotonic() > deadline:  # every run makes progress
            report.complete = False
            break
        deleted, done = _delete_chunks(
            Delivery.objects.filter(edition_id=edition_id), chunk, deadline)
        report.deliveries += deleted
        if not done:
            report.complete = False
            break
        Edition.objects.filter(pk=edition_id).update(ledger_purged_at=timezone.now())
        report.editions += 1
    if report.complete:
        report.tracking_events, report.complete = _delete_chunks(
            TrackingEvent.objects.filter(received_at__lt=cutoff), chunk, deadline)
    if report.deliveries or report.tracking_events:
        logger.info("ledger purge: %d deliveries of %d editions, %d webhook events older "
                    "than %d days removed%s", report.deliveries, report.editions,
                    report.tracking_events, days, "" if report.complete else " (continues)")
    return report


def editions_to_purge(cutoff: datetime) -> list[int]:
    """Finished editions whose end (or, never started, their slot) is older than
    `cutoff` and whose rows are still here; oldest first."""
    return list(
        Edition.objects.filter(status__in=FINISHED, ledger_purged_at__isnull=True)
        .annotate(ended=Coalesce(F("finished_at"), F("scheduled_at")))
        .filter(Q(ended__lt=cutoff))
        .order_by("ended", "pk")
        .values_list("pk", flat=True)
    )


def _delete_chunks(rows, chunk: int, deadline: float) -> tuple[int, bool]:
    """Delete `rows` by primary key, `chunk` at a time; (deleted, all gone)."""
    deleted = 0
    while True:
        ids = list(rows.order_by("pk").values_list("pk", flat=True)[:chunk])
        if not ids:
            return deleted, True
        count, _ = rows.model.objects.filter(pk__in=ids).delete()
        deleted += count
        if len(ids) < chunk:
            return deleted, True
        if time.monotonic() > deadline:
            return deleted, False
