"""Data-subject requests: export everything we hold about a person (GDPR
Art. 15/20) and erase them (Art. 17).

Erasure anonymises rather than deletes: the row keeps its topics and frequency
so aggregate counts stay true, and the consent records keep the fact and time
of each consent (evidence we may need to show) without the personal fields.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.apps import apps
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from subscriptions.models import ConsentRecord, Subscriber, TrackingEvent

logger = logging.getLogger(__name__)

ERASED_REASON = "erased on request"
# Keys of ConsentRecord.details that describe the person rather than the consent.
PERSONAL_DETAIL_KEYS = ("timezone", "reason")


def erased_address(subscriber: Subscriber) -> str:
    """Unique per row (the email column is unique) and undeliverable (RFC 2606)."""
    return f"erased-{subscriber.pk}@invalid.example"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def subscriber_export(*, subscriber: Subscriber) -> dict[str, Any]:
    """All we hold about one subscriber, as JSON-serialisable data."""
    consents = ConsentRecord.objects.filter(subscriber=subscriber).order_by("at", "id")
    events = TrackingEvent.objects.filter(
        Q(subscriber=subscriber) | Q(recipient=subscriber.email)
    ).order_by("received_at", "id")
    return {
        "exported_at": timezone.now().isoformat(),
        "subscriber": {
            "id": subscriber.pk,
            "email": subscriber.email,
            "status": subscriber.status,
            "frequency": subscriber.frequency,
            "wants_alerts": subscriber.wants_alerts,
            "timezone": subscriber.timezone,
            "digest_hour": subscriber.digest_hour,
            "created_at": _iso(subscriber.created_at),
            "confirmed_at": _iso(subscriber.confirmed_at),
            "unsubscribed_at": _iso(subscriber.unsubscribed_at),
            "suppression_reason": subscriber.suppression_reason,
            "soft_bounces": subscriber.soft_bounces,
            "erased_at": _iso(subscriber.erased_at),
        },
        "categories": [
            {"slug": category.slug, "name": category.name}
            for category in subscriber.categories.order_by("order", "name")
        ],
        "consent_records": [
            {
                "at": _iso(record.at),
                "action": record.action,
                "method": record.method,
                "ip_address": record.ip_address,
                "user_agent": record.user_agent,
                "page": record.page,
                "wording_version": record.wording_version,
                "details": record.details,
            }
            for record in consents
        ],
        "email_events": [
            {
                "received_at": _iso(event.received_at),
                "occurred_at": _iso(event.occurred_at),
                "esp": event.esp,
                "event_type": event.event_type,
                "recipient": event.recipient,
                "reason": event.reason,
                "outcome": event.outcome,
            }
            for event in events
        ],
    }


def subscriber_erase(*, subscriber: Subscriber, by: AbstractBaseUser | None) -> None:
    """Anonymise a subscriber for good; a second call changes nothing.

    The new address also voids every link already sent: tokens fold in a
    digest of the address they were made for (subscriptions/tokens.py).
    """
    with transaction.atomic():
        subscriber = Subscriber.objects.select_for_update().get(pk=subscriber.pk)
        if subscriber.erased_at is not None:
            return
        old_email = subscriber.email
        now = timezone.now()
        new_email = erased_address(subscriber)
        Subscriber.objects.filter(pk=subscriber.pk).update(
            email=new_email, status=Subscriber.Status.UNSUBSCRIBED,
            unsubscribed_at=subscriber.unsubscribed_at or now,
            suppression_reason=ERASED_REASON, erased_at=now, timezone="UTC", soft_bounces=0,
        )
        consents = ConsentRecord.objects.filter(subscriber=subscriber)
        # Queryset updates: ConsentRecord.save() refuses to change a row.
        consents.update(ip_address=None, user_agent="", page="")
        for record in consents.only("pk", "details"):
            if isinstance(record.details, dict) and any(
                key in record.details for key in PERSONAL_DETAIL_KEYS
            ):
                details = {k: v for k, v in record.details.items() if k not in PERSONAL_DETAIL_KEYS}
                ConsentRecord.objects.filter(pk=record.pk).update(details=details)
        TrackingEvent.objects.filter(Q(subscriber=subscriber) | Q(recipient=old_email)).update(
            subscriber=subscriber, recipient=new_email, reason=""
        )
        _scrub_admin_log(subscriber.pk, new_email)
        ConsentRecord.objects.create(
            subscriber=subscriber, action=ConsentRecord.Action.WITHDRAW, method="erasure",
            details={"by": by.get_username() if by is not None else ""},
        )
    logger.info("subscriber erased", extra={"subscriber_id": subscriber.pk})


def _scrub_admin_log(subscriber_id: int, new_email: str) -> None:
    """The admin's history names the object by its str(), i.e. the old address."""
    if not apps.is_installed("django.contrib.admin"):
        return
    from django.contrib.admin.models import LogEntry
    from django.contrib.contenttypes.models import ContentType

    LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(Subscriber),
        object_id=str(subscriber_id),
    ).update(object_repr=new_email)
