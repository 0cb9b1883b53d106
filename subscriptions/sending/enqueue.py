"""Where the send path hands work to Celery: a dispatch, and an edition's batches.

The tasks (subscriptions/tasks.py) are the top layer: they load ids and call
the sending services. The services enqueue with `celery.current_app.send_task`
and the stable name on each task's decorator, so nothing below the tasks
imports them back: no import cycle, and none hidden in a function. A name and
its JSON-primitive arguments are a contract with subscriptions/tasks.py.
Passing a callable in from each caller was the other way; it would thread a
parameter through the admin, reconcile and the schedule for no gain.

Callers use these through the module (`enqueue.enqueue_batches(...)`), so one
place decides, and a test can keep the broker out by replacing them here.
"""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.conf import settings
from django.db import connection

from subscriptions.models import Delivery, Edition

DISPATCH_TASK = "subscriptions.edition_dispatch"
BATCH_TASK = "subscriptions.deliveries_send"
MAX_DISPATCH_DELAY = 300  # seconds; a dispatch delayed longer looks again then


def task_send(name: str, args: tuple[Any, ...], *, queue: str,
              countdown: float | None = None) -> None:
    """Enqueue the task called `name` on `queue` (CELERY_TASK_ROUTES does not pick
    these queues: alerts and digests go to their own, by edition)."""
    current_app.send_task(name, args=args, queue=queue, countdown=countdown)


def enqueue_dispatch(edition: Edition, countdown: float | None = None) -> None:
    task_send(DISPATCH_TASK, (edition.pk,), queue=edition.queue,
              countdown=min(countdown, MAX_DISPATCH_DELAY) if countdown else None)


def batch_ranges(edition: Edition, *, statuses: tuple[str, ...] = (Delivery.Status.QUEUED,),
                 after_id: int = 0) -> list[tuple[int, int]]:
    """(first id, last id) of each batch of deliveries still to send (ids above after_id)."""
    size = settings.NEWSROOM_BATCH_SIZE
    table = Delivery._meta.db_table
    marks = ", ".join(["%s"] * len(statuses))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT MIN(id), MAX(id) FROM (SELECT id, (ROW_NUMBER() OVER (ORDER BY id) - 1) "  # noqa: S608
            f"/ %s AS chunk FROM {table} WHERE edition_id = %s AND status IN ({marks}) "
            "AND id > %s) ranked GROUP BY chunk ORDER BY 1",
            [size, edition.pk, *statuses, after_id],
        )
        return [(first, last) for first, last in cursor.fetchall()]


def enqueue_batches(edition: Edition, *, after_id: int = 0) -> int:
    """One batch task per range of queued deliveries; returns how many."""
    ranges = batch_ranges(edition, after_id=after_id)
    for first, last in ranges:
        task_send(BATCH_TASK, (edition.pk, first, last), queue=edition.queue)
    return len(ranges)
