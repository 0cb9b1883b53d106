"""Editions: create them, fan them out into deliveries and batches, steer them.

The path of a send:  edition_create_alert / digests_schedule  ->  edition_dispatch
(INSERT ... SELECT writes a delivery row per recipient, the first two batches'
worth first, and one task goes per range of delivery ids, the first ones before
the rest is written)  ->  services.deliveries.deliveries_send (per batch).
editions_reconcile finds work that stopped moving and puts it back.
"""

from __future__ import annotations

import logging
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import partial

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import (
    Case,
    Count,
    DateTimeField,
    Exists,
    F,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Power
from django.utils import timezone

from newsroom.models import Story
from newsroom.ops.metrics import reconcile_actions_record
from subscriptions import edition_content
from subscriptions.edition_content import ContentError
from subscriptions.models import Delivery, Edition, Subscriber

logger = logging.getLogger(__name__)

PERIOD = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}


class EditionError(ValueError):
    """An edition cannot be created or changed as asked."""


class AlertAlreadySent(EditionError):
    def __init__(self, edition: Edition) -> None:
        super().__init__(f"An alert for this story already exists (edition #{edition.pk}).")
        self.edition = edition


def _log_state(edition: Edition, state: str, *, level: int = logging.INFO,
               **extra: object) -> None:
    """One line per state change; the id is in the text too, for LOG_FORMAT=text."""
    logger.log(level, "edition #%s %s (%s)", edition.pk, state, edition.key,
               extra={"edition_id": edition.pk, "edition_key": edition.key, "state": state,
                      **extra})


# --- Audiences -----------------------------------------------------------------------

def alert_audience(*, category_id: int, not_reached_for: int | None = None
                   ) -> QuerySet[Subscriber]:
    """Active subscribers who want alerts and follow the category (and, with
    `not_reached_for`, whom no earlier alert of that story reached)."""
    audience = Subscriber.objects.filter(
        status=Subscriber.Status.ACTIVE, wants_alerts=True,
    ).filter(Exists(Subscriber.categories.through.objects.filter(
        subscriber_id=OuterRef("pk"), category_id=category_id,
    )))
    if not_reached_for is not None:
        audience = audience.exclude(Exists(Delivery.objects.filter(
            subscriber_id=OuterRef("pk"), status=Delivery.Status.SENT,
            edition__kind=Edition.Kind.ALERT, edition__stories=not_reached_for,
        )))
    return audience


def _digest_audience(edition: Edition) -> QuerySet[Subscriber]:
    """Who is due this digest: readers of its slots whose window has not reached its
    due moment (`last_digest_due_at` moves only when a digest reached them, or
    they had nothing new) and who have no other digest on its way to them (it
    would cover the same window)."""
    due = edition.window_end
    assert due is not None  # a digest has a window
    slots = Q()
    for tz, hour in edition.audience["slots"]:
        slots |= Q(timezone=tz, digest_hour=hour)
    first_window = due - PERIOD[edition.frequency]
    pending = Delivery.objects.filter(
        subscriber_id=OuterRef("pk"), edition__kind=Edition.Kind.DIGEST,
        status__in=(Delivery.Status.QUEUED, Delivery.Status.SENDING),
    ).exclude(edition_id=edition.pk)
    return (
        Subscriber.objects.filter(
            status=Subscriber.Status.ACTIVE, frequency=edition.frequency,
            confirmed_at__lte=due,
        )
        .filter(slots)
        .filter(Q(last_digest_due_at__isnull=True) | Q(last_digest_due_at__lt=due))
        .filter(~Exists(pending))
        .annotate(window_start=Coalesce(F("last_digest_due_at"), Value(first_window)))
    )


def digest_windows_advance(*, edition: Edition, subscriber_ids: list[int]) -> int:
    """These readers got this digest (or had nothing new in it): their next
    window starts at its due moment. Never moves a window back."""
    if edition.kind != Edition.Kind.DIGEST or not subscriber_ids:
        return 0
    return Subscriber.objects.filter(pk__in=subscriber_ids).filter(
        Q(last_digest_due_at__isnull=True) | Q(last_digest_due_at__lt=edition.window_end)
    ).update(last_digest_due_at=edition.window_end)


