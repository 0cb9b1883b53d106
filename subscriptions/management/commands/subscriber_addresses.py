"""`manage.py subscriber_addresses`: stored addresses that are not in their one
spelling, and subscribers that share a mailbox.

Migration 0008 normalised what it safely could and left the rest; this shows
the rest (exit status 1 while there is any) so a person can erase or
unsubscribe the duplicate. `--apply` renames the rows that are safe to rename
(after restoring an old backup, say); it never merges or deletes.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from subscriptions.addresses import address_audit
from subscriptions.models import Subscriber


class Command(BaseCommand):
    help = "List subscribers whose stored addresses collide or cannot be normalised."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--apply", action="store_true",
                            help="Rename rows whose normal spelling no other row has.")

    def handle(self, *args, apply: bool = False, **options) -> None:
        audit = address_audit(Subscriber.objects.all())
        for pk, normal in sorted(audit.renames.items()):
            if apply:
                Subscriber.objects.filter(pk=pk).update(email=normal)
            verb = "renamed" if apply else "to rename (--apply)"
            self.stdout.write(f"subscriber #{pk}: {verb} to {normal}")
        for normal, ids in sorted(audit.collisions.items()):
            listed = ", ".join(f"#{pk}" for pk in ids)
            self.stdout.write(f"one mailbox, several subscribers: {listed} ({normal}); "
                              "erase or unsubscribe all but one in the admin")
        for pk, reason in sorted(audit.invalid.items()):
            self.stdout.write(f"subscriber #{pk}: address no longer accepted: {reason}")
        if audit.problems:
            raise CommandError(f"{audit.problems} subscriber(s) need a person's decision")
        self.stdout.write("All stored addresses are in their normal spelling.")
