"""Send one batch of an edition: claim, personalise, hand over, record.

A batch is a range of delivery ids. It is safe to run twice, or at once on two
workers: rows are claimed with a conditional update stamped with a fresh claim
token, and only the rows carrying that token are sent. Whoever unsubscribed or
bounced (or, for an alert, stopped following its category) since the edition
started is skipped just before the send.

A batch goes out in transport calls (a pipelined SMTP chunk, one ESP API call,
one message on the one-by-one road). Before each call it takes its share of the
global rate and then reads the edition's state (calls that follow one another
without a wait share a read for 50 ms): a pause or cancel clicked while a batch
waits or sends stops it within one call, its unsent rows given back (paused) or
skipped (cancelled). Content that cannot be built stops the edition
as failed, with the reason, instead of failing the batch again and again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import formatdate
from functools import lru_cache

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.db.models import Exists, F, OuterRef, QuerySet, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from newsroom.models import Category, Story
from subscriptions.models import Delivery, Edition, Subscriber
from subscriptions.selectors import PERIOD
from subscriptions.sending import content as edition_content
from subscriptions.sending.content import PERSONAL_VALUES, Content, ContentError
from subscriptions.sending.mime import (
    MessageTemplate,
    hole,
    list_headers_personal,
    list_headers_shared,
    manage_url,
    unsubscribe_url,
)
from subscriptions.sending.scheduling import digest_windows_advance
from subscriptions.sending.steering import edition_fail, edition_finish_if_complete
from subscriptions.sending.throttle import throttle_acquire
from subscriptions.sending.transports.base import (
    DETAIL_LIMIT,
    Batch,
    MergeContent,
    Recipient,
    Result,
    Transport,
)
from subscriptions.sending.transports.choose import transport_get
from subscriptions.sending.transports.config import sender_domain
from subscriptions.sending.verp import bounce_address

logger = logging.getLogger(__name__)

# A batch reads its edition's state before a call that follows a wait for the rate
# limit, or this long after its last read: back-to-back calls (a digest's many
# small ESP calls) share one read, and a pause or cancel is seen within 50 ms.
STATE_CHECK_INTERVAL = 0.05


@dataclass
class BatchReport:
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    retry: list[int] = field(default_factory=list)
    reason: str = ""


@lru_cache(maxsize=4)
def _keyed_mac(secret: str) -> hmac.HMAC:
    """HMAC-SHA256 keyed with `secret`; copied per id, which skips deriving the key again."""
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


# Parsed once per sender (the same for every message of a process).
_message_id_domain = lru_cache(maxsize=4)(sender_domain)


def _message_id(edition_id: int, subscriber_id: int) -> str:
    """Stable per delivery, so a resend after a crash carries the same id."""
    mac = _keyed_mac(settings.SECRET_KEY).copy()
    mac.update(f"{edition_id}.{subscriber_id}".encode())
    domain = _message_id_domain(settings.DEFAULT_FROM_EMAIL)
    return f"<e{edition_id}.s{subscriber_id}.{mac.hexdigest()[:12]}@{domain}>"


# Contents already built by this process, kept across batches: consecutive
# batches of an edition mostly share their contents (deliveries are written in
# content order), so most batches build none. Bounded, so memory stays flat.
_CONTENT_CACHE: OrderedDict[tuple, tuple[Content, MessageTemplate]] = OrderedDict()
_CONTENT_CACHE_SIZE = 256


class _Contents:
    """The distinct contents of a batch, each with its message template."""

    def __init__(self, edition: Edition) -> None:
        self.edition = edition
        self.templates: dict[tuple, tuple[Content, MessageTemplate]] = {}
        self.reply_to = settings.NEWSROOM_REPLY_TO

    def get(self, key: tuple, build) -> tuple[Content, MessageTemplate]:
        """The content named by `key` (`edition_content.alert_key`/`digest_key`: all
        it is made of, story revisions included, so a cached one is never stale)."""
        if key in self.templates:
            return self.templates[key]
        cache_key = (self.edition.pk, self.edition.created_at, key,
                     settings.DEFAULT_FROM_EMAIL, self.reply_to)
        if cache_key in _CONTENT_CACHE:
            _CONTENT_CACHE.move_to_end(cache_key)
            self.templates[key] = _CONTENT_CACHE[cache_key]
            return self.templates[key]
        content = build()
        template = MessageTemplate(
            subject=content.subject, from_email=settings.DEFAULT_FROM_EMAIL,
            text=content.text, html=content.html, reply_to=self.reply_to,
            headers=list_headers_shared(list_key=content.list_key),
        )
        self.templates[key] = _CONTENT_CACHE[cache_key] = (content, template)
        while len(_CONTENT_CACHE) > _CONTENT_CACHE_SIZE:
            _CONTENT_CACHE.popitem(last=False)
        return self.templates[key]


# Builds a content on a cache miss; None: nothing new for these readers.
_Builder = Callable[[], Content] | None


def _digest_variants(edition: Edition, rows: list[tuple]) -> dict[int, tuple[tuple, _Builder]]:
    """Per delivery id: (variant key, builder, or None if nothing is new) for its digest."""
    follows: dict[int, set[int]] = defaultdict(set)
    for subscriber_id, category_id in Subscriber.categories.through.objects.filter(
        subscriber_id__in=[row[1] for row in rows]
    ).values_list("subscriber_id", "category_id"):
        follows[subscriber_id].add(category_id)
    earliest = min((row[3] for row in rows if row[3]), default=edition.window_end)
    stories = list(
        Story.objects.filter(
            status=Story.Status.PUBLISHED, live_since__gt=earliest,
            live_since__lte=edition.window_end, published_at__lte=edition.window_end,
        ).select_related("category").only(
            "id", "headline", "slug", "dek", "body", "published_at", "live_since", "category_id",
            "revision", "updated_at", "category__name", "category__slug", "category__order",
        )
    )
    # A followed category without stories shows no section: only its pk counts (in
    # the "view in browser" link), so a reference stands in for it.
    categories = {s.category_id: s.category for s in stories}
    assert edition.window_end is not None  # a digest has a window
    day = edition_content.issue_date(edition.window_end, edition.audience.get("slots", ()))
    variants: dict[tuple, tuple[tuple, _Builder]] = {}
    chosen: dict[int, tuple[tuple, _Builder]] = {}
    for delivery_id, subscriber_id, _email, window_start in rows:
        cats = tuple(sorted(follows.get(subscriber_id, ())))
        if (window_start, cats) not in variants:
            picked = [s for s in stories if s.category_id in cats and s.live_since > window_start]
            shown = [categories.get(c) or Category(pk=c) for c in cats]

            def build(window_start=window_start, picked=picked, shown=shown):
                return edition_content.digest_content(
                    edition.pk, window_start, edition.frequency, picked, shown, issue_date=day,
                )

            variants[window_start, cats] = (
                edition_content.digest_key(window_start, picked, shown, issue_date=day),
                build if picked else None,
            )
        chosen[delivery_id] = variants[window_start, cats]
    return chosen


def deliveries_send(*, edition_id: int, first_id: int, last_id: int) -> BatchReport:
    """Send the queued deliveries of one edition with ids in [first_id, last_id]."""
    report = BatchReport()
    edition = Edition.objects.filter(pk=edition_id).first()
    if edition is None or edition.status != Edition.Status.SENDING:
        report.reason = f"edition is {edition.status if edition else 'gone'}"
        return report
    claim = uuid.uuid4()
    # The id range bounds every lookup: `claim` has no index of its own.
    batch = Delivery.objects.filter(edition_id=edition_id, id__gte=first_id, id__lte=last_id)
    if batch.filter(status=Delivery.Status.QUEUED).update(
        status=Delivery.Status.SENDING, claim=claim, claimed_at=timezone.now(),
        attempts=F("attempts") + 1,
    ):
        rows = _still_wanted(edition, batch.filter(claim=claim).order_by("id"), report)
        report.claimed = len(rows)
        if rows:
            _send_claimed(edition, claim, rows, report)
    _retrying_db(_record_progress, edition, report)
    return report


def _still_wanted(edition: Edition, claimed: QuerySet[Delivery], report: BatchReport
                  ) -> list[tuple]:
    """The claimed (delivery id, subscriber id, email, window start) rows whose reader
    still wants the edition; who unsubscribed or bounced (or, for an alert, stopped
    following its category) since it started is skipped."""
    if edition.kind == Edition.Kind.ALERT:
        claimed = claimed.annotate(follows=Exists(Subscriber.categories.through.objects.filter(
            subscriber_id=OuterRef("subscriber_id"),
            category_id=edition.audience["category_id"],
        )))
    else:
        claimed = claimed.annotate(follows=Value(True))
    rows = []
    gone = []
    for delivery_id, subscriber_id, email, window_start, status, wants_alerts, follows in (
        claimed.values_list(
            "id", "subscriber_id", "subscriber__email", "window_start",
            "subscriber__status", "subscriber__wants_alerts", "follows",
        )
    ):
        if status != Subscriber.Status.ACTIVE or (
                edition.kind == Edition.Kind.ALERT and not (wants_alerts and follows)):
            gone.append(delivery_id)
        else:
            rows.append((delivery_id, subscriber_id, email, window_start))
    if gone:
        report.skipped = Delivery.objects.filter(id__in=gone).update(
            status=Delivery.Status.SKIPPED, claim=None,
            last_error="subscriber no longer wants it",
        )
    return rows


# Once a batch is handed over, its outcomes exist only in this process: a
# database blip (a PostgreSQL restart or failover, a locked SQLite) must not
# lose them, or the batch's rows stay claimed and are sent again when
# editions_reconcile releases them. So recording retries, reconnecting, for
# about 15 s before the task gives up. Both steps are safe to repeat.
RECORD_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)


def _retrying_db(step, *args):
    for delay in (*RECORD_RETRY_DELAYS, None):
        try:
            return step(*args)
        except (OperationalError, InterfaceError) as exc:
            if delay is None:
                raise
            logger.warning("recording a batch failed (%s); retrying in %s s", exc, delay)
            connection.close()  # a broken connection is replaced on the next query
            time.sleep(delay)


@dataclass
class _Prepared:
    contents: _Contents
    by_variant: dict[tuple, list[Recipient]]
    nothing_new: list[int]
    revision: int | None = None  # an alert's story revision, recorded with each outcome


def _recipient(edition: Edition, delivery_id: int, subscriber_id: int, email: str) -> Recipient:
    unsubscribe = unsubscribe_url(subscriber_id=subscriber_id, email=email)
    return Recipient(
        delivery_id=delivery_id, email=email,
        values={"email": email, "unsubscribe_url": unsubscribe,
                "manage_url": manage_url(subscriber_id=subscriber_id, email=email)},
        headers=list_headers_personal(unsubscribe_url=unsubscribe),
        message_id=_message_id(edition.pk, subscriber_id),
        return_path=bounce_address(edition_id=edition.pk, subscriber_id=subscriber_id),
    )


def _prepare(edition: Edition, rows: list[tuple]) -> _Prepared:
    """Group (delivery id, subscriber id, email, window start) rows by content."""
    contents = _Contents(edition)
    revision = None
    if edition.kind == Edition.Kind.ALERT:
        # Read afresh for every batch: a correction saved mid-send is in the next one.
        story = edition.stories.select_related("category").get()
        revision = story.revision
        build: _Builder = lambda: edition_content.alert_content(edition.pk, story)  # noqa: E731
        variants = {row[0]: (edition_content.alert_key(story), build) for row in rows}
    else:
        variants = _digest_variants(edition, rows)
    prepared = _Prepared(contents, defaultdict(list), [], revision)
    for delivery_id, subscriber_id, email, _window in rows:
        key, build = variants[delivery_id]
        if build is None:
            prepared.nothing_new.append(delivery_id)
            continue
        contents.get(key, build)
        prepared.by_variant[key].append(_recipient(edition, delivery_id, subscriber_id, email))
    return prepared


def _render(template: MessageTemplate, recipient: Recipient, date: str) -> bytes:
    return template.render(to=recipient.email, message_id=recipient.message_id, date=date,
                           values=recipient.values, headers=recipient.headers)


@dataclass
class _Call:
    """One transport call: recipients and, on a merge road, their one content."""

    recipients: list[Recipient]
    content: Content | None = None


def _calls(prepared: _Prepared, transport: Transport) -> list[_Call]:
    """The batch cut into transport calls, each small enough that a pause or
    cancel stops the batch within one of them."""
    rate = settings.NEWSROOM_SEND_RATE
    paced = max(1, rate // 4) if rate > 0 else None  # a quarter second's worth
    size = min(transport.batch_limit, paced or transport.batch_limit)
    groups = [(prepared.contents.templates[key][0], recipients)
              for key, recipients in prepared.by_variant.items()]
    if not transport.merges:  # prebuilt messages: any mix of contents in one call
        everyone = [r for _content, recipients in groups for r in recipients]
        return [_Call(everyone[i : i + size]) for i in range(0, len(everyone), size)]
    # A merged call holds one content: one call (or more) per content. A content
    # the transport can't merge (it spells the ESP's merge syntax itself, which
    # the ESP would fill in) goes one message at a time.
    calls = []
    for content, recipients in groups:
        if transport.can_merge(content.subject, content.text, content.html):
            calls += [_Call(recipients[i : i + size], content)
                      for i in range(0, len(recipients), size)]
        else:
            calls += [_Call([r]) for r in recipients]
    return calls


def _send_claimed(edition: Edition, claim: uuid.UUID, rows: list[tuple],
                  report: BatchReport) -> None:
    """Prepare the claimed rows, hand them over call by call, record the outcomes."""
    prepared = _prepare_or_stop(edition, claim, rows, report)
    if prepared is None:
        return
    subscriber_of = {row[0]: row[1] for row in rows}
    if prepared.nothing_new:  # their categories had nothing in the window after all
        report.skipped += Delivery.objects.filter(id__in=prepared.nothing_new).update(
            status=Delivery.Status.SKIPPED, claim=None, last_error="nothing new"
        )
        digest_windows_advance(edition=edition, subscriber_ids=[
            subscriber_of[delivery_id] for delivery_id in prepared.nothing_new])
    results = _hand_over(edition, claim, prepared, report)
    _retrying_db(_record_results, edition, results, report, prepared.revision, subscriber_of)


def _prepare_or_stop(edition: Edition, claim: uuid.UUID, rows: list[tuple],
                     report: BatchReport) -> _Prepared | None:
    """The batch's messages; None if they cannot be built (the rows given back)."""
    try:
        return _prepare(edition, rows)
    except Exception as exc:
        # Nothing was handed to a transport: the rows go back, not counted as
        # possible duplicates. A database blip is retried by the task; anything
        # else would fail again, so the edition stops for a person to act.
        _retrying_db(_give_back, edition, claim, [row[0] for row in rows], "")
        if isinstance(exc, OperationalError | InterfaceError):
            raise
        if not isinstance(exc, ContentError):
            logger.exception("edition #%s: building its messages failed", edition.pk,
                             extra={"edition_id": edition.pk})
        edition_fail(edition_id=edition.pk, reason=str(exc) if isinstance(exc, ContentError)
                     else f"the message could not be built: {exc!r}")
        report.reason = f"content error: {exc}"
        return None


