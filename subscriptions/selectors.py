"""Reads about editions and subscribers: whom they reach, how far they are, and the
words for them.

The send path (subscriptions.sending), the admin and operations take their
audiences from here, so the editor's count, the page and the rows written
agree. The edition page, the Operations page and /metrics all say whether a
send is stuck, whom it reaches, how far it is and when it should be through;
they take the rule and the wording from here, so the three never disagree. The
edition rules (stalled, progress) are pure: the row and the time in, an answer
out (tests pass a fixed clock). The queries below them serve the admin pages.
"""

from __future__ import annotations

import json
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce

from newsroom.models import Category, Story
from subscriptions.models import ClickCount, Delivery, Edition, Subscriber

AUDIENCE_SLOTS_SHOWN = 6
PERIOD = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}
_UTC = zoneinfo.ZoneInfo("UTC")


# --- Audiences ------------------------------------------------------------------------


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


def digest_audience(edition: Edition) -> QuerySet[Subscriber]:
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


def edition_recipients(edition: Edition) -> tuple[QuerySet[Subscriber], bool]:
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
    return digest_audience(edition).filter(has_news), True


# --- Alerts ---------------------------------------------------------------------------


def alerts_unfinished(*, story_ids: list[int]) -> dict[int, Edition]:
    """Story id -> its alert edition that has not reached everyone yet."""
    return {
        edition.story_id: edition
        for edition in Edition.objects.filter(
            kind=Edition.Kind.ALERT, stories__in=story_ids,
            status__in=(*Edition.ACTIVE, Edition.Status.PAUSED, Edition.Status.FAILED),
        ).annotate(story_id=F("stories"))
    }


# --- Clock ----------------------------------------------------------------------------


def db_now() -> datetime:
    """The database's clock: the one all hosts share (a beat host's may run fast)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT CURRENT_TIMESTAMP")
        value = cursor.fetchone()[0]
    if isinstance(value, str):  # SQLite: "YYYY-MM-DD HH:MM:SS" in UTC
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=_UTC)


# --- Stalled editions -----------------------------------------------------------------


def edition_moved_at(edition: Edition) -> datetime | None:
    """When the edition last moved: its last recorded progress, else its start,
    else when it was planned (a digest due later has not had its chance yet)."""
    if edition.last_progress_at is not None:
        return edition.last_progress_at
    if edition.started_at is not None:
        return edition.started_at
    planned = [t for t in (edition.created_at, edition.scheduled_at) if t is not None]
    return max(planned) if planned else None


def edition_stalled_for(edition: Edition, *, now: datetime, after: float | None = None
                        ) -> timedelta | None:
    """How long a planned or sending edition has not moved, if that is at least
    `after` seconds (default NEWSROOM_STALL_AFTER); None while it is healthy.

    Paused and finished editions never stall: they are not meant to move.
    """
    if edition.status not in Edition.ACTIVE:
        return None
    moved = edition_moved_at(edition)
    if moved is None:
        return None
    idle = now - moved
    limit = settings.NEWSROOM_STALL_AFTER if after is None else after
    return idle if idle.total_seconds() >= limit else None


def edition_is_stalled(edition: Edition, *, now: datetime, after: float | None = None) -> bool:
    """The stalled rule, in one place: see edition_stalled_for."""
    return edition_stalled_for(edition, now=now, after=after) is not None


# Only these fields are needed by the rule: callers load them with .only(*STALL_FIELDS).
STALL_FIELDS = ("id", "kind", "status", "last_progress_at", "started_at", "created_at",
                "scheduled_at")


def editions_stalled(*, now: datetime) -> list[Edition]:
    """Planned and sending editions that are stalled now. There are few active
    editions at any time, so the rule runs in Python rather than twice in SQL."""
    active = Edition.objects.filter(status__in=Edition.ACTIVE).only(*STALL_FIELDS)
    return [edition for edition in active if edition_is_stalled(edition, now=now)]


# --- Progress -------------------------------------------------------------------------


@dataclass(frozen=True)
class SendProgress:
    """How far a send is, from the counters on the edition row alone (no query)."""

    done: int  # sent + failed + skipped: deliveries needing no more work
    targeted: int
    rate: float | None  # messages sent per second since it started (a mean, pauses included)
    eta: datetime | None  # when the rest should be through, at the pace so far

    @property
    def percent(self) -> int | None:
        return min(100, self.done * 100 // self.targeted) if self.targeted else None


def edition_progress(edition: Edition, *, now: datetime) -> SendProgress:
    """The ETA follows all work done, not only sends: skips and failures also
    empty the queue, and a digest skips many readers with nothing new."""
    done = edition.sent + edition.failed + edition.skipped
    rate = eta = None
    if edition.started_at is not None:
        elapsed = ((edition.finished_at or now) - edition.started_at).total_seconds()
        if elapsed > 0:
            rate = edition.sent / elapsed
            left = edition.targeted - done
            if edition.status == Edition.Status.SENDING and left > 0 and done > 0:
                eta = now + timedelta(seconds=left * elapsed / done)
    return SendProgress(done=done, targeted=edition.targeted, rate=rate, eta=eta)


# --- Words --------------------------------------------------------------------------------


def duration_text(seconds: float) -> str:
    """Seconds under a minute, minutes under an hour: '20 s', '4 min 5 s', '2 h 10 min'."""
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        minutes, rest = divmod(seconds, 60)
        return f"{minutes} min {rest} s" if rest and minutes < 10 else f"{minutes} min"
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60} min"


def eta_text(eta: datetime | None, *, now: datetime) -> str:
    """'in 20 s', not Django's 'in 0 minutes'; '—' while the rate is unknown."""
    if eta is None:
        return "—"
    left = (eta - now).total_seconds()
    return "any moment now" if left < 1 else f"in {duration_text(left)}"


