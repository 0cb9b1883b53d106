"""Build the emails a subscriber gets about their subscription (no sending here).

Each email is a template triple under `subscriptions/emails/`:
`<kind>.subject.txt`, `<kind>.txt` and `<kind>.html`, so copy can change
without touching code. These are transactional messages, not list mail: they
carry no List-Unsubscribe header, but each links to the preferences page.
"""

from __future__ import annotations

import logging
import re
import smtplib
from email.utils import make_msgid
from enum import StrEnum

import css_inline
from anymail.exceptions import AnymailRecipientsRefused
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse

from subscriptions.mail_look import look, strip_bidi
from subscriptions.models import Subscriber
from subscriptions.sending.mime import manage_url
from subscriptions.sending.transports.config import sender_domain
from subscriptions.tokens import Purpose, token_make

logger = logging.getLogger(__name__)
_inliner = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)


class Kind(StrEnum):
    CONFIRM = "confirm"  # double opt-in: confirm your address
    MANAGE = "manage"  # here is your preferences link (signed up again, or asked for it)
    GOODBYE = "goodbye"  # you have left; come back with this link


# Which status each email still makes sense for: a retried task whose moment
# has passed (confirmed meanwhile, unsubscribed meanwhile) sends nothing.
SENDABLE_STATUS = {
    Kind.CONFIRM: {Subscriber.Status.PENDING},
    # Unsubscribed too: the unsubscribe page offers this email instead of a link.
    Kind.MANAGE: {Subscriber.Status.ACTIVE, Subscriber.Status.UNSUBSCRIBED},
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
        headers={
            "Auto-Submitted": "auto-generated",
            # In the sender's domain, as list mail's (Django's default names this
            # machine, which says nothing to a receiver checking the From domain).
            "Message-ID": make_msgid(domain=sender_domain(settings.DEFAULT_FROM_EMAIL)),
        },
    )
    # The editions' layout, CSS inlined as theirs is (few of these: no caching).
    html = _inliner.inline(render_to_string(f"{base}.html", context))
    message.attach_alternative(html, "text/html")
    return message


def subscriber_email_send(*, subscriber_id: int, kind: str) -> bool:
    """Send one subscription email if it still makes sense; False if skipped or refused.

    Transient failures raise, so the task retries them. A permanent refusal
    (a 5xx reply) would fail the same way ten times over, so it is recorded
    instead and not raised: see `_refused`.
    """
    kind = Kind(kind)
    subscriber = Subscriber.objects.filter(pk=subscriber_id, erased_at__isnull=True).first()
    if subscriber is None or subscriber.status not in SENDABLE_STATUS[kind]:
        return False
    try:
        subscriber_email_build(subscriber=subscriber, kind=kind).send()
    except (smtplib.SMTPException, AnymailRecipientsRefused) as exc:
        if not _refused(subscriber, kind, exc):
            raise
        return False
    return True


def permanent_refusal(exc: Exception) -> tuple[bool, str] | None:
    """(whether the recipient was refused, the reply) for a permanent refusal; None
    for anything a retry may get through (4xx, a dropped connection)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        replies = list(exc.recipients.values())
        if replies and all(500 <= code < 600 for code, _ in replies):
            code, text = replies[0]
            return True, f"{code} {_text(text)}"
        return None
    if isinstance(exc, AnymailRecipientsRefused):
        return True, str(exc)
    if isinstance(exc, smtplib.SMTPResponseException) and 500 <= exc.smtp_code < 600:
        return False, f"{exc.smtp_code} {_text(exc.smtp_error)}"
    return None


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _refused(subscriber: Subscriber, kind: Kind, exc: Exception) -> bool:
    """Record a permanent refusal; False if `exc` is not one.

    A refused recipient is a hard bounce at the door, so it is treated as the
    ESP's hard-bounce event is: the subscriber is suppressed as bounced, with
    the reply as the reason (a new sign-up starts them afresh). Any other 5xx
    (the sender, the login, the content) is a fault of ours that no retry
    mends: logged as an error for a person, the subscriber left as they are.
    """
    from subscriptions.services.subscribers import subscriber_suppress

    refusal = permanent_refusal(exc)
    if refusal is None:
        return False
    recipient, reply = refusal
    reply = re.sub(re.escape(subscriber.email), "<recipient>", reply, flags=re.IGNORECASE)
    log = {"subscriber_id": subscriber.pk, "kind": str(kind), "reply": reply[:200]}
    if not recipient:
        logger.error("%s email refused permanently (not retried): %s", kind, reply, extra=log)
        return True
    logger.warning("%s email: recipient refused permanently (not retried)", kind, extra=log)
    subscriber_suppress(subscriber=subscriber, status=Subscriber.Status.BOUNCED,
                        reason=f"{kind} email refused: {reply}", method="smtp")
    return True