def _hand_over(edition: Edition, claim: uuid.UUID, prepared: _Prepared,
               report: BatchReport) -> list[Result]:
    """Each call after its share of the rate and, when due, a look at the edition's
    state: paused, cancelled or failed meanwhile, the rest is given back."""
    date = formatdate(usegmt=True)
    transport = transport_get()
    template_of = {r.delivery_id: prepared.contents.templates[key][1]
                   for key, recipients in prepared.by_variant.items() for r in recipients}
    calls = _calls(prepared, transport)
    results: list[Result] = []
    checked = time.monotonic()  # deliveries_send read the state just before the claim
    with transport.session():
        for index, call in enumerate(calls):
            waited = throttle_acquire(len(call.recipients))
            if waited or time.monotonic() - checked >= STATE_CHECK_INTERVAL:
                state, checked = _edition_state(edition.pk), time.monotonic()
                if state != Edition.Status.SENDING:
                    left = [r.delivery_id for later in calls[index:] for r in later.recipients]
                    report.skipped += _retrying_db(_give_back, edition, claim, left, state)
                    report.reason = f"edition {state}: {len(left)} deliveries given back"
                    break
            results += transport.send(Batch(
                from_email=settings.DEFAULT_FROM_EMAIL, recipients=call.recipients,
                render=lambda r: _render(template_of[r.delivery_id], r, date),
                merge=_merge_content(call.content) if call.content is not None else None,
            ))
    return results