def stalled_text(idle: timedelta) -> str:
    return f"Stalled: no progress for {duration_text(idle.total_seconds())}"


def edition_audience_text(edition: Edition,
                          *, category_names: Mapping[int, str] | None = None) -> str:
    """Whom the edition's audience rule chose, in words: 'Politics · readers who
    want alerts', 'Daily digest · readers due at 07:00 Europe/Berlin'.

    Reads the category's name unless `category_names` has it; a rule of an
    unknown shape is shown as it is stored rather than hidden.
    """
    audience = edition.audience or {}
    if edition.kind == Edition.Kind.ALERT and "category_id" in audience:
        category_id = audience["category_id"]
        if category_names is not None and category_id in category_names:
            name = category_names[category_id]
        else:
            name = (Category.objects.filter(pk=category_id).values_list("name", flat=True)
                    .first() or f"category #{category_id} (deleted)")
        return f"{name} · readers who want alerts"
    if edition.kind == Edition.Kind.DIGEST and "slots" in audience:
        frequency = str(audience.get("frequency") or edition.frequency or "").capitalize()
        slots = [f"{int(hour):02d}:00 {tz}" for tz, hour in audience["slots"]]
        shown = ", ".join(slots[:AUDIENCE_SLOTS_SHOWN])
        if len(slots) > AUDIENCE_SLOTS_SHOWN:
            shown += f" and {len(slots) - AUDIENCE_SLOTS_SHOWN} more time zones and hours"
        return f"{frequency} digest · readers due at {shown or 'no hour'}"
    return json.dumps(audience, ensure_ascii=False)


def edition_delivery_counts(edition: Edition) -> tuple[dict[str, int], list[tuple[int, int, bool]]]:
    """Deliveries per status, and an alert's sent deliveries per story revision as
    (revision, count, is current), so an editor sees how many readers got a version
    corrected since; one GROUP BY over the edition's rows."""
    by_status = dict.fromkeys(Delivery.Status.values, 0)
    sent_by_revision: dict[int, int] = {}
    for status, revision, n in (Delivery.objects.filter(edition=edition).order_by()
                                .values("status", "revision").annotate(n=Count("id"))
                                .values_list("status", "revision", "n")):
        by_status[status] += n
        if status == Delivery.Status.SENT and revision is not None:
            sent_by_revision[revision] = n
    current = None
    if sent_by_revision and edition.kind == Edition.Kind.ALERT:
        story = edition.stories.only("revision").first()
        current = story.revision if story is not None else None
    return by_status, [(revision, n, revision == current)
                       for revision, n in sorted(sent_by_revision.items())]


