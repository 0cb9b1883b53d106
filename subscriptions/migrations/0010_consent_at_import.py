"""Subscriber imports: consent records that keep the time consent was given at the
source (`at` is a default, no longer auto_now_add, which overwrote it), and an
`import_subscriber` permission, granted to the Operations group (0007)."""

import django.utils.timezone
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

OPERATIONS = "Operations"  # as in 0007_newsroom_roles
PERMISSION = "import_subscriber"  # granted to OPERATIONS


def _ensure_permissions(apps, using):
    # As in 0007: on a fresh database post_migrate has not made the permission yet.
    app_config = apps.get_app_config("subscriptions")
    models_module = getattr(app_config, "models_module", None)
    app_config.models_module = models_module or True
    try:
        create_permissions(app_config, apps=apps, verbosity=0, using=using)
    finally:
        app_config.models_module = models_module


def grant_import(apps, schema_editor):
    using = schema_editor.connection.alias
    _ensure_permissions(apps, using)
    Group, Permission = apps.get_model("auth", "Group"), apps.get_model("auth", "Permission")
    permission = Permission.objects.using(using).get(
        content_type__app_label="subscriptions", codename=PERMISSION)
    group, _ = Group.objects.using(using).get_or_create(name=OPERATIONS)
    group.permissions.add(permission)


def revoke_import(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    Permission.objects.using(schema_editor.connection.alias).filter(
        content_type__app_label="subscriptions", codename=PERMISSION).delete()


class Migration(migrations.Migration):

    dependencies = [
        ('subscriptions', '0009_edition_ledger_purged_at'),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='subscriber',
            options={'ordering': ['-created_at'], 'permissions': [('export_subscriber', 'Can export subscriber data'), ('erase_subscriber', 'Can erase a subscriber'), ('import_subscriber', 'Can import subscriber lists')]},
        ),
        migrations.AlterField(
            model_name='consentrecord',
            name='at',
            field=models.DateTimeField(db_index=True, default=django.utils.timezone.now, editable=False),
        ),
        migrations.AlterField(
            model_name='consentrecord',
            name='method',
            field=models.CharField(help_text='How: form, email-link, one-click, esp-webhook, admin, import…', max_length=40),
        ),
        migrations.RunPython(grant_import, revoke_import),
    ]