def _edition_state(edition_id: int) -> str | None:
    return Edition.objects.filter(pk=edition_id).values_list("status", flat=True).first()


def _give_back(edition: Edition, claim: uuid.UUID, ids: list[int], state: str | None) -> int:
    """Unsent claimed rows: skipped if the edition was cancelled (returns how many),
    else back in the queue for a resume or retry, as if never claimed."""
    rows = Delivery.objects.filter(edition_id=edition.pk, id__in=ids, claim=claim,
                                   status=Delivery.Status.SENDING)
    if state == Edition.Status.CANCELLED:
        return rows.update(status=Delivery.Status.SKIPPED, claim=None,
                           last_error="edition cancelled")
    rows.update(status=Delivery.Status.QUEUED, claim=None, claimed_at=None,
                attempts=Greatest(F("attempts") - 1, 0))
    return 0


def _merge_content(content: Content) -> MergeContent:
    """(subject, text, html) with the holes spelt in a merge syntax."""

    def spell(syntax: str) -> tuple[str, str, str]:
        text, html = content.text, content.html
        for name in PERSONAL_VALUES:
            text = text.replace(hole(name), syntax.format(name))
            html = html.replace(hole(name), syntax.format(name))
        return content.subject, text, html

    return spell


def _window_for(edition: Edition, subscriber: Subscriber) -> datetime | None:
    if edition.kind != Edition.Kind.DIGEST:
        return None
    assert edition.window_end is not None  # a digest has a window
    delivery = Delivery.objects.filter(edition=edition, subscriber=subscriber).first()
    if delivery is not None:
        return delivery.window_start
    return subscriber.last_digest_due_at or edition.window_end - PERIOD[edition.frequency]


