"""Create the "Editors" group: everything a desk editor needs, nothing more.

Permissions are normally created by the post_migrate signal, i.e. after *all*
migrations; on a fresh database they do not exist yet when this runs. So the
permissions of this app are created here first (create_permissions is
idempotent), the well-known pattern for data migrations that grant them.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP_NAME = "Editors"

# model -> permission codenames granted to editors
EDITOR_PERMISSIONS = {
    "category": ["view_category", "add_category", "change_category"],
    "story": ["view_story", "add_story", "change_story", "delete_story", "publish_story"],
    "source": ["view_source", "add_source", "change_source", "delete_source"],
}


def _ensure_permissions(apps, using):
    app_config = apps.get_app_config("newsroom")
    # Historical app configs have no models module, which create_permissions
    # reads as "no models here"; pretend otherwise for the call.
    models_module = getattr(app_config, "models_module", None)
    app_config.models_module = models_module or True
    try:
        create_permissions(app_config, apps=apps, verbosity=0, using=using)
    finally:
        app_config.models_module = models_module


def create_editors_group(apps, schema_editor):
    using = schema_editor.connection.alias if schema_editor else "default"
    _ensure_permissions(apps, using)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")

    wanted = {
        (model, codename) for model, codenames in EDITOR_PERMISSIONS.items()
        for codename in codenames
    }
    permissions = list(
        Permission.objects.using(using).filter(
            content_type__app_label="newsroom",
            codename__in=[codename for _, codename in wanted],
        )
    )
    found = {(p.content_type.model, p.codename) for p in permissions}
    if found != wanted:
        raise RuntimeError(f"Missing permissions for the Editors group: {sorted(wanted - found)}")

    group, _ = Group.objects.using(using).get_or_create(name=GROUP_NAME)
    group.permissions.add(*permissions)


def delete_editors_group(apps, schema_editor):
    using = schema_editor.connection.alias if schema_editor else "default"
    Group = apps.get_model("auth", "Group")
    Group.objects.using(using).filter(name=GROUP_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("newsroom", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunPython(create_editors_group, delete_editors_group),
    ]
