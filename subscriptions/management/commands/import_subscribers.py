"""`manage.py import_subscribers FILE --format mailchimp --map "Tag A=policy" --dry-run`:
bring a list from another newsletter tool (subscriptions/importing/service.py says
what each row becomes). Prints the report; with --dry-run it saves nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from subscriptions.importing.formats import FORMATS, Source
from subscriptions.importing.service import (
    ImportOptions,
    ImportRefused,
    ImportReport,
    parse_mapping,
    subscribers_import,
)


class Command(BaseCommand):
    help = "Import subscribers from a Mailchimp, listmonk, Ghost, Substack or plain CSV export."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="The export (Mailchimp: the zip or one CSV).")
        parser.add_argument("--format", required=True, choices=FORMATS)
        parser.add_argument("--map", action="append", default=[], metavar="TAG=TOPIC",
                            help="Their tag, list, label or segment = our topic slug (repeat). "
                                 "Tags equal to a topic slug need none.")
        parser.add_argument("--list", default="", metavar="TAG",
                            help="A tag every row gets (a per-list export, e.g. listmonk's).")
        parser.add_argument("--require-confirmation", action="store_true",
                            help="Make subscribed readers pending and mail them the double "
                                 "opt-in, instead of keeping the consent they gave at the source.")
        parser.add_argument("--dry-run", action="store_true",
                            help="Save nothing; print the report.")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        try:
            import_options = ImportOptions(
                format=options["format"], mapping=parse_mapping(options["map"]),
                source_list=options["list"],
                require_confirmation=options["require_confirmation"],
                dry_run=options["dry_run"])
            report = subscribers_import(source=Source(path, options["format"]),
                                        options=import_options, progress=self._progress)
        except ImportRefused as exc:
            raise CommandError(str(exc)) from None
        for line in report.lines():
            self.stdout.write(line)

    def _progress(self, report: ImportReport, done: int, total: int) -> None:
        if self.stderr.isatty():
            self.stderr.write(f"\r{100 * done // total:3d}% {report.rows} rows", ending="")
