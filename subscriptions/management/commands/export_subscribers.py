"""`manage.py export_subscribers --format ghost FILE`: every subscriber (but the
erased) in another tool's import format, so a list can leave as it came in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from subscriptions.importing.formats import FORMATS
from subscriptions.importing.service import ImportRefused, subscribers_export


class Command(BaseCommand):
    help = "Export subscribers as Mailchimp (a zip), listmonk, Ghost, Substack or plain CSV."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", required=True, choices=FORMATS)
        parser.add_argument("file", type=Path)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            count = subscribers_export(format=options["format"], path=options["file"])
        except ImportRefused as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{count} subscribers written to {options['file']} "
                          f"({options['format']}).")
