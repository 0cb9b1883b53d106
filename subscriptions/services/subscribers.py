"""Everything that changes a subscriber: sign-up, confirmation, preferences,
unsubscribing, suppression by the ESP, erasure.

Each function validates, writes in one transaction, records the consent event
in the same transaction, and enqueues any email only after the commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, Value, When
from django.utils import timezone

from newsroom.models import Category
from subscriptions.addresses import normalise_email
from subscriptions.emails import SENDABLE_STATUS, Kind
from subscriptions.models import TEXT_LIMIT, ConsentRecord, Subscriber

logger = logging.getLogger(__name__)

# The version of the sign-up wording shown next to the form; bump it whenever
# that text changes so each consent record says what the person agreed to.
SIGNUP_WORDING_VERSION = "signup-2026-11"


def client_ip(request) -> str | None:
    """The client's address, also behind NEWSROOM_TRUSTED_PROXY_HOPS reverse proxies.

    Each proxy appends the address it saw to X-Forwarded-For; only the entries
    our own proxies added can be trusted, so we count that many from the right.
    """
    hops = settings.NEWSROOM_TRUSTED_PROXY_HOPS
    if hops > 0:
        forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
                     if a.strip()]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.META.get("REMOTE_ADDR") or None


@dataclass(frozen=True)
class RequestInfo:
    """Where a consent event came from (for the append-only record)."""

    ip_address: str | None = None
    user_agent: str = ""
    page: str = ""

    @classmethod
    def from_request(cls, request) -> RequestInfo:
        return cls(
            ip_address=client_ip(request),
            user_agent=request.META.get("HTTP_USER_AGENT", "")[:TEXT_LIMIT],
            page=request.build_absolute_uri()[:TEXT_LIMIT],
        )


@dataclass(frozen=True)
class Preferences:
    categories: tuple[Category, ...]
    frequency: str = Subscriber.Frequency.DAILY
    wants_alerts: bool = True
    timezone: str = "UTC"
    digest_hour: int = 7

    def as_details(self) -> dict[str, Any]:
        return {
            "categories": sorted(c.slug for c in self.categories),
            "frequency": self.frequency,
            "wants_alerts": self.wants_alerts,
            "timezone": self.timezone,
            "digest_hour": self.digest_hour,
        }


@dataclass
class SignupOutcome:
    """What happened, for logs and tests; the page shown is the same for all."""

    subscriber: Subscriber
    email_sent: str  # "confirm" or "manage"
    extra: dict[str, Any] = field(default_factory=dict)


def _record(
    subscriber: Subscriber, action: str, *, method: str, info: RequestInfo | None,
    wording_version: str = "", details: dict[str, Any] | None = None,
) -> ConsentRecord:
    info = info or RequestInfo()
    return ConsentRecord.objects.create(
        subscriber=subscriber, action=action, method=method,
        ip_address=info.ip_address, user_agent=info.user_agent, page=info.page,
        wording_version=wording_version, details=details or {},
    )


def _apply(subscriber: Subscriber, prefs: Preferences) -> None:
    subscriber.frequency = prefs.frequency
    subscriber.wants_alerts = prefs.wants_alerts
    subscriber.timezone = prefs.timezone
    subscriber.digest_hour = prefs.digest_hour


def _send_after_commit(subscriber: Subscriber, kind: str) -> None:
    from subscriptions.tasks import subscriber_email_send

    subscriber_email_send.delay_on_commit(subscriber.pk, kind)


def subscriber_signup(
    *, email: str, preferences: Preferences, info: RequestInfo, method: str = "form",
) -> SignupOutcome:
    """Sign an address up, or nudge its owner if it is already subscribed.

    Whatever the address, the caller shows the same page: an active subscriber
    gets a "manage your subscription" email instead of a confirmation, and
    nobody learns from the response whether an address is known. An address
    that is no mailbox raises `AddressError` (the form refuses it first).
    `method` is how the consent was given, for its record ("form", "api").
    """
    address = normalise_email(email)
    for attempt in range(2):
        try:
            with transaction.atomic():
                return _signup(address, preferences, info, method)
        except IntegrityError:  # a concurrent sign-up of the same address won the insert
            if attempt:
                raise
    raise AssertionError("unreachable")


def _signup(address: str, prefs: Preferences, info: RequestInfo, method: str) -> SignupOutcome:
    subscriber = Subscriber.objects.select_for_update().filter(email=address).first()
    if subscriber is not None and subscriber.status == Subscriber.Status.ACTIVE:
        _send_after_commit(subscriber, "manage")
        return SignupOutcome(subscriber, "manage")
    new = subscriber is None
    if subscriber is None:
        subscriber = Subscriber(email=address)
    subscriber.status = Subscriber.Status.PENDING
    _apply(subscriber, prefs)
    subscriber.save()
    if new:  # no topics to compare with: one INSERT instead of set()'s two SELECTs and one
        through = Subscriber.categories.through
        through.objects.bulk_create(
            [through(subscriber=subscriber, category=category) for category in prefs.categories])
    else:
        subscriber.categories.set(prefs.categories)
    _record(
        subscriber, ConsentRecord.Action.SIGNUP, method=method, info=info,
        wording_version=SIGNUP_WORDING_VERSION, details=prefs.as_details(),
    )
    _send_after_commit(subscriber, "confirm")
    return SignupOutcome(subscriber, "confirm")


def subscriber_send_manage_link(*, subscriber: Subscriber) -> bool:
    """Mail a reader the link to their preferences (asked for on the unsubscribe
    page, which shows none). False for those we must not mail: bounced or
    complained addresses, erased rows."""
    if subscriber.erased_at is not None or subscriber.status not in SENDABLE_STATUS[Kind.MANAGE]:
        return False
    _send_after_commit(subscriber, "manage")
    logger.info("preferences link requested", extra={"subscriber_id": subscriber.pk})
    return True


def subscriber_confirm(*, subscriber: Subscriber, info: RequestInfo) -> bool:
    """Activate a pending subscriber (double opt-in). False if it was not pending."""
    with transaction.atomic():
        changed = Subscriber.objects.filter(
            pk=subscriber.pk, status=Subscriber.Status.PENDING
        ).update(status=Subscriber.Status.ACTIVE, confirmed_at=timezone.now(),
                 suppression_reason="", soft_bounces=0,
                 # A returning reader starts afresh: no backlog from before they left.
                 last_digest_due_at=Case(When(last_digest_due_at__isnull=False,
                                              then=Value(timezone.now())), default=None))
        if changed:
            subscriber.refresh_from_db()
            _record(subscriber, ConsentRecord.Action.CONFIRM, method="email-link", info=info,
                    wording_version=SIGNUP_WORDING_VERSION)
    if changed:
        logger.info("subscriber confirmed", extra={"subscriber_id": subscriber.pk})
    return bool(changed)


def subscriber_update_preferences(
    *, subscriber: Subscriber, preferences: Preferences, info: RequestInfo
) -> None:
    with transaction.atomic():
        subscriber = Subscriber.objects.select_for_update().get(pk=subscriber.pk)
        _apply(subscriber, preferences)
        subscriber.save()
        subscriber.categories.set(preferences.categories)
        _record(subscriber, ConsentRecord.Action.CHANGE, method="preferences-page", info=info,
                details=preferences.as_details())


def subscriber_unfollow(
    *, subscriber: Subscriber, category: Category, info: RequestInfo, method: str
) -> bool:
    """Stop one topic; the subscription itself stays."""
    with transaction.atomic():
        if not subscriber.categories.filter(pk=category.pk).exists():
            return False
        subscriber.categories.remove(category)
        _record(subscriber, ConsentRecord.Action.CHANGE, method=method, info=info,
                details={"unfollowed": category.slug})
    return True


def subscriber_unsubscribe(
    *, subscriber: Subscriber, info: RequestInfo | None, method: str, send_goodbye: bool = True,
    reason: str = "",
) -> bool:
    """Leave everything, at once and idempotently. False if already out."""
    left = {"status": Subscriber.Status.UNSUBSCRIBED, "unsubscribed_at": timezone.now(),
            "suppression_reason": reason or f"unsubscribed ({method})"}
    with transaction.atomic():
        changed = Subscriber.objects.filter(pk=subscriber.pk).exclude(
            status=Subscriber.Status.UNSUBSCRIBED
        ).exclude(erased_at__isnull=False).update(**left)
        if changed:  # what the update wrote, without reading the row back
            for name, value in left.items():
                setattr(subscriber, name, value)
            _record(subscriber, ConsentRecord.Action.WITHDRAW, method=method, info=info,
                    details={"reason": reason} if reason else {})
            if send_goodbye:
                _send_after_commit(subscriber, "goodbye")
    if changed:
        logger.info("subscriber unsubscribed",
                    extra={"subscriber_id": subscriber.pk, "method": method})
    return bool(changed)


def subscriber_resubscribe(*, subscriber: Subscriber, info: RequestInfo) -> bool:
    """Come back from the preferences page (the signed link proves the address)."""
    with transaction.atomic():
        changed = Subscriber.objects.filter(
            pk=subscriber.pk, status__in=Subscriber.SUPPRESSED, erased_at__isnull=True
        ).update(status=Subscriber.Status.ACTIVE, unsubscribed_at=None, suppression_reason="",
                 soft_bounces=0, confirmed_at=timezone.now(),
                 last_digest_due_at=timezone.now())  # afresh: no backlog from before
        if changed:
            subscriber.refresh_from_db()
            _record(subscriber, ConsentRecord.Action.RESUBSCRIBE, method="preferences-page",
                    info=info, wording_version=SIGNUP_WORDING_VERSION)
    return bool(changed)


def subscriber_suppress(*, subscriber: Subscriber, status: str, reason: str, method: str) -> bool:
    """Stop mailing after a hard bounce, a complaint or an ESP-side unsubscribe."""
    if status not in Subscriber.SUPPRESSED:
        raise ValueError(f"{status!r} is not a suppression status")
    with transaction.atomic():
        changed = Subscriber.objects.filter(pk=subscriber.pk).exclude(status=status).update(
            status=status, suppression_reason=reason[:TEXT_LIMIT],
            unsubscribed_at=timezone.now(),
        )
        if changed and status != Subscriber.Status.BOUNCED:
            _record(subscriber, ConsentRecord.Action.WITHDRAW, method=method, info=None,
                    details={"reason": reason[:TEXT_LIMIT], "status": status})
    if changed:
        logger.warning("subscriber suppressed",
                       extra={"subscriber_id": subscriber.pk, "status": status, "reason": reason})
    return bool(changed)