def _topics_signature() -> Subquery:
    """A number equal for readers who follow the same categories (a bitmask sum)."""
    through = Subscriber.categories.through
    return Subquery(
        # django-stubs cannot see an annotate() after values(): "signature" is one.
        through.objects.filter(  # type: ignore[misc]
            subscriber_id=OuterRef("pk")).order_by()
        .values("subscriber_id")
        .annotate(signature=Sum(Power(2, F("category_id") % 50)))
        .values("signature")[:1]
    )


def _insert_deliveries(edition: Edition, audience: QuerySet, *, window: bool,
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


# --- Creating editions ------------------------------------------------------------------

def alert_content_problem(*, story: Story) -> str | None:
    """Why this story's alert cannot be sent as it is (in words), or None."""
    try:
        edition_content.alert_content(0, Story.objects.select_related("category").get(
            pk=story.pk))
    except ContentError as exc:
        return str(exc)
    return None


def alert_preview(*, story: Story) -> dict[str, str]:
    """What an alert's readers will get (their own links shown as the sign-up
    page's), and how the story reads in a digest; raises ContentError with the
    reason if either cannot be sent."""
    story = Story.objects.select_related("category").get(pk=story.pk)
    alert = edition_content.alert_content(0, story)
    digest = edition_content.digest_content(0, None, "daily", [story], [story.category])
    return {"subject": alert.subject, "preheader": alert.preheader,
            "html": edition_content.fill_generic(alert.html),
            "text": edition_content.fill_generic(alert.text),
            "digest_html": edition_content.fill_generic(digest.html)}


def alerts_unfinished(*, story_ids: list[int]) -> dict[int, Edition]:
    """Story id -> its alert edition that has not reached everyone yet."""
    return {
        edition.story_id: edition
        for edition in Edition.objects.filter(
            kind=Edition.Kind.ALERT, stories__in=story_ids,
            status__in=(*Edition.ACTIVE, Edition.Status.PAUSED, Edition.Status.FAILED),
        ).annotate(story_id=F("stories"))
    }


# An alert that ended like this may be sent again (to the readers it did not reach).
ALERT_ENDED_EARLY = (Edition.Status.CANCELLED, Edition.Status.EXPIRED)


def edition_create_alert(*, story: Story, by=None) -> Edition:
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
        _log_state(edition, "planned", story_id=story.pk)
        transaction.on_commit(lambda: _enqueue_dispatch(edition))
    return edition


ZERO = timedelta(0)


def _enqueue_dispatch(edition: Edition, countdown: float | None = None) -> None:
    from subscriptions.tasks import edition_dispatch

    edition_dispatch.apply_async(
        (edition.pk,), queue=edition.queue,
        # Celery takes None (no delay); celery-types says float.
        countdown=min(countdown, 300) if countdown else None,  # type: ignore[arg-type]
    )


_UTC = zoneinfo.ZoneInfo("UTC")


def _local_instant(day: date, hour: int, zone: zoneinfo.ZoneInfo) -> datetime:
    """`hour` o'clock on `day` in `zone`, as a UTC instant. An hour that does not
    exist there (clocks jumped over it) is taken forward by the jump, as the
    offset before the change gives it: 02:30 in a 02:00-03:00 gap is 03:30."""
    return datetime.combine(day, time(hour), tzinfo=zone).astimezone(_UTC)


def due_instant(now: datetime, tz: str, hour: int, frequency: str) -> datetime:
    """The latest instant at or before `now` when this slot's digest was due.

    Compared as instants: aware datetimes of one zone compare by their wall
    clocks, which across a clock change puts a due time that lies in the future
    before `now`.
    """
    zone = zoneinfo.ZoneInfo(tz)
    day = now.astimezone(zone).date()
    if frequency == "weekly":
        day -= timedelta(days=(day.weekday() - settings.NEWSROOM_WEEKLY_DIGEST_WEEKDAY) % 7)
    due = _local_instant(day, hour, zone)
    if due > now:
        due = _local_instant(day - PERIOD[frequency], hour, zone)
    return due


def db_now() -> datetime:
    """The database's clock: the one all hosts share (a beat host's may run fast)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT CURRENT_TIMESTAMP")
        value = cursor.fetchone()[0]
    if isinstance(value, str):  # SQLite: "YYYY-MM-DD HH:MM:SS" in UTC
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=_UTC)


# Where digests_schedule notes its last run (it runs every few minutes): a due
# moment after that run and past the lateness window was missed (beat was down).
_SCHEDULE_RUN_KEY = "newsroom:digests_schedule:last_run"
CATCH_UP_NOTE = Edition.CAUGHT_UP
DIGEST_SETTLE = timedelta(minutes=1)


def digests_schedule(*, now: datetime | None = None) -> list[Edition]:
    """Create (and dispatch) the digest editions due now; safe to run every few minutes.

    Subscribers are grouped by (frequency, time zone, hour): a few hundred
    groups at most. Each group's due moment is worked out in its own time zone
    (by the database's clock unless `now` is given), and one edition is made per
    (frequency, due moment); a slot that appears before that edition is sent
    joins it. A due moment more than NEWSROOM_DIGEST_MAX_LATENESS ago that this
    schedule never saw (it was not running) is caught up now, said in the log, on
    the edition and in /metrics; readers' windows only move when a digest reached
    them, so the caught-up digest holds the whole missed window.
    """
    now = now or db_now()
    # Due moments are taken a minute back: a story published just before one
    # (its transaction not yet committed when the schedule looks) is in its digest.
    reference = now - DIGEST_SETTLE
    late = timedelta(seconds=settings.NEWSROOM_DIGEST_MAX_LATENESS)
    last_run = _schedule_last_run()
    groups: dict[tuple[str, datetime], list[list]] = defaultdict(list)
    missed: set[tuple[str, datetime]] = set()
    slots = (
        Subscriber.objects.filter(status=Subscriber.Status.ACTIVE, frequency__in=PERIOD)
        .values_list("frequency", "timezone", "digest_hour").distinct()
    )
    for frequency, tz, hour in slots:
        try:
            due = due_instant(reference, tz, hour, frequency)
        except zoneinfo.ZoneInfoNotFoundError:
            logger.error("unknown time zone %r on subscribers; skipped", tz)
            continue
        if now - due > late:
            if last_run is None or due <= last_run:
                continue  # seen by an earlier run (or unknowable): its readers' next digest
            missed.add((frequency, due))
        groups[(frequency, due)].append([tz, hour])
    created = []
    for (frequency, due), group_slots in sorted(groups.items()):
        edition, new = Edition.objects.get_or_create(
            key=f"digest:{frequency}:{due:%Y-%m-%dT%H:%MZ}",
            defaults={
                "kind": Edition.Kind.DIGEST, "frequency": frequency, "scheduled_at": due,
                "window_end": due, "audience": {"frequency": frequency, "slots": group_slots},
                "note": (f"{CATCH_UP_NOTE}: due {due:%Y-%m-%d %H:%M} UTC, created "
                         f"{(now - due).total_seconds() / 3600:.1f} h late (the schedule "
                         "was not running)") if (frequency, due) in missed else "",
            },
        )
        if new:
            level = logging.WARNING if (frequency, due) in missed else logging.INFO
            _log_state(edition, CATCH_UP_NOTE if level == logging.WARNING else "planned",
                       level=level)
            created.append(edition)
            transaction.on_commit(partial(_enqueue_dispatch, edition))
        else:
            _edition_add_slots(edition, group_slots)
    _schedule_ran(now)
    return created


def _schedule_last_run() -> datetime | None:
    try:
        value = cache.get(_SCHEDULE_RUN_KEY)
    except Exception:  # Redis down: cannot tell a missed slot from a late-appearing one
        logger.warning("digests_schedule: last run unknown (cache unavailable)")
        return None
    return datetime.fromisoformat(value) if value else None


def _schedule_ran(now: datetime) -> None:
    try:
        last = _schedule_last_run()
        if last is None or now > last:
            cache.set(_SCHEDULE_RUN_KEY, now.isoformat(), timeout=None)
    except Exception:
        logger.warning("digests_schedule: could not note its run")


def _edition_add_slots(edition: Edition, slots: list[list]) -> int:
    """Readers whose slot appeared after `edition` (same due moment) was made join
    it: before it is dispatched through its audience, after that with rows of
    their own (a finished edition goes on sending). Returns deliveries added."""
    new = [slot for slot in slots if slot not in edition.audience["slots"]]
    if not new or edition.status not in (*Edition.ACTIVE, Edition.Status.PAUSED,
                                         Edition.Status.DONE):
        return 0
    with transaction.atomic():
        edition = Edition.objects.select_for_update().get(pk=edition.pk)
        edition.audience = {**edition.audience, "slots": [*edition.audience["slots"], *new]}
        Edition.objects.filter(pk=edition.pk).update(audience=edition.audience)
        if edition.dispatched_at is None:  # dispatch reads the audience when it runs
            return 0
        last_id = Delivery.objects.filter(edition=edition).aggregate(last=Max("id"))["last"]
        recipients, window = _recipients(edition)
        added = _insert_deliveries(edition, recipients, window=window)
        if added:
            Edition.objects.filter(pk=edition.pk).update(
                targeted=F("targeted") + added, finished_at=None, last_progress_at=timezone.now(),
                status=Case(When(status=Edition.Status.DONE, then=Value(Edition.Status.SENDING)),
                            default=F("status")),
            )
    _log_state(edition, "slots added", slots=new, added=added)
    if added:
        transaction.on_commit(lambda: enqueue_batches(edition, after_id=last_id or 0))
    return added


# --- Dispatch -------------------------------------------------------------------------------

# Batches written and enqueued before the rest of the audience: the first
# messages leave while the bulk of the rows is still being inserted.
FIRST_BATCHES = 2
# Where step 2 of a dispatch may run (a pause does not stop rows being written).
_DISPATCHABLE = (Edition.Status.SENDING, Edition.Status.PAUSED)


def _recipients(edition: Edition) -> tuple[QuerySet[Subscriber], bool]:
    """Who gets the edition, and whether each reader has a window (digests)."""
    if edition.kind == Edition.Kind.ALERT:
        # An alert sent again (audience["story_id"]): not to whom an earlier one reached.
        return alert_audience(category_id=edition.audience["category_id"],
                              not_reached_for=edition.audience.get("story_id")), False
    has_news = Exists(Story.objects.filter(
        status=Story.Status.PUBLISHED,
        category__subscribers=OuterRef("pk"),
        live_since__gt=OuterRef("window_start"),
        live_since__lte=edition.window_end,
        published_at__lte=edition.window_end,
    ))
    return _digest_audience(edition).filter(has_news), True


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
    if edition.kind == Edition.Kind.ALERT and now - edition.scheduled_at > _alert_stale_after():
        _alert_expire(edition, now=now)
        return 0
    # Checked before a row is written: a story corrected into something that
    # cannot be sent stops here, with the reason, not in every batch.
    if edition.kind == Edition.Kind.ALERT and (
            problem := alert_content_problem(story=edition.stories.get())):
        edition_fail(edition_id=edition.pk, reason=problem)
        return 0
    if (edition.kind == Edition.Kind.DIGEST and edition.window_end is not None
            and (early := edition.window_end - db_now()) > ZERO):
        # Made by a host whose clock runs fast: a digest never leaves before it is due.
        _enqueue_dispatch(edition, countdown=early.total_seconds() + 1)
        return 0
    with transaction.atomic():
        if not Edition.objects.filter(pk=edition.pk, status=Edition.Status.PLANNED).update(
            status=Edition.Status.SENDING, started_at=now, last_progress_at=now,
            transport=settings.EMAIL_TRANSPORT,
        ):
            return 0
        recipients, window = _recipients(edition)
        # A digest's audience is sorted by window and topics: its first rows cost
        # as much to select as all of them, and a digest has no second to win.
        # It is written whole here; step 2 then only marks it dispatched.
        limit = (FIRST_BATCHES * settings.NEWSROOM_BATCH_SIZE
                 if edition.kind == Edition.Kind.ALERT else None)
        first = _insert_deliveries(edition, recipients, window=window, limit=limit)
        last_id = Delivery.objects.filter(edition=edition).aggregate(last=Max("id"))["last"]
    _log_state(edition, "sending", first=first)
    enqueue_batches(edition)  # every queued row is in the first batches
    return edition_dispatch_complete(
        edition=edition, after_id=last_id or 0, rest=limit is not None and first >= limit,
    ) or 0


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
    recipients, window = _recipients(edition)
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
            count += _insert_deliveries(edition, recipients, window=window)
        if edition.kind == Edition.Kind.DIGEST:
            assert edition.window_end is not None  # a digest has a window
            # Due readers with nothing new have had this moment: their next window
            # starts here. The others' windows move as their digests are sent; a
            # first digest's look-back is written down now, so that cancelling it
            # loses none of those stories either.
            has_row = Exists(Delivery.objects.filter(edition=edition,
                                                     subscriber_id=OuterRef("pk")))
            _digest_audience(edition).exclude(has_row).update(
                last_digest_due_at=edition.window_end)
            _digest_audience(edition).filter(has_row, last_digest_due_at__isnull=True).update(
                last_digest_due_at=edition.window_end - PERIOD[edition.frequency])
            earliest = Delivery.objects.filter(edition=edition).aggregate(
                earliest=Min("window_start"))["earliest"]
            if earliest is not None:  # the stories any of its digests can hold
                edition.stories.set(Story.objects.filter(
                    status=Story.Status.PUBLISHED, live_since__gt=earliest,
                    live_since__lte=edition.window_end, published_at__lte=edition.window_end,
                ))
        Edition.objects.filter(pk=edition.pk).update(targeted=count, dispatched_at=now)
    _log_state(edition, "dispatched", targeted=count)
    enqueue_batches(edition, after_id=after_id)
    edition_finish_if_complete(edition_id=edition.pk)
    return count


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
    from subscriptions.tasks import deliveries_send

    ranges = batch_ranges(edition, after_id=after_id)
    for first, last in ranges:
        deliveries_send.apply_async((edition.pk, first, last), queue=edition.queue)
    return len(ranges)


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
        _log_state(edition, "done", sent=edition.sent, failed=edition.failed,
                   skipped=edition.skipped)
    return bool(done)


# --- Steering ---------------------------------------------------------------------------------

def edition_fail(*, edition_id: int, reason: str) -> bool:
    """Stop an edition that cannot go on by itself (its content cannot be built,
    say): it waits, failed, with the reason, for a person to fix the cause and
    retry it (edition_retry_failed). Retrying it automatically would fail again.
    """
    changed = Edition.objects.filter(
        pk=edition_id, status__in=(*Edition.ACTIVE, Edition.Status.PAUSED)
    ).update(status=Edition.Status.FAILED, note=reason[:500], last_progress_at=timezone.now())
    if changed:
        edition = Edition.objects.get(pk=edition_id)
        _log_state(edition, "failed", level=logging.ERROR, reason=reason[:500])
    return bool(changed)


def edition_pause(*, edition: Edition) -> bool:
    changed = Edition.objects.filter(
        pk=edition.pk, status__in=(Edition.Status.SENDING, Edition.Status.PLANNED)
    ).update(status=Edition.Status.PAUSED)
    if changed:
        _log_state(edition, "paused")
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
            _enqueue_dispatch(edition)
        elif edition.dispatched_at is None:  # its dispatch stopped halfway: the task
            _enqueue_dispatch(edition)  # completes it, then enqueues every batch
        else:
            enqueue_batches(edition)
        _log_state(edition, "resumed")
    return bool(changed)


def edition_cancel(*, edition: Edition, reason: str = "") -> int:
    """Stop for good; what was not sent yet is skipped (rows a running batch holds:
    before its next transport call). Returns deliveries skipped now."""
    with transaction.atomic():
        changed = Edition.objects.filter(
            pk=edition.pk,
            status__in=(*Edition.ACTIVE, Edition.Status.PAUSED, Edition.Status.FAILED),
        ).update(status=Edition.Status.CANCELLED, finished_at=timezone.now(),
                 note=(reason or "cancelled")[:500])
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
    _log_state(edition, "cancelled", skipped=skipped, reason=reason)
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
    _log_state(edition, "retrying failed", count=count)
    enqueue_batches(edition)
    return count


def _edition_resume_failed(edition: Edition) -> int:
    stale = timedelta(seconds=settings.NEWSROOM_ALERT_STALE_AFTER)
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
    _log_state(edition, "retrying after failure", count=count)
    if edition.started_at is None or edition.dispatched_at is None:
        transaction.on_commit(lambda: _enqueue_dispatch(edition))  # dispatch, or complete it
    else:
        transaction.on_commit(lambda: enqueue_batches(edition))
    return count


# --- Reconcile --------------------------------------------------------------------------------

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


def _alert_stale_after() -> timedelta:
    return timedelta(seconds=settings.NEWSROOM_ALERT_STALE_AFTER)


def _alert_expire(edition: Edition, *, now: datetime) -> bool:
    """Mark a planned alert expired (news too old to send late); False if it was not planned."""
    stale = _alert_stale_after()
    if not Edition.objects.filter(pk=edition.pk, status=Edition.Status.PLANNED).update(
        status=Edition.Status.EXPIRED, finished_at=now,
        note=f"not started within {stale}; not sent late",
    ):
        return False
    _log_state(edition, "expired", level=logging.ERROR)
    return True


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
    claim_timeout = timedelta(seconds=settings.NEWSROOM_CLAIM_TIMEOUT)
    report = ReconcileReport([], 0, [], [], [])

    # Expired here rather than by a dispatch message that may never come (lost
    # with Redis, or a queue nobody consumes): the edition's page and /metrics
    # then say so within a minute of the deadline.
    for edition in Edition.objects.filter(
        status=Edition.Status.PLANNED, kind=Edition.Kind.ALERT,
        scheduled_at__lt=now - _alert_stale_after(),
    ):
        if dry_run or _alert_expire(edition, now=now):
            report.expired.append(edition.pk)

    for edition in Edition.objects.filter(
        status=Edition.Status.PLANNED, scheduled_at__lte=now - stall
    ).exclude(pk__in=report.expired):
        report.redispatched.append(edition.pk)
        if not dry_run:
            _log_state(edition, "dispatched again", level=logging.WARNING)
            _enqueue_dispatch(edition)

    dead = Delivery.objects.filter(
        status=Delivery.Status.SENDING, claimed_at__lt=now - claim_timeout
    )
    per_edition = dict(
        dead.values("edition_id").annotate(n=Count("id")).values_list("edition_id", "n")
    )
    report.released = sum(per_edition.values())
    if not dry_run:
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

    stalled = Edition.objects.filter(
        status=Edition.Status.SENDING, last_progress_at__lt=now - stall
    )
    for edition in stalled:
        if edition.dispatched_at is None:
            report.dispatch_completed.append(edition.pk)
            if not dry_run:
                _log_state(edition, "dispatch interrupted; completing it",
                           level=logging.WARNING)
                try:
                    edition_dispatch_complete(edition=edition)
                except DatabaseError:  # the others still get their repairs; next run retries
                    logger.exception("edition #%s: completing its dispatch failed", edition.pk,
                                     extra={"edition_id": edition.pk})
            continue
        if Delivery.objects.filter(edition=edition, status=Delivery.Status.QUEUED).exists():
            report.requeued_editions.append(edition.pk)
            if not dry_run:
                Edition.objects.filter(pk=edition.pk).update(last_progress_at=now)
                batches = enqueue_batches(edition)
                logger.warning("edition #%s stalled: %d batches enqueued again",
                               edition.pk, batches,
                               extra={"edition_id": edition.pk, "batches": batches})
        elif not Delivery.objects.filter(
            edition=edition, status=Delivery.Status.SENDING
        ).exists():
            report.finished.append(edition.pk)
            if not dry_run:
                edition_finish_if_complete(edition_id=edition.pk)
    if not dry_run:
        reconcile_actions_record({
            "redispatched": len(report.redispatched), "released": report.released,
            "requeued_editions": len(report.requeued_editions),
            "expired": len(report.expired), "finished": len(report.finished),
            "dispatch_completed": len(report.dispatch_completed),
        })
    return report

