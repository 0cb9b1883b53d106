"""`manage.py requeue_stuck [--dry-run]`: run the reconcile now instead of waiting for beat.

The same editions_reconcile the beat task runs every minute, so it is safe to
run at any time (and while beat runs it too): every repair is a conditional
update or the enqueueing of work that is claimed before it is sent.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from newsroom.ops.management.redis_reachable import redis_unreachable
from subscriptions.sending.reconcile import ReconcileReport, editions_reconcile


def _ids(ids: list[int]) -> str:
    return ", ".join(f"#{pk}" for pk in ids)


def describe(report: ReconcileReport, *, dry_run: bool) -> list[str]:
    """One line per kind of repair, worded for what was (or would be) done."""
    lines = []
    if report.redispatched:
        verb = "Would dispatch again" if dry_run else "Dispatched again"
        lines.append(f"{verb} (planned, dispatch message lost): editions "
                     f"{_ids(report.redispatched)}")
    if report.released:
        verb = "Would release" if dry_run else "Released"
        lines.append(f"{verb} {report.released} deliveries held by dead batch runs "
                     "(back to the queue; possible duplicates)")
    if report.dispatch_completed:
        verb = "Would complete the dispatch of" if dry_run else "Completed the dispatch of"
        lines.append(f"{verb} editions {_ids(report.dispatch_completed)} "
                     "(stopped between their first batches and the rest)")
    if report.requeued_editions:
        verb = "Would enqueue batches again for" if dry_run else "Enqueued batches again for"
        lines.append(f"{verb} stalled editions {_ids(report.requeued_editions)}")
    if report.expired:
        verb = "Would expire" if dry_run else "Expired"
        lines.append(f"{verb} editions {_ids(report.expired)}")
    if report.finished:
        verb = "Would mark done" if dry_run else "Marked done"
        lines.append(f"{verb}: editions {_ids(report.finished)}")
    if not lines:
        lines.append("Nothing is stuck.")
    if dry_run:
        lines.append("Dry run: nothing was changed.")
    return lines


class Command(BaseCommand):
    help = ("Put stuck sends back in motion now: lost dispatches, deliveries held by dead "
            "batch runs, stalled editions. --dry-run shows what would be done.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true",
                            help="report what would be done without changing anything")

    def handle(self, *args, dry_run: bool, **options) -> None:
        problem = redis_unreachable()
        if problem and not dry_run:  # refuse before any row is changed
            raise CommandError(f"{problem} Then run this again.\nNothing was changed "
                               "(--dry-run works without Redis).")
        report = editions_reconcile(dry_run=dry_run)
        for line in describe(report, dry_run=dry_run):
            self.stdout.write(line)
        if problem:
            self.stderr.write(f"Note: {problem}")