def editions_needing_attention(*, now: datetime, days: int = 7) -> dict[str, list[Edition]]:
    """What a person should look at: editions stopped as failed (they wait for a
    retry or a cancel) and digests caught up late in the last `days` (the
    schedule was not running when they were due)."""
    return {
        "failed": list(Edition.objects.filter(status=Edition.Status.FAILED).order_by("-pk")[:20]),
        "caught_up": list(Edition.objects.filter(
            kind=Edition.Kind.DIGEST, note__startswith=Edition.CAUGHT_UP,
            created_at__gte=now - timedelta(days=days),
        ).order_by("-pk")[:20]),
    }


# --- Admin pages ----------------------------------------------------------------------

# An alert that ended like this may be sent again (to the readers it did not reach).
ALERT_ENDED_EARLY = (Edition.Status.CANCELLED, Edition.Status.EXPIRED)


def alert_editions_by_story(*, story_ids: Iterable[int]) -> dict[int, int]:
    """Story id -> id of the alert edition made for it (one that was cancelled or
    expired does not count: the story may be alerted again), in one query."""
    return dict(
        Edition.objects.filter(kind=Edition.Kind.ALERT, stories__in=list(story_ids))
        .exclude(status__in=ALERT_ENDED_EARLY).values_list("stories", "pk")
    )


def edition_failures_recent(*, edition: Edition, limit: int) -> list[Delivery]:
    """The edition's newest failed deliveries, with the reader's address."""
    return list(
        Delivery.objects.filter(edition=edition, status=Delivery.Status.FAILED)
        .select_related("subscriber")
        .only("id", "attempts", "last_error", "claimed_at", "subscriber__email")
        .order_by("-claimed_at", "-id")[:limit]
    )


def delivery_get(*, edition: Edition, subscriber: Subscriber) -> Delivery | None:
    return Delivery.objects.filter(edition=edition, subscriber=subscriber).first()


def subscriber_get(*, email: str) -> Subscriber | None:
    """The subscriber with this (normalised) address, if any."""
    return Subscriber.objects.filter(email=email).first()


def categories_with_active_counts() -> list[Category]:
    """Every category with its count of active subscribers as `active`, in
    category order, in one query."""
    active = Count("subscribers", filter=Q(subscribers__status=Subscriber.Status.ACTIVE))
    # Explicit order: Meta.ordering does not apply to a GROUP BY query.
    return list(
        Category.objects.annotate(active=active)
        .only("id", "name", "slug", "order")
        .order_by("order", "name")
    )



# --- Clicks (counted per edition, story and link: see subscriptions.sending.links) -----


@dataclass(frozen=True)
class StoryClicks:
    """An edition's clicks on one story: its total and each link's, most first."""

    story_id: int
    headline: str
    total: int
    links: list[tuple[str, int]]


def edition_clicks(edition: Edition) -> list[StoryClicks]:
    """The edition's clicks per story (most clicked first) and per link."""
    by_story: dict[int, StoryClicks] = {}
    for story_id, headline, url, count in ClickCount.objects.filter(edition=edition).order_by(
            "-count", "url").values_list("story_id", "story__headline", "url", "count"):
        if story_id not in by_story:
            by_story[story_id] = StoryClicks(story_id, headline, 0, [])
        by_story[story_id].links.append((url, count))
    return sorted(
        (StoryClicks(s.story_id, s.headline, sum(c for _u, c in s.links), s.links)
         for s in by_story.values()),
        key=lambda s: (-s.total, s.headline))


def story_clicks_total(story: Story) -> int:
    """Clicks on a story's links across all the editions that carried it."""
    return ClickCount.objects.filter(story=story).aggregate(total=Sum("count"))["total"] or 0
