"""Build the emails a subscriber gets about their subscription (no sending here).

Each email is a template triple under `subscriptions/emails/`:
`<kind>.subject.txt`, `<kind>.txt` and `<kind>.html`, so copy can change
without touching code. These are transactional messages, not list mail: they
carry no List-Unsubscribe header, but each links to the preferences page.
"""

from __future__ import annotations

from email.utils import make_msgid
from enum import StrEnum

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse

from newsroom.mailconfig import sender_domain
from subscriptions.list_headers import manage_url
from subscriptions.models import Subscriber
from subscriptions.tokens import Purpose, token_make


class Kind(StrEnum):
    CONFIRM = "confirm"  # double opt-in: confirm your address
    MANAGE = "manage"  # you are already subscribed: here is your preferences link
    GOODBYE = "goodbye"  # you have left; come back with this link


# Which status each email still makes sense for: a retried task whose moment
# has passed (confirmed meanwhile, unsubscribed meanwhile) sends nothing.
SENDABLE_STATUS = {
    Kind.CONFIRM: {Subscriber.Status.PENDING},
    Kind.MANAGE: {Subscriber.Status.ACTIVE},
    Kind.GOODBYE: {Subscriber.Status.UNSUBSCRIBED},
}


def confirm_url(subscriber: Subscriber) -> str:
    token = token_make(subscriber_id=subscriber.pk, email=subscriber.email, purpose=Purpose.CONFIRM)
    return settings.SITE_URL + reverse("subscriptions:confirm", args=[token])


def subscriber_email_build(*, subscriber: Subscriber, kind: Kind) -> EmailMultiAlternatives:
    context = {
        "subscriber": subscriber,
        "site_name": settings.NEWSROOM_NAME,
        "site_url": settings.SITE_URL,
        "postal_address": settings.NEWSROOM_POSTAL_ADDRESS,
        "manage_url": manage_url(subscriber_id=subscriber.pk, email=subscriber.email),
        "categories": list(subscriber.categories.order_by("order", "name")),
    }
    if kind == Kind.CONFIRM:
        context["confirm_url"] = confirm_url(subscriber)
    base = f"subscriptions/emails/{kind}"
    subject = " ".join(render_to_string(f"{base}.subject.txt", context).split())
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string(f"{base}.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[subscriber.email],
        reply_to=[settings.NEWSROOM_REPLY_TO] if settings.NEWSROOM_REPLY_TO else None,
        headers={
            "Auto-Submitted": "auto-generated",
            # In the sender's domain, as list mail's (Django's default names this
            # machine, which says nothing to a receiver checking the From domain).
            "Message-ID": make_msgid(domain=sender_domain(settings.DEFAULT_FROM_EMAIL)),
        },
    )
    message.attach_alternative(render_to_string(f"{base}.html", context), "text/html")
    return message


def subscriber_email_send(*, subscriber_id: int, kind: str) -> bool:
    """Send one subscription email if it still makes sense; False if skipped."""
    kind = Kind(kind)
    subscriber = Subscriber.objects.filter(pk=subscriber_id, erased_at__isnull=True).first()
    if subscriber is None or subscriber.status not in SENDABLE_STATUS[kind]:
        return False
    subscriber_email_build(subscriber=subscriber, kind=kind).send()
    return True
