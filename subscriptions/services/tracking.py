"""What an ESP's tracking events do to a subscriber: bounces, complaints,
ESP-side unsubscribes, deferrals and deliveries.

The webhook receiver (subscriptions/receivers.py) only turns an anymail event
into JSON primitives (`event_payload`) and enqueues a task; the task calls
`tracking_event_process`, which is safe to run twice for the same event and
never raises for a bad event (a raise would only make Celery retry it).

Soft bounces. Anymail does not normalise them one way: Mailgun's temporary
failures, Postmark's Transient/DnsError and SES-style delays arrive as
`deferred`, but Postmark's SoftBounce, Brevo's and Mandrill's soft_bounce and
SES's Transient bounces arrive as `bounced`. So a `deferred` event, or a
`bounced` one whose ESP type (kept in `esp_kind`) or SMTP reply (4xx, or an
enhanced 4.x.x code) says temporary, counts as soft. A soft bounce counts once
per message (Mailgun reports each retry of the same message), and
NEWSROOM_SOFT_BOUNCE_LIMIT of them in a row, with no delivery between, suppress
the address as bounced.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from anymail.signals import AnymailTrackingEvent, EventType, RejectReason
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from subscriptions.addresses import email_lookup
from subscriptions.models import TEXT_LIMIT, Subscriber, TrackingEvent
from subscriptions.services.subscribers import subscriber_suppress

logger = logging.getLogger(__name__)

METHOD = "esp-webhook"

# The event types we act on; the receiver enqueues nothing for the rest
# (opens and clicks are most of the traffic).
HANDLED_TYPES = frozenset({
    EventType.BOUNCED, EventType.REJECTED, EventType.COMPLAINED, EventType.UNSUBSCRIBED,
    EventType.DEFERRED, EventType.DELIVERED,
})

# ESP-specific names of temporary failures that anymail reports as `bounced`.
SOFT_ESP_KINDS = frozenset({"SoftBounce", "Transient", "DnsError", "soft_bounce", "soft_bounced"})

# A `rejected` event means the ESP refused to send; these reasons say why in
# terms of the person, so they suppress like the event they stand for.
# Other reasons (blocked, timed_out, other) are the ESP's policy, not ours to act on.
REJECT_STATUS: dict[str, Subscriber.Status] = {
    RejectReason.BOUNCED: Subscriber.Status.BOUNCED,
    RejectReason.INVALID: Subscriber.Status.BOUNCED,
    RejectReason.SPAM: Subscriber.Status.COMPLAINED,
    RejectReason.UNSUBSCRIBED: Subscriber.Status.UNSUBSCRIBED,
}

_SMTP_CODE = re.compile(r"\s*(?:smtp;\s*)?([245])\d\d\b", re.IGNORECASE)
_ENHANCED_CODE = re.compile(r"\b([245])\.\d{1,3}\.\d{1,3}\b")


class Outcome(StrEnum):
    SUPPRESSED = "suppressed"
    SOFT_BOUNCE = "soft-bounce"  # counted
    SOFT_BOUNCE_REPEAT = "soft-bounce-repeat"  # another report for a message already counted
    RESET = "reset"  # a delivery cleared the soft-bounce count
    UNCHANGED = "unchanged"  # already suppressed, or nothing to reset
    DUPLICATE = "duplicate"
    UNKNOWN_RECIPIENT = "unknown-recipient"
    MALFORMED = "malformed"
    IGNORED = "ignored"


def _text(value: Any) -> str:
    return str(value)[:TEXT_LIMIT] if value else ""


def _esp_kind(esp_name: str, esp_event: Any) -> str:
    """The ESP's own event type, where anymail folds soft bounces into `bounced`."""
    if not isinstance(esp_event, Mapping):
        return ""
    if esp_name == "Postmark":
        kind = esp_event.get("Type")
    elif esp_name in {"Brevo", "SendinBlue", "Mandrill"}:
        kind = esp_event.get("event")
    elif esp_name == "MailerSend":
        kind = (esp_event.get("data") or {}).get("type")
    elif esp_name == "Amazon SES":
        kind = (esp_event.get("bounce") or {}).get("bounceType")
    else:
        kind = None
    return _text(kind)[:40]


