"""Build the emails a subscriber gets about their subscription (no sending here).

Each email is a template triple under `subscriptions/emails/`:
`<kind>.subject.txt`, `<kind>.txt` and `<kind>.html`, so copy can change
without touching code. These are transactional messages, not list mail: they
carry no List-Unsubscribe header, but each links to the preferences page.
"""

from __future__ import annotations

from enum import StrEnum

import css_inline
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse

from subscriptions.list_headers import manage_url
from subscriptions.mail_look import look, strip_bidi
from subscriptions.models import Subscriber
from subscriptions.tokens import Purpose, token_make

_inliner = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


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
        **look(),
        "subscriber": subscriber,
        "manage_url": manage_url(subscriber_id=subscriber.pk, email=subscriber.email),
        "categories": list(subscriber.categories.order_by("order", "name")),
    }
    if kind == Kind.CONFIRM:
        context["confirm_url"] = confirm_url(subscriber)
    base = f"subscriptions/emails/{kind}"
    subject = " ".join(strip_bidi(render_to_string(f"{base}.subject.txt", context)).split())
    context["subject"] = subject
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string(f"{base}.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[subscriber.email],
        reply_to=[settings.NEWSROOM_REPLY_TO] if settings.NEWSROOM_REPLY_TO else None,
        headers={"Auto-Submitted": "auto-generated"},
    )
    # The editions' layout, CSS inlined as theirs is (few of these: no caching).
    html = _inliner.inline(render_to_string(f"{base}.html", context))
    message.attach_alternative(html, "text/html")
    return message


def subscriber_email_send(*, subscriber_id: int, kind: str) -> bool:
    """Send one subscription email if it still makes sense; False if skipped."""
    kind = Kind(kind)
    subscriber = Subscriber.objects.filter(pk=subscriber_id, erased_at__isnull=True).first()
    if subscriber is None or subscriber.status not in SENDABLE_STATUS[kind]:
        return False
    subscriber_email_build(subscriber=subscriber, kind=kind).send()
    return True