def edition_render_for(*, edition: Edition, subscriber: Subscriber) -> bytes | None:
    """Exactly the message this subscriber gets (or got) from the edition; None if
    they get nothing (a digest with nothing new for them)."""
    rows = [(0, subscriber.pk, subscriber.email, _window_for(edition, subscriber))]
    prepared = _prepare(edition, rows)
    for key, recipients in prepared.by_variant.items():
        return _render(prepared.contents.templates[key][1], recipients[0],
                       formatdate(usegmt=True))
    return None


def edition_send_test(*, edition: Edition, to: str, as_subscriber: Subscriber | None = None
                      ) -> bool:
    """Send the edition to `to` as `as_subscriber` would see it, marked as a test.

    Its personal links go to the sign-up page: a test recipient clicking
    "unsubscribe" must not unsubscribe the reader whose copy it shows.
    """
    if as_subscriber is None:
        if edition.kind == Edition.Kind.DIGEST:
            raise ValueError("a digest's content depends on the reader: name a subscriber")
        as_subscriber = Subscriber(pk=0, email=to)
    rows = [(0, as_subscriber.pk, as_subscriber.email, _window_for(edition, as_subscriber))]
    prepared = _prepare(edition, rows)
    key = next(iter(prepared.by_variant), None)
    if key is None:
        return False
    content = prepared.contents.templates[key][0]
    generic = {"email": to, "manage_url": settings.SITE_URL + "/subscribe/",
               "unsubscribe_url": settings.SITE_URL + "/subscribe/"}
    text, html = content.text, content.html
    for name, value in generic.items():
        text, html = text.replace(hole(name), value), html.replace(hole(name), value)
    subject = f"[TEST] {content.subject}"
    raw = MessageTemplate(
        subject=subject, from_email=settings.DEFAULT_FROM_EMAIL, text=text, html=html,
    ).render(to=to, message_id=_message_id(edition.pk, 0).replace("<e", "<test.e"),
             date=formatdate(usegmt=True), values={})
    results = transport_get().send(Batch(
        from_email=settings.DEFAULT_FROM_EMAIL, recipients=[Recipient(0, to, {}, {}, "")],
        render=lambda r: raw, merge=lambda syntax: (subject, text, html),
    ))
    return all(r.status == "sent" for r in results)


