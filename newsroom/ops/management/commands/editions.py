"""`manage.py editions`: the state of recent sends, for a terminal during an incident."""

from __future__ import annotations

from datetime import datetime

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from newsroom.ops.management.redis_reachable import redis_unreachable
from subscriptions.models import Edition

COLUMNS = ("ID", "KIND", "KEY", "STATUS", "TARGETED", "SENT", "FAILED", "SKIPPED", "REQUEUED",
           "STARTED", "DURATION/ETA")
NUMERIC = {"ID", "TARGETED", "SENT", "FAILED", "SKIPPED", "REQUEUED"}


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def duration_or_eta(edition: Edition, now: datetime) -> str:
    """How long a finished send took; for one in progress, the time left at its
    average pace so far."""
    if edition.started_at is None:
        return "-"
    if edition.finished_at is not None:
        return format_seconds((edition.finished_at - edition.started_at).total_seconds())
    if edition.status != Edition.Status.SENDING:
        return "-"
    done = edition.sent + edition.failed + edition.skipped
    elapsed = (now - edition.started_at).total_seconds()
    if done == 0:
        return f"eta ? ({format_seconds(elapsed)} in)"
    left = max(0, edition.targeted - done)
    return f"eta {format_seconds(elapsed * left / done)}"


def row(edition: Edition, now: datetime) -> tuple[str, ...]:
    started = (timezone.localtime(edition.started_at).strftime("%Y-%m-%d %H:%M:%S")
               if edition.started_at else "-")
    return (str(edition.pk), edition.kind, edition.key, edition.status, str(edition.targeted),
            str(edition.sent), str(edition.failed), str(edition.skipped), str(edition.requeued),
            started, duration_or_eta(edition, now))


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(cells[i]) for cells in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    lines = []
    for cells in [COLUMNS, *rows]:
        lines.append("  ".join(
            cell.rjust(width) if name in NUMERIC else cell.ljust(width)
            for name, cell, width in zip(COLUMNS, cells, widths, strict=True)
        ).rstrip())
    return "\n".join(lines)


class Command(BaseCommand):
    help = "Show recent editions: status, delivery counts, and duration or time left."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--limit", type=int, default=20, help="how many (default 20)")
        parser.add_argument(
            "--status", action="append", choices=Edition.Status.values,
            help="only editions in this status (repeat for several)",
        )
        parser.add_argument("--kind", choices=Edition.Kind.values, help="only alerts or digests")

    def handle(self, *args, limit: int, status: list[str] | None, kind: str | None,
               **options) -> None:
        editions = Edition.objects.order_by("-created_at", "-id")
        if status:
            editions = editions.filter(status__in=status)
        if kind:
            editions = editions.filter(kind=kind)
        found = list(editions[:max(limit, 0)])
        if not found:
            self.stdout.write("No editions.")
            return
        now = timezone.now()
        self.stdout.write(table([row(edition, now) for edition in found]))
        moving = {Edition.Status.PLANNED, Edition.Status.SENDING}
        if any(edition.status in moving for edition in found) and (problem := redis_unreachable()):
            self.stderr.write(f"Note: no worker can send while Redis is down. {problem}")

