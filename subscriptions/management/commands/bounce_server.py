"""`manage.py bounce_server`: receive bounces by SMTP (see subscriptions/bounces/server.py).

Runs in the foreground until interrupted, like any process a supervisor keeps
up; point the bounce domain's MX, or the relay's transport map, at it.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from subscriptions.bounces.server import bounce_server_start


class Command(BaseCommand):
    help = "Receive bounces (DSNs, ARF complaints) for bounces+…@NEWSROOM_BOUNCE_DOMAIN by SMTP."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1",
                            help="Address to listen on (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=2525, help="Port (default 2525).")

    def handle(self, *args, host: str, port: int, **options) -> None:
        if not settings.NEWSROOM_BOUNCE_DOMAIN:
            raise CommandError("NEWSROOM_BOUNCE_DOMAIN is not set: no bounce comes here")
        # aiosmtpd logs every command at INFO, readers' addresses included.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        controller = bounce_server_start(host=host, port=port)
        self.stdout.write(f"Taking bounces for bounces+…@{settings.NEWSROOM_BOUNCE_DOMAIN} "
                          f"on {host}:{port}")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            controller.stop()