def _record_results(edition: Edition, results, report: BatchReport,
                    revision: int | None = None, subscriber_of: dict[int, int] | None = None
                    ) -> None:
    """Each outcome on its delivery (and, for a digest, the window of each reader
    it reached moved on), in a few statements; safe to repeat."""
    now = timezone.now()
    sent = [r for r in results if r.status == "sent"]
    if subscriber_of:
        digest_windows_advance(edition=edition, subscriber_ids=[
            subscriber_of[r.delivery_id] for r in sent])
    plain = [r.delivery_id for r in sent if not r.esp_message_id]
    if plain:
        Delivery.objects.filter(id__in=plain).update(
            status=Delivery.Status.SENT, sent_at=now, claim=None, last_error="",
            revision=revision,
        )
    _record_sent_with_ids([r for r in sent if r.esp_message_id], now, revision)
    report.sent = len(sent)

    max_attempts = settings.NEWSROOM_DELIVERY_MAX_ATTEMPTS
    retry = [r for r in results if r.status == "retry"]
    failed = [r for r in results if r.status == "failed"]
    if retry:
        # Out of attempts: a transient error that never cleared is a failure.
        exhausted = set(Delivery.objects.filter(
            id__in=[r.delivery_id for r in retry], attempts__gte=max_attempts
        ).values_list("id", flat=True))
        failed += [r for r in retry if r.delivery_id in exhausted]
        retry = [r for r in retry if r.delivery_id not in exhausted]
    for detail, ids in _group(retry).items():
        Delivery.objects.filter(id__in=ids).update(
            status=Delivery.Status.QUEUED, claim=None, last_error=detail
        )
    report.retry = [r.delivery_id for r in retry]
    for detail, ids in _group(failed).items():
        Delivery.objects.filter(id__in=ids).update(
            status=Delivery.Status.FAILED, claim=None, last_error=detail
        )
        logger.warning(
            "edition #%s: %d deliveries failed: %s", edition.pk, len(ids), detail,
            extra={"edition_id": edition.pk, "delivery_ids": ids[:20], "count": len(ids),
                   "error": detail},
        )
    report.failed = len(failed)


