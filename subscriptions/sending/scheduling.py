"""Digests: when each reader's is due, which editions to make, and their windows.

digests_schedule runs every few minutes (beat); it groups readers by
(frequency, time zone, hour), works out each group's due moment and makes one
edition per due moment, which it hands to dispatch. A reader's window (the
stories a digest may hold) starts where the last digest that reached them was due.
"""

from __future__ import annotations

import logging
import zoneinfo
from collections import defaultdict
from datetime import date, datetime, time, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Case, F, Max, Q, Value, When
from django.utils import timezone

from subscriptions.models import Delivery, Edition, Subscriber
from subscriptions.selectors import PERIOD, db_now, edition_recipients
from subscriptions.sending import enqueue
from subscriptions.sending.dispatch import insert_deliveries
from subscriptions.sending.steering import edition_log_state

logger = logging.getLogger(__name__)

_UTC = zoneinfo.ZoneInfo("UTC")
# Where digests_schedule notes its last run (it runs every few minutes): a due
# moment after that run and past the lateness window was missed (beat was down).
_SCHEDULE_RUN_KEY = "newsroom:digests_schedule:last_run"
CATCH_UP_NOTE = Edition.CAUGHT_UP
DIGEST_SETTLE = timedelta(minutes=1)

Slot = list  # [time zone, hour]: JSON in Edition.audience["slots"]


# --- Due moments ----------------------------------------------------------------------------

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


# --- The schedule ---------------------------------------------------------------------------

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
    groups, missed = _due_slots(now)
    created = []
    for (frequency, due), group_slots in sorted(groups.items()):
        late = (frequency, due) in missed
        edition, new = Edition.objects.get_or_create(
            key=f"digest:{frequency}:{due:%Y-%m-%dT%H:%MZ}",
            defaults={
                "kind": Edition.Kind.DIGEST, "frequency": frequency, "scheduled_at": due,
                "window_end": due, "audience": {"frequency": frequency, "slots": group_slots},
                "note": _catch_up_note(due, now=now) if late else "",
            },
        )
        if new:
            edition_log_state(edition, CATCH_UP_NOTE if late else "planned",
                              level=logging.WARNING if late else logging.INFO)
            created.append(edition)
            transaction.on_commit(lambda e=edition: enqueue.enqueue_dispatch(e))
        else:
            _edition_add_slots(edition, group_slots)
    _schedule_ran(now)
    return created


def _due_slots(now: datetime) -> tuple[dict[tuple[str, datetime], list[Slot]],
                                       set[tuple[str, datetime]]]:
    """The readers' slots by (frequency, due moment), and the due moments that were
    missed (past the lateness window and after the schedule's last run)."""
    # Due moments are taken a minute back: a story published just before one
    # (its transaction not yet committed when the schedule looks) is in its digest.
    reference = now - DIGEST_SETTLE
    late = timedelta(seconds=settings.NEWSROOM_DIGEST_MAX_LATENESS)
    last_run = _schedule_last_run()
    groups: dict[tuple[str, datetime], list[Slot]] = defaultdict(list)
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
    return groups, missed


def _catch_up_note(due: datetime, *, now: datetime) -> str:
    return (f"{CATCH_UP_NOTE}: due {due:%Y-%m-%d %H:%M} UTC, created "
            f"{(now - due).total_seconds() / 3600:.1f} h late (the schedule "
            "was not running)")


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


def _edition_add_slots(edition: Edition, slots: list[Slot]) -> int:
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
        recipients, window = edition_recipients(edition)
        added = insert_deliveries(edition, recipients, window=window)
        if added:
            Edition.objects.filter(pk=edition.pk).update(
                targeted=F("targeted") + added, finished_at=None, last_progress_at=timezone.now(),
                status=Case(When(status=Edition.Status.DONE, then=Value(Edition.Status.SENDING)),
                            default=F("status")),
            )
    edition_log_state(edition, "slots added", slots=new, added=added)
    if added:
        transaction.on_commit(lambda: enqueue.enqueue_batches(edition, after_id=last_id or 0))
    return added


# --- Windows --------------------------------------------------------------------------------

def digest_windows_advance(*, edition: Edition, subscriber_ids: list[int]) -> int:
    """These readers got this digest (or had nothing new in it): their next
    window starts at its due moment. Never moves a window back."""
    if edition.kind != Edition.Kind.DIGEST or not subscriber_ids:
        return 0
    return Subscriber.objects.filter(pk__in=subscriber_ids).filter(
        Q(last_digest_due_at__isnull=True) | Q(last_digest_due_at__lt=edition.window_end)
    ).update(last_digest_due_at=edition.window_end)