def event_payload(event: AnymailTrackingEvent, esp_name: str) -> dict[str, str | None]:
    """The event as JSON primitives for the queue: only what processing needs."""
    timestamp = event.timestamp if isinstance(event.timestamp, datetime) else None
    return {
        "esp_name": _text(esp_name)[:40],
        "event_type": _text(event.event_type)[:20],
        "recipient": _text(event.recipient)[:254] or None,
        "event_id": _text(event.event_id)[:200] or None,
        "reject_reason": _text(event.reject_reason)[:20] or None,
        "description": _text(event.description),
        "mta_response": _text(event.mta_response),
        "timestamp": timestamp.isoformat() if timestamp else None,
        "message_id": _text(event.message_id)[:250] or None,
        "esp_kind": _esp_kind(esp_name, event.esp_event),
    }


def is_temporary_failure(*, event_type: str, esp_kind: str = "", mta_response: str = "") -> bool:
    """Whether a non-delivery is a soft bounce (see the module docstring)."""
    if event_type == EventType.DEFERRED:
        return True
    if event_type != EventType.BOUNCED:
        return False
    if esp_kind in SOFT_ESP_KINDS:
        return True
    match = _SMTP_CODE.match(mta_response) or _ENHANCED_CODE.search(mta_response)
    return match is not None and match.group(1) == "4"


def _suppression(event_type: str, reject_reason: str | None) -> Subscriber.Status | None:
    """The status a hard event puts the subscriber in, or None."""
    if event_type == EventType.BOUNCED:
        return Subscriber.Status.BOUNCED
    if event_type == EventType.COMPLAINED:
        return Subscriber.Status.COMPLAINED
    if event_type == EventType.UNSUBSCRIBED:
        return Subscriber.Status.UNSUBSCRIBED
    if event_type == EventType.REJECTED:
        return REJECT_STATUS.get(reject_reason or "")
    return None


def _scrub(text: str, *addresses: str) -> str:
    """ESP text often repeats the address (in either spelling); keep it out of
    reasons and consent details."""
    for address in addresses:
        text = re.sub(re.escape(address), "<recipient>", text, flags=re.IGNORECASE)
    return text[:TEXT_LIMIT]


def _parse_time(value: str | None) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value) if value else None
    except (TypeError, ValueError):
        return None
    if moment is not None and timezone.is_naive(moment):
        moment = timezone.make_aware(moment, UTC)  # ESPs report UTC
    return moment