def _group(results) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = defaultdict(list)
    for r in results:
        grouped[r.detail[:DETAIL_LIMIT]].append(r.delivery_id)
    return grouped


# Rows per statement: two parameters each, within SQLite's (32,766 since 3.32)
# and PostgreSQL's (65,535) limits.
_SENT_ROWS_PER_STATEMENT = 10_000


def _record_sent_with_ids(sent: list[Result], now: datetime, revision: int | None = None
                          ) -> None:
    """Mark these sent, each with its own message id (an ESP's id per call, an MTA's
    per message), in one `UPDATE ... FROM (VALUES ...)` per 10,000 rows.

    Django's `bulk_update` evaluates a CASE WHEN over every row for every row
    (~1 s per 1,000 rows on either database) and on SQLite splits into
    statements of 142 rows; one statement also beat an UPDATE per distinct id,
    even for a single id. UPDATE ... FROM needs SQLite 3.33 or PostgreSQL. The
    first row's CASTs type the VALUES columns on PostgreSQL (which would
    otherwise guess from the parameters), and the id range lets it read the
    batch's rows by index instead of hashing the whole table.
    """
    table = connection.ops.quote_name(Delivery._meta.db_table)
    id_type = Delivery._meta.pk.db_type(connection)
    message_id_type = Delivery._meta.get_field("message_id").db_type(connection)
    sent_at = connection.ops.adapt_datetimefield_value(now)
    for start in range(0, len(sent), _SENT_ROWS_PER_STATEMENT):
        chunk = sent[start : start + _SENT_ROWS_PER_STATEMENT]
        values = ", ".join([f"(CAST(%s AS {id_type}), CAST(%s AS {message_id_type}))",
                            *["(%s, %s)"] * (len(chunk) - 1)])
        params: list[str | int | None] = [Delivery.Status.SENT.value, sent_at, revision]
        for r in chunk:
            params += [r.delivery_id, r.esp_message_id]
        params += [min(r.delivery_id for r in chunk), max(r.delivery_id for r in chunk)]
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET status = %s, sent_at = %s, revision = %s, claim = NULL, "  # noqa: S608
                "last_error = '', "
                f"message_id = v.message_id FROM (SELECT column1 AS id, column2 AS message_id "
                f"FROM (VALUES {values}) AS t) AS v "
                f"WHERE {table}.id = v.id AND {table}.id BETWEEN %s AND %s",
                params,
            )


def _record_progress(edition: Edition, report: BatchReport) -> None:
    now = timezone.now()
    Edition.objects.filter(pk=edition.pk).update(
        sent=F("sent") + report.sent, failed=F("failed") + report.failed,
        skipped=F("skipped") + report.skipped, last_progress_at=now,
    )
    edition_finish_if_complete(edition_id=edition.pk)
