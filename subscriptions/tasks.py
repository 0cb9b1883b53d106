"""Celery entry points for subscriptions: ids in, a service call, nothing else."""

from __future__ import annotations

import smtplib
from typing import Any

from anymail.exceptions import AnymailAPIError
from celery import shared_task
from celery.contrib.django.task import DjangoTask
from django.db import InterfaceError, OperationalError

from newsroom.celery import request_queue
from subscriptions import emails
from subscriptions.importing.tasks import subscribers_import_run  # noqa: F401 (for the worker)
from subscriptions.sending import batches, dispatch, reconcile, retention, scheduling
from subscriptions.services import tracking

# Transient transport failures: try again later, with growing pauses. Permanent
# refusals (5xx) of subscription emails never get here: emails.subscriber_email_send
# records them and returns.
TRANSIENT = (smtplib.SMTPException, ConnectionError, TimeoutError, OSError, AnymailAPIError)


@shared_task(
    name="subscriptions.subscriber_email_send", base=DjangoTask,  # has delay_on_commit
    autoretry_for=TRANSIENT, retry_backoff=5, retry_backoff_max=600, retry_jitter=True,
    max_retries=10,
)
def subscriber_email_send(subscriber_id: int, kind: str) -> bool:
    return emails.subscriber_email_send(subscriber_id=subscriber_id, kind=kind)


@shared_task(
    name="subscriptions.tracking_event_process",  # queue "priority": CELERY_TASK_ROUTES
    base=DjangoTask,  # has delay_on_commit
    autoretry_for=(OperationalError, InterfaceError), retry_backoff=2, retry_backoff_max=120,
    retry_jitter=True, max_retries=8,
)
def tracking_event_process(**payload: Any) -> str:
    """One ESP event (bounce, complaint...); safe to run twice (deduped on event id)."""
    return tracking.tracking_event_process(**payload)


DB_TRANSIENT = (OperationalError, InterfaceError)


@shared_task(
    name="subscriptions.edition_dispatch",  # queue: "alerts" or "digests", chosen by the caller
    autoretry_for=DB_TRANSIENT, retry_backoff=2, retry_backoff_max=60, max_retries=10,
)
def edition_dispatch(edition_id: int) -> int:
    return dispatch.edition_dispatch(edition_id=edition_id)


@shared_task(
    name="subscriptions.deliveries_send", bind=True,
    autoretry_for=DB_TRANSIENT, retry_backoff=2, retry_backoff_max=60, max_retries=None,
)
def deliveries_send(self, edition_id: int, first_id: int, last_id: int) -> dict:
    report = batches.deliveries_send(edition_id=edition_id, first_id=first_id, last_id=last_id)
    if report.retry:  # transient transport errors: the same range again, later
        countdown = min(600, 5 * 2 ** min(self.request.retries, 7))
        raise self.retry(countdown=countdown, queue=request_queue(self.request),
                         max_retries=None)
    return {"sent": report.sent, "failed": report.failed, "skipped": report.skipped}


@shared_task(name="subscriptions.digests_schedule")
def digests_schedule() -> list[int]:
    return [edition.pk for edition in scheduling.digests_schedule()]


@shared_task(name="subscriptions.editions_reconcile")
def editions_reconcile() -> dict:
    report = reconcile.editions_reconcile()
    return {"redispatched": report.redispatched, "released": report.released,
            "requeued_editions": report.requeued_editions, "expired": report.expired,
            "finished": report.finished,
            "dispatch_completed": report.dispatch_completed}


@shared_task(name="subscriptions.ledger_purge")
def ledger_purge() -> dict:
    report = retention.ledger_purge()
    return {"editions": report.editions, "deliveries": report.deliveries,
            "tracking_events": report.tracking_events, "complete": report.complete}
