"""The transport for the configured email backend, chosen in one place.

EMAIL_URL names the backend (`transports/config.py`); each backend has one
road: our SMTP backend the pipelined one, the outbox its folder, an anymail
ESP listed in `esp.ROADS` its merge road, and any other Django backend one
message per reader.
"""

from __future__ import annotations

from anymail.backends.base import AnymailBaseBackend
from django.core.mail import get_connection

from subscriptions.sending.transports.base import Transport
from subscriptions.sending.transports.esp import esp_transport_class
from subscriptions.sending.transports.one_by_one import OneByOneTransport
from subscriptions.sending.transports.outbox import OutboxBackend, OutboxTransport
from subscriptions.sending.transports.smtp import SMTPBackend, SMTPTransport


def transport_get() -> Transport:
    """A Transport over a fresh connection of the configured EMAIL_BACKEND."""
    backend = get_connection()
    if isinstance(backend, SMTPBackend):
        return SMTPTransport(backend)
    if isinstance(backend, OutboxBackend):
        return OutboxTransport(backend)
    if isinstance(backend, AnymailBaseBackend):
        road = esp_transport_class(backend)
        if road is not None:
            return road(backend)
    return OneByOneTransport(backend)
