"""Apply a bounce message to its reader, by the same service as the ESP webhooks.

Which reader: the VERP token (sending/verp.py) in the address the bounce was
sent to, or in the original envelope sender the report quotes (a feedback
loop's ARF report encloses our message, Return-Path and all). Without a token
that verifies nothing is done: anyone can mail the bounce address, and a
report naming an address is exactly what a forger would send to have a reader
suppressed. Such mail is logged and dropped (still answered 250).

What then happens is `tracking_event_process`'s: a hard bounce suppresses, a
soft one counts towards NEWSROOM_SOFT_BOUNCE_LIMIT (once per message), a
complaint suppresses as complained, each recorded as a TrackingEvent keyed by
the bounce's own Message-ID, so the same bounce delivered twice counts once.
Database errors propagate: the SMTP endpoint answers 451 and the MTA retries.
"""

from __future__ import annotations

import logging
import re

from anymail.signals import EventType

from subscriptions.bounces.parse import Kind, Report, reports_read
from subscriptions.models import Subscriber
from subscriptions.sending.verp import LOCAL_PREFIX, Delivery, bounce_token_read
from subscriptions.services.tracking import Outcome, tracking_event_process

logger = logging.getLogger(__name__)

# TrackingEvent.esp for bounces that came back by mail; the consent record's method.
SOURCE = "bounce-mail"

EVENT_TYPE = {
    Kind.HARD: EventType.BOUNCED,
    Kind.SOFT: EventType.DEFERRED,
    Kind.COMPLAINT: EventType.COMPLAINED,
}


# The shape of a token address; `bounces+fbl@` (an address given to feedback
# loops) has none, and is not taken for a forgery.
_TOKEN_SHAPE = re.compile(r"^<?" + re.escape(LOCAL_PREFIX) + r"[0-9a-z]+\.[0-9a-z]+\.[0-9a-f]+@",
                          re.IGNORECASE)


def _delivery(addresses: list[str]) -> Delivery | bool | None:
    """The delivery the first VERP token names; None if there is none; False
    if there is one and it is forged."""
    forged = False
    for address in addresses:
        if _TOKEN_SHAPE.match(address.strip()):
            delivery = bounce_token_read(address)
            if delivery is not None:
                return delivery
            forged = True
    return False if forged else None


def bounce_process(*, data: bytes, envelope_recipients: list[str]) -> list[Outcome]:
    """Apply every report in the message `data`, received for `envelope_recipients`.

    [] when it is no bounce we understand; logged, never raised: the sender
    would only retry it.
    """
    reports = reports_read(data)
    if not reports:
        logger.info("bounce mail ignored: no delivery status or feedback report in it")
        return []
    return [_apply(report, envelope_recipients) for report in reports]


def _apply(report: Report, envelope_recipients: list[str]) -> Outcome:
    delivery = _delivery([*envelope_recipients, report.original_sender])
    if delivery is False:
        logger.warning("bounce with a VERP token that does not verify ignored",
                       extra={"report_id": report.report_id})
        return Outcome.MALFORMED
    if not isinstance(delivery, Delivery):  # None: no token at all
        logger.warning("bounce without a VERP token ignored (nothing proves we sent it)",
                       extra={"report_id": report.report_id})
        return Outcome.MALFORMED
    # The address we sent to, not the one a forward or alias turned it into.
    recipient = (Subscriber.objects.filter(pk=delivery.subscriber_id)
                 .values_list("email", flat=True).first())
    if recipient is None:
        logger.info("bounce for a subscriber since erased ignored",
                    extra={"report_id": report.report_id})
        return Outcome.UNKNOWN_RECIPIENT
    message_id = (report.original_message_id
                  or f"e{delivery.edition_id}.s{delivery.subscriber_id}")
    return tracking_event_process(
        esp_name=SOURCE, event_type=EVENT_TYPE[report.kind], recipient=recipient,
        event_id=report.report_id,
        mta_response=" ".join(filter(None, [report.status, report.diagnostic])),
        message_id=message_id, method=SOURCE,
    )
