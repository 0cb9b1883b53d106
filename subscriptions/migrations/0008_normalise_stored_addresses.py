"""Store every address in its one spelling (subscriptions/addresses.py).

Rows from before were only trimmed and lower-cased, so a fullwidth or Unicode
domain sits next to its ASCII twin, and suppressions found only one of them.
This renames each row whose normal spelling nobody else has. Rows that would
collide with another row, or that cannot be normalised (an invisible
character, localhost, an IP literal), are left exactly as they are and logged:
merging or deleting a subscriber would lose consent history or a suppression,
so a person decides. `manage.py subscriber_addresses` lists them at any time.

Reversing keeps the new spelling: it is the same mailbox.
"""

import logging

from django.db import migrations

from subscriptions.addresses import address_audit

logger = logging.getLogger("subscriptions.migrations")


def normalise_stored(apps, schema_editor):
    Subscriber = apps.get_model("subscriptions", "Subscriber")
    audit = address_audit(Subscriber.objects.all())
    for pk, normal in audit.renames.items():
        Subscriber.objects.filter(pk=pk).update(email=normal)
    if audit.renames:
        logger.warning("normalised %d stored subscriber addresses", len(audit.renames))
    for normal, ids in audit.collisions.items():
        logger.warning("subscribers %s are one mailbox (%s): left unchanged; "
                       "see manage.py subscriber_addresses", ids, normal,
                       extra={"subscriber_ids": ids})
    for pk, reason in audit.invalid.items():
        logger.warning("subscriber %s has an address we no longer accept, left unchanged: %s; "
                       "see manage.py subscriber_addresses", pk, reason,
                       extra={"subscriber_id": pk})


class Migration(migrations.Migration):
    dependencies = [("subscriptions", "0007_newsroom_roles")]

    operations = [migrations.RunPython(normalise_stored, migrations.RunPython.noop)]
