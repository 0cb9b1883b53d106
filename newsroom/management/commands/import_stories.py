"""`manage.py import_stories PATH [PATH ...]`: load story files into the database."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TextIO, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from newsroom.imports import ImportReport, stories_import


class Command(BaseCommand):
    help = (
        "Import story files (.txt, .md; folders are searched recursively). Re-importing "
        "updates stories by slug. Never sends alerts."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
        parser.add_argument(
            "--no-progress", action="store_true", help="never show the progress bar"
        )

    def handle(self, *args, paths: list[Path], no_progress: bool, **options) -> None:
        # tqdm redraws with \r; OutputWrapper would add newlines
        stream = cast(TextIO, self.stderr._out)
        show = not no_progress and stream.isatty()

        def progress(files: list[Path]) -> Iterable[Path]:
            return tqdm(files, file=stream, unit="file", leave=False, disable=not show)

        report = stories_import(paths, progress=progress)
        for path, reason in report.failures:
            self.stderr.write(f"{shown(path)}: {reason}")
        self.stdout.write(summary(report))
        if report.failed:
            total = report.imported + report.failed
            files = "file" if total == 1 else "files"
            raise CommandError(f"{report.failed} of {total} {files} failed")


def shown(path: Path) -> str:
    """A path as one printable line: a file name may hold a newline, or bytes
    that are not UTF-8 (which would make writing it raise), so such a name is
    written as a Python string literal."""
    text = str(path)
    return text if text.isprintable() else ascii(text)


def summary(report: ImportReport) -> str:
    stories = "story" if report.imported == 1 else "stories"
    return (
        f"Imported {report.imported} {stories}: {report.created} created, "
        f"{report.updated} updated, {report.unchanged} unchanged, {report.failed} failed."
    )
