"""Create an alert and fan an edition out into deliveries and batches.

The path of a send:  edition_create_alert / scheduling.digests_schedule  ->
edition_dispatch (INSERT ... SELECT writes a delivery row per recipient, the
first two batches' worth first, and one task goes per range of delivery ids,
the first ones before the rest is written)  ->  the batch task (per batch).
Who gets an edition is decided in subscriptions.selectors; state changes
(fail, expire, finish) are steering's.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import (
    DateTimeField,
    Exists,
    F,
    Max,
    Min,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Power
from django.utils import timezone

from newsroom.models import Story
from subscriptions.models import Delivery, Edition, Subscriber
from subscriptions.selectors import (
    PERIOD,
    db_now,
    digest_audience,
    edition_recipients,
)
from subscriptions.sending import enqueue
from subscriptions.sending.content import alert_content_problem
from subscriptions.sending.steering import (
    EditionError,
    alert_expire,
    alert_stale_after,
    edition_fail,
    edition_finish_if_complete,
    edition_log_state,
)

# Batches written and enqueued before the rest of the audience: the first
# messages leave while the bulk of the rows is still being inserted.
FIRST_BATCHES = 2
# Where step 2 of a dispatch may run (a pause does not stop rows being written).
_DISPATCHABLE = (Edition.Status.SENDING, Edition.Status.PAUSED)
# An alert that ended like this may be sent again (to the readers it did not reach).
ALERT_ENDED_EARLY = (Edition.Status.CANCELLED, Edition.Status.EXPIRED)
ZERO = timedelta(0)


class AlertAlreadySent(EditionError):
    def __init__(self, edition: Edition) -> None:
        super().__init__(f"An alert for this story already exists (edition #{edition.pk}).")
        self.edition = edition


# --- Creating an alert ------------------------------------------------------------------

def edition_create_alert(*, story: Story, by: AbstractBaseUser | None = None) -> Edition:
    """An alert edition for a published breaking story.

    One per story, unless the earlier ones were cancelled or expired (the story
    was unpublished and is back, say): then a new one goes to the readers none
    of them reached, so nobody gets the same story's alert twice.
    """
    if not story.breaking:
        raise EditionError("Only stories marked breaking send alerts.")
    if not story.is_live:
        raise EditionError("Publish the story (and let its publication time arrive) first.")
    if problem := alert_content_problem(story=story):
        raise EditionError(f"Its alert cannot be sent: {problem}.")
    with transaction.atomic():
        earlier = list(Edition.objects.filter(kind=Edition.Kind.ALERT, stories=story)
                       .order_by("pk"))
        for edition in earlier:
            if edition.status not in ALERT_ENDED_EARLY:
                raise AlertAlreadySent(edition)
        key = f"alert:story:{story.pk}" + (f":{len(earlier) + 1}" if earlier else "")
        audience: dict[str, object] = {"category_id": story.category_id}
        if earlier:
            audience["story_id"] = story.pk  # leave out whom the earlier ones reached
        try:
            with transaction.atomic():
                edition, created = Edition.objects.get_or_create(key=key, defaults={
                    "kind": Edition.Kind.ALERT, "scheduled_at": timezone.now(),
                    "created_by": by, "audience": audience,
                })
        except IntegrityError:  # another editor's click made the same key first
            created = False
            edition = Edition.objects.get(key=key)
        if not created:
            raise AlertAlreadySent(edition)
        edition.stories.set([story])
        edition_log_state(edition, "planned", story_id=story.pk)
        transaction.on_commit(lambda: enqueue.enqueue_dispatch(edition))
    return edition


# --- Writing deliveries -------------------------------------------------------------------

def _topics_signature() -> Subquery:
    """A number equal for readers who follow the same categories (a bitmask sum)."""
    through = Subscriber.categories.through
    return Subquery(
        through.objects.filter(subscriber_id=OuterRef("pk")).order_by()
        .values("subscriber_id")
        .annotate(signature=Sum(Power(2, F("category_id") % 50)))
        .values("signature")[:1]
    )


def insert_deliveries(edition: Edition, audience: QuerySet[Subscriber], *, window: bool,
                      limit: int | None = None) -> int:
    """One INSERT ... SELECT: set-based, however large the audience. With a limit,
    the first `limit` rows of the same order (their ids come first)."""
    columns = ["edition_id", "subscriber_id", "status", "attempts", "message_id",
               "last_error", "window_start"]
    # Readers with the same content get neighbouring ids, so a batch (an id
    # range) holds few contents: fewer renders and larger ESP calls.
    ordering = ["window_start", "topics", "pk"] if window else ["pk"]
    if window:
        audience = audience.annotate(topics=_topics_signature())
    select = audience.order_by(*ordering).values_list(
        Value(edition.pk), "pk", Value(Delivery.Status.QUEUED), Value(0), Value(""),
        Value(""), "window_start" if window else Value(None, output_field=DateTimeField()),
    )
    if limit is not None:
        select = select[:limit]
    sql, params = select.query.sql_with_params()
    table = Delivery._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) {sql} "
            "ON CONFLICT (edition_id, subscriber_id) DO NOTHING",
            params,
        )
        return cursor.rowcount


# --- Dispatch ---------------------------------------------------------------------------------

def edition_dispatch(*, edition_id: int) -> int:
    """Write the edition's deliveries and enqueue its batches; returns the count targeted.

    Two steps, so that the first messages do not wait for the whole audience to
    be inserted (a second or more on PostgreSQL for a large one):
    1. take the planned edition (a conditional update, so dispatch runs once),
       write its first FIRST_BATCHES batches of rows (a digest: all of them),
       commit, enqueue them;
    2. edition_dispatch_complete: write the rest, mark it dispatched, enqueue
       the rest's batches.
    A run that finds the edition taken but not dispatched (this task delivered
    again, or retried, after its first run stopped between the steps) does step 2.
    """
    now = timezone.now()
    edition = Edition.objects.filter(pk=edition_id).first()
    if edition is None:
        return 0
    if edition.status != Edition.Status.PLANNED:
        if edition.status in _DISPATCHABLE and edition.started_at and not edition.dispatched_at:
            return edition_dispatch_complete(edition=edition) or 0
        return 0
    if not _dispatch_may_start(edition, now=now):
        return 0
    with transaction.atomic():
        if not Edition.objects.filter(pk=edition.pk, status=Edition.Status.PLANNED).update(
            status=Edition.Status.SENDING, started_at=now, last_progress_at=now,
            transport=settings.EMAIL_TRANSPORT,
        ):
            return 0
        recipients, window = edition_recipients(edition)
        # A digest's audience is sorted by window and topics: its first rows cost
        # as much to select as all of them, and a digest has no second to win.
        # It is written whole here; step 2 then only marks it dispatched.
        limit = (FIRST_BATCHES * settings.NEWSROOM_BATCH_SIZE
                 if edition.kind == Edition.Kind.ALERT else None)
        first = insert_deliveries(edition, recipients, window=window, limit=limit)
        last_id = Delivery.objects.filter(edition=edition).aggregate(last=Max("id"))["last"]
    edition_log_state(edition, "sending", first=first)
    enqueue.enqueue_batches(edition)  # every queued row is in the first batches
    return edition_dispatch_complete(
        edition=edition, after_id=last_id or 0, rest=limit is not None and first >= limit,
    ) or 0


def _dispatch_may_start(edition: Edition, *, now: datetime) -> bool:
    """Whether a planned edition may start now; if not, it is expired, failed or
    put off here, with the reason."""
    if edition.kind == Edition.Kind.ALERT and now - edition.scheduled_at > alert_stale_after():
        alert_expire(edition, now=now)
        return False
    # Checked before a row is written: a story corrected into something that
    # cannot be sent stops here, with the reason, not in every batch.
    if edition.kind == Edition.Kind.ALERT and (
            problem := alert_content_problem(story=edition.stories.get())):
        edition_fail(edition_id=edition.pk, reason=problem)
        return False
    if edition.kind == Edition.Kind.DIGEST and (early := edition.window_end - db_now()) > ZERO:
        # Made by a host whose clock runs fast: a digest never leaves before it is due.
        enqueue.enqueue_dispatch(edition, countdown=early.total_seconds() + 1)
        return False
    return True


def edition_dispatch_complete(*, edition: Edition, after_id: int = 0, rest: bool = True
                              ) -> int | None:
    """Step 2 of dispatch: write the rest of the deliveries (rest=False: the first
    batches held the whole audience), mark the edition dispatched, enqueue the
    batches of queued rows with ids above `after_id` (0: all of them, when it is
    not known which were enqueued). Returns the count targeted, or None if the
    edition is dispatched already (or was cancelled).

    Safe to run again, and at once: the insert skips rows that exist, and the
    conditional update opening the transaction holds the edition row (SQLite: the
    database) until commit, so a second run waits, then finds it dispatched. A
    run that dies rolls back, and the next one (a redelivered task, or
    editions_reconcile) completes it.
    """
    recipients, window = edition_recipients(edition)
    undispatched = Edition.objects.filter(
        pk=edition.pk, status__in=_DISPATCHABLE, started_at__isnull=False,
        dispatched_at__isnull=True,
    )
    if rest and edition.kind == Edition.Kind.ALERT:
        # Until the rest is written, progress is shown against the audience's size,
        # counted before any lock is taken. A digest's audience costs as much to
        # count as to write: its targeted stays 0 (progress unknown) meanwhile.
        undispatched.update(targeted=recipients.count())
    with transaction.atomic():
        now = timezone.now()
        if not undispatched.update(last_progress_at=now):
            return None
        count = Delivery.objects.filter(edition=edition).count()  # the first batches
        if rest:
            count += insert_deliveries(edition, recipients, window=window)
        if edition.kind == Edition.Kind.DIGEST:
            _digest_dispatched(edition)
        Edition.objects.filter(pk=edition.pk).update(targeted=count, dispatched_at=now)
    edition_log_state(edition, "dispatched", targeted=count)
    enqueue.enqueue_batches(edition, after_id=after_id)
    edition_finish_if_complete(edition_id=edition.pk)
    return count


def _digest_dispatched(edition: Edition) -> None:
    """A digest's rows are written: due readers with nothing new have had this
    moment, so their next window starts here. The others' windows move as their
    digests are sent; a first digest's look-back is written down now, so that
    cancelling it loses none of those stories either. The edition lists the
    stories any of its digests can hold."""
    has_row = Exists(Delivery.objects.filter(edition=edition, subscriber_id=OuterRef("pk")))
    digest_audience(edition).exclude(has_row).update(last_digest_due_at=edition.window_end)
    digest_audience(edition).filter(has_row, last_digest_due_at__isnull=True).update(
        last_digest_due_at=edition.window_end - PERIOD[edition.frequency])
    earliest = Delivery.objects.filter(edition=edition).aggregate(
        earliest=Min("window_start"))["earliest"]
    if earliest is not None:
        edition.stories.set(Story.objects.filter(
            status=Story.Status.PUBLISHED, live_since__gt=earliest,
            live_since__lte=edition.window_end, published_at__lte=edition.window_end,
        ))