def tracking_event_process(
    *,
    esp_name: str,
    event_type: str,
    recipient: str | None,
    event_id: str | None = None,
    reject_reason: str | None = None,
    description: str = "",
    mta_response: str = "",
    timestamp: str | None = None,
    message_id: str | None = None,
    esp_kind: str = "",
    method: str = METHOD,
) -> Outcome:
    """Apply one tracking event to its subscriber, at most once per event id.

    Keyword arguments are those of `event_payload`, and `method`, the consent
    record's word for the road the event came by (the bounce processor's
    differs). Unknown addresses and malformed events are logged and ignored:
    the ESP has nothing to retry.
    """
    # Cut to the column sizes: a direct caller may not have gone through event_payload.
    esp_name, event_type = str(esp_name)[:40], str(event_type)[:20]
    event_id, message_id = str(event_id or "")[:200], str(message_id or "")[:250]
    description, mta_response = _text(description), _text(mta_response)
    log = {"esp": esp_name, "event_type": event_type, "event_id": event_id}
    soft = is_temporary_failure(
        event_type=event_type, esp_kind=_text(esp_kind), mta_response=mta_response
    )
    status = None if soft else _suppression(event_type, reject_reason)
    if not soft and status is None and event_type != EventType.DELIVERED:
        logger.debug("tracking event ignored", extra=log)
        return Outcome.IGNORED
    # The spelling we store: an ESP reports an IDN domain in ASCII (xn--…), and
    # may echo a fullwidth one as it was given; both find the one row.
    address = email_lookup(recipient) if isinstance(recipient, str) else None
    if address is None or recipient is None:  # (an address implies a recipient)
        logger.warning("tracking event without a usable recipient ignored", extra=log)
        return Outcome.MALFORMED

    try:
        with transaction.atomic():
            subscriber = Subscriber.objects.select_for_update().filter(email=address).first()
            if subscriber is None:
                logger.info("tracking event for an unknown address ignored", extra=log)
                return Outcome.UNKNOWN_RECIPIENT
            if event_type == EventType.DELIVERED:
                # Not stored: deliveries are most events, and a reset is idempotent.
                reset = Subscriber.objects.filter(pk=subscriber.pk, soft_bounces__gt=0).update(
                    soft_bounces=0
                )
                return Outcome.RESET if reset else Outcome.UNCHANGED
            if event_id and TrackingEvent.objects.filter(
                esp=esp_name, event_id=event_id, recipient=address
            ).exists():
                return _duplicate(log)
            why = reject_reason if event_type == EventType.REJECTED else ""
            detail = _scrub(mta_response or description or _text(why), address,
                            recipient.strip())
            # Inserted before acting: a concurrent copy of this event fails here
            # on the unique constraint and the whole transaction rolls back.
            row = TrackingEvent.objects.create(
                esp=esp_name, event_id=event_id, event_type=event_type,
                recipient=address, subscriber=subscriber, message_id=message_id,
                reason=detail, occurred_at=_parse_time(timestamp),
            )
            if status is None:
                outcome = _soft_bounce(subscriber, row, method)
            else:
                outcome = _suppress(subscriber, status, esp_name, event_type, detail, method)
            TrackingEvent.objects.filter(pk=row.pk).update(outcome=outcome)
    except IntegrityError:
        return _duplicate(log)
    logger.info("tracking event processed",
                extra={**log, "subscriber_id": subscriber.pk, "outcome": str(outcome)})
    return outcome


def _duplicate(log: dict[str, Any]) -> Outcome:
    logger.info("duplicate tracking event ignored", extra=log)
    return Outcome.DUPLICATE


def _suppress(
    subscriber: Subscriber, status: Subscriber.Status, esp_name: str, event_type: str,
    detail: str, method: str,
) -> Outcome:
    # Once out, an address stays out for the reason it left; only a complaint
    # overrides (it is the strongest signal, and what mailbox providers count).
    if subscriber.is_suppressed and status != Subscriber.Status.COMPLAINED:
        return Outcome.UNCHANGED
    reason = {
        Subscriber.Status.BOUNCED: f"hard bounce ({esp_name} {event_type})",
        Subscriber.Status.COMPLAINED: f"spam complaint ({esp_name})",
        Subscriber.Status.UNSUBSCRIBED: f"unsubscribed at the ESP ({esp_name})",
    }[status]
    if detail:
        reason = f"{reason}: {detail}"
    changed = subscriber_suppress(subscriber=subscriber, status=status, reason=reason,
                                  method=method)
    return Outcome.SUPPRESSED if changed else Outcome.UNCHANGED


def _soft_bounce(subscriber: Subscriber, row: TrackingEvent, method: str) -> Outcome:
    if subscriber.is_suppressed:
        return Outcome.UNCHANGED
    if row.message_id and TrackingEvent.objects.filter(
        esp=row.esp, recipient=row.recipient, message_id=row.message_id,
        outcome__in=[Outcome.SOFT_BOUNCE, Outcome.SUPPRESSED],
    ).exclude(pk=row.pk).exists():
        return Outcome.SOFT_BOUNCE_REPEAT
    Subscriber.objects.filter(pk=subscriber.pk).update(soft_bounces=F("soft_bounces") + 1)
    subscriber.refresh_from_db(fields=["soft_bounces"])
    limit = settings.NEWSROOM_SOFT_BOUNCE_LIMIT
    if subscriber.soft_bounces < limit:
        return Outcome.SOFT_BOUNCE
    subscriber_suppress(
        subscriber=subscriber, status=Subscriber.Status.BOUNCED,
        reason=f"{subscriber.soft_bounces} soft bounces in a row", method=method,
    )
    return Outcome.SUPPRESSED
