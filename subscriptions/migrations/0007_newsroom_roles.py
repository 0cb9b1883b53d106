"""The newsroom's two roles as groups: *Editors* and *Operations*.

Editors (made by newsroom 0002 with the editorial permissions) also send the
breaking alerts of their stories and see editions: publishing a breaking story
leads to the alert page, which needs `send_edition`, and the alert leads to its
edition's page. `send_edition` also steers editions (pause, resume, cancel,
retry): an editor must be able to stop an alert that went out on a wrong story.

Operations run the sending and look after readers' data: the Operations page,
editions and their deliveries, steering, and subscribers (view, unsubscribe on
request, export, erase). They get no story permissions, so they cannot send an
alert: the alert page also needs to see the story.

It lives here, not in newsroom, because it grants this app's permissions, and
this app already depends on newsroom; the other way round would invert the
apps' dependencies. Permissions are created first, as in newsroom 0002: on a
fresh database post_migrate has not made them yet.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

EDITORS = "Editors"
OPERATIONS = "Operations"

# group -> app label -> permission codenames this migration grants
ROLE_PERMISSIONS = {
    EDITORS: {
        "subscriptions": ["view_edition", "send_edition"],
    },
    OPERATIONS: {
        "newsroom": ["view_operations"],
        "subscriptions": [
            "view_edition", "send_edition", "view_delivery",
            "view_subscriber", "change_subscriber", "export_subscriber", "erase_subscriber",
        ],
    },
}


def _ensure_permissions(apps, using, app_label):
    app_config = apps.get_app_config(app_label)
    # Historical app configs have no models module, which create_permissions
    # reads as "no models here"; pretend otherwise for the call.
    models_module = getattr(app_config, "models_module", None)
    app_config.models_module = models_module or True
    try:
        create_permissions(app_config, apps=apps, verbosity=0, using=using)
    finally:
        app_config.models_module = models_module


def _permissions(apps, using, group):
    Permission = apps.get_model("auth", "Permission")
    found, wanted = [], set()
    for app_label, codenames in ROLE_PERMISSIONS[group].items():
        wanted |= {(app_label, codename) for codename in codenames}
        found += Permission.objects.using(using).filter(
            content_type__app_label=app_label, codename__in=codenames)
    missing = wanted - {(p.content_type.app_label, p.codename) for p in found}
    if missing:
        raise RuntimeError(f"Missing permissions for the {group} group: {sorted(missing)}")
    return found


def create_roles(apps, schema_editor):
    using = schema_editor.connection.alias if schema_editor else "default"
    for app_label in ("newsroom", "subscriptions"):
        _ensure_permissions(apps, using, app_label)
    Group = apps.get_model("auth", "Group")
    for name in ROLE_PERMISSIONS:
        group, _ = Group.objects.using(using).get_or_create(name=name)
        group.permissions.add(*_permissions(apps, using, name))


def delete_roles(apps, schema_editor):
    """Back to newsroom 0002's state: Editors without these, no Operations group."""
    using = schema_editor.connection.alias if schema_editor else "default"
    Group = apps.get_model("auth", "Group")
    editors = Group.objects.using(using).filter(name=EDITORS).first()
    if editors is not None:
        editors.permissions.remove(*_permissions(apps, using, EDITORS))
    Group.objects.using(using).filter(name=OPERATIONS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("subscriptions", "0006_delivery_revision"),
        ("newsroom", "0003_operations"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(create_roles, delete_roles),
    ]
