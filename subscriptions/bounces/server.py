"""The SMTP endpoint bounces come back to (aiosmtpd), run by `manage.py bounce_server`.

It takes mail only for bounces+…@NEWSROOM_BOUNCE_DOMAIN (550 for anyone else,
so it is no open relay and no mailbox) and hands each message to
`bounce_process`. The replies are for the sending MTA's queue: 250 for every
message read, understood or not (a bounce of a bounce, an auto-reply: retrying
changes nothing, so it is logged and dropped); 451 when the database fails, so
the MTA keeps the bounce and tries again.
"""

from __future__ import annotations

import logging
from typing import Any

from aiosmtpd.controller import Controller
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, close_old_connections

from subscriptions.bounces.process import bounce_process
from subscriptions.sending.verp import LOCAL_PREFIX

logger = logging.getLogger(__name__)

# A DSN quotes the bounced message; more than this is no bounce of ours.
MAX_MESSAGE_BYTES = 10 * 1024 * 1024


def is_bounce_address(address: str) -> bool:
    local, _, domain = address.strip("<>").lower().rpartition("@")
    ours = settings.NEWSROOM_BOUNCE_DOMAIN
    return bool(ours) and domain == ours and local.startswith(LOCAL_PREFIX)


def _process(data: bytes, recipients: list[str]) -> None:
    close_old_connections()  # a long-lived process: drop connections the server closed
    try:
        outcomes = bounce_process(data=data, envelope_recipients=recipients)
    finally:
        close_old_connections()
    logger.info("bounce mail received", extra={"outcomes": [str(o) for o in outcomes]})


class BounceHandler:
    """aiosmtpd's handler hooks (it calls them by name)."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if not is_bounce_address(address):
            return "550 5.1.1 No such mailbox: this server takes bounces only"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        try:
            await sync_to_async(_process, thread_sensitive=True)(data, list(envelope.rcpt_tos))
        except DatabaseError:
            logger.exception("bounce not recorded: database error (the MTA will retry)")
            return "451 4.3.0 Temporary failure, try again later"
        except Exception:
            # A message that breaks the parser would break it on every retry.
            logger.exception("bounce mail could not be processed; dropped")
        return "250 2.0.0 OK"


def bounce_server_start(*, host: str, port: int) -> Controller:
    """The endpoint, listening in a thread of its own; `.stop()` ends it."""
    controller = Controller(BounceHandler(), hostname=host, port=port,
                            data_size_limit=MAX_MESSAGE_BYTES)
    controller.start()
    return controller
