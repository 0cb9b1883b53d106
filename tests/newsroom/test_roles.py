"""The newsroom's roles: what Editors and Operations may do, and that nobody else may.

Each role is tried the way a person in it works, through the admin's own pages;
a staff member in no group is refused on every page that acts or shows readers.
"""

import importlib
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from django.utils import timezone

from newsroom.management.commands import runall
from newsroom.models import Story
from subscriptions.models import Edition
from subscriptions.sending import dispatch
from tests.subscriptions.factories import category, subscriber

pytestmark = pytest.mark.django_db

roles = importlib.import_module("subscriptions.migrations.0007_newsroom_roles")
editorial = importlib.import_module("newsroom.migrations.0002_editors_group")
imports = importlib.import_module("subscriptions.migrations.0010_consent_at_import")

STORIES = reverse("admin:newsroom_story_changelist")
OPERATIONS = reverse("admin:newsroom_operations_changelist")
EXPORT_CSV = reverse("admin:subscriptions_subscriber_export_csv")


def _user(username: str, *groups: str):
    user = get_user_model().objects.create_user(username, password="pw", is_staff=True)
    user.groups.add(*(Group.objects.get(name=name) for name in groups))
    return user


@pytest.fixture
def politics():
    return category("politics")


@pytest.fixture
def reader(politics):
    return subscriber("reader@example.com", categories=[politics])


def _story(cat, **fields) -> Story:
    fields.setdefault("headline", "Dam bursts upstream")
    fields.setdefault("slug", f"story-{Story.objects.count() + 1}")
    fields.setdefault("body", "First paragraph.")
    fields.setdefault("breaking", True)
    return Story.objects.create(category=cat, **fields)


@pytest.fixture
def edition(politics, enqueued) -> Edition:
    story = _story(politics, status=Story.Status.PUBLISHED,
                   published_at=timezone.now() - timedelta(minutes=1))
    return dispatch.edition_create_alert(story=story, by=None)


def _edition_url(name: str, edition: Edition) -> str:
    return reverse(f"admin:subscriptions_edition_{name}", args=[edition.pk])


# --- The groups ---------------------------------------------------------------------


def _granted(group: str) -> set[tuple[str, str]]:
    return set(Group.objects.get(name=group).permissions
               .values_list("content_type__app_label", "codename"))


def _declared(group: str) -> set[tuple[str, str]]:
    return {(app, codename) for app, codenames in roles.ROLE_PERMISSIONS[group].items()
            for codename in codenames}


def test_the_migrations_make_both_roles_with_exactly_their_permissions():
    assert _granted("Operations") == _declared("Operations") | {
        ("subscriptions", imports.PERMISSION)}
    assert _granted("Editors") == _declared("Editors") | {
        ("newsroom", codename) for codenames in editorial.EDITOR_PERMISSIONS.values()
        for codename in codenames
    }
    assert ("newsroom", "view_operations") not in _granted("Editors")
    assert not {codename for app, codename in _granted("Editors") if "subscriber" in codename}
    assert not {codename for app, codename in _granted("Operations") if app == "newsroom"
                and codename != "view_operations"}  # no stories: operations cannot alert


def test_the_roles_migration_is_reversible_and_repeatable():
    state = MigrationExecutor(connection).loader.project_state(
        ("subscriptions", "0007_newsroom_roles")).apps
    schema_editor = SimpleNamespace(connection=connection)
    roles.delete_roles(state, schema_editor)
    assert not Group.objects.filter(name="Operations").exists()
    assert not {app for app, _ in _granted("Editors")} - {"newsroom"}  # back to 0002
    roles.create_roles(state, schema_editor)
    roles.create_roles(state, schema_editor)
    assert _granted("Operations") == _declared("Operations")
    assert _declared("Editors") <= _granted("Editors")


# --- Editors --------------------------------------------------------------------------


def test_an_editor_publishes_a_breaking_story_and_sends_its_alert(
    client, politics, reader, enqueued, django_capture_on_commit_callbacks
):
    client.force_login(_user("desk", "Editors"))
    story = _story(politics)
    confirm = client.post(STORIES, {"action": "publish", ACTION_CHECKBOX_NAME: [story.pk]})
    assert "you will be taken to the page that sends their breaking alert" in (
        confirm.content.decode())

    published = client.post(STORIES, {"action": "publish", "post": "yes",
                                       ACTION_CHECKBOX_NAME: [story.pk]})
    alert = reverse("admin:newsroom_story_alert", args=[story.pk])
    assert published.status_code == 302 and published["Location"] == alert
    page = client.get(alert)
    assert page.status_code == 200 and page.context["audience"] == 1

    with django_capture_on_commit_callbacks(execute=True):
        sent = client.post(alert, {"post": "yes"})
    edition = Edition.objects.get()
    assert sent["Location"] == _edition_url("change", edition)
    assert enqueued == [edition.pk] and edition.created_by.username == "desk"
    assert client.get(sent["Location"]).status_code == 200  # editors see editions


def test_an_editor_sees_no_operations_and_no_readers(client, edition, reader):
    client.force_login(_user("desk", "Editors"))
    assert client.get(OPERATIONS).status_code == 403
    assert client.get(EXPORT_CSV).status_code == 403
    assert client.get(reverse("admin:subscriptions_subscriber_changelist")).status_code == 403
    html = client.get(_edition_url("change", edition)).content.decode()
    assert "Preview for a subscriber" not in html  # a reader's copy is a reader's data


# --- Operations -----------------------------------------------------------------------


def test_operations_watch_steer_and_look_after_readers(client, edition, reader):
    client.force_login(_user("oncall", "Operations"))
    assert client.get(OPERATIONS).status_code == 200
    assert client.get(_edition_url("change", edition)).status_code == 200
    assert client.get(EXPORT_CSV).status_code == 200
    export = reverse("admin:subscriptions_subscriber_export_json", args=[reader.pk])
    assert client.get(export).status_code == 200
    erase = reverse("admin:subscriptions_subscriber_erase", args=[reader.pk])
    assert client.get(erase).status_code == 200

    assert client.post(_edition_url("pause", edition), {"post": "yes"}).status_code == 302
    edition.refresh_from_db()
    assert edition.status == Edition.Status.PAUSED


def test_operations_cannot_send_an_alert(client, politics, enqueued):
    client.force_login(_user("oncall", "Operations"))
    story = _story(politics, status=Story.Status.PUBLISHED,
                   published_at=timezone.now() - timedelta(minutes=1))
    alert = reverse("admin:newsroom_story_alert", args=[story.pk])
    assert client.get(alert).status_code == 403
    assert client.post(alert, {"post": "yes"}).status_code == 403
    assert not Edition.objects.exists()


# --- Nobody else ----------------------------------------------------------------------


def test_staff_in_no_group_are_refused_everywhere(client, politics, edition, reader):
    client.force_login(_user("nobody"))
    story = edition.stories.get()
    alert = reverse("admin:newsroom_story_alert", args=[story.pk])
    refused = {
        "alert confirm": client.post(alert, {"post": "yes"}),
        "alert page": client.get(alert),
        "pause": client.post(_edition_url("pause", edition), {"post": "yes"}),
        "cancel": client.post(_edition_url("cancel", edition), {"post": "yes"}),
        "edition page": client.get(_edition_url("change", edition)),
        "operations": client.get(OPERATIONS),
        "subscriber export": client.get(EXPORT_CSV),
        "subscriber data": client.get(
            reverse("admin:subscriptions_subscriber_export_json", args=[reader.pk])),
        "erase": client.post(reverse("admin:subscriptions_subscriber_erase", args=[reader.pk]),
                             {"post": "yes"}),
    }
    assert {name: r.status_code for name, r in refused.items()} == dict.fromkeys(refused, 403)
    edition.refresh_from_db()
    reader.refresh_from_db()
    assert edition.status == Edition.Status.PLANNED and reader.erased_at is None
    assert Edition.objects.count() == 1


# --- The demo account -----------------------------------------------------------------


def test_the_demo_account_has_both_roles_and_the_banner_says_so(client, politics, enqueued):
    password = runall.demo_editor_create()
    assert password and runall.demo_editor_create() is None  # once
    user = get_user_model().objects.get(username=runall.DEMO_EDITOR)
    assert set(user.groups.values_list("name", flat=True)) == {"Editors", "Operations"}
    assert not user.is_superuser

    signed_in = client.post(reverse("admin:login"),
                            {"username": runall.DEMO_EDITOR, "password": password})
    assert signed_in.status_code == 302  # the printed password works (through axes)
    story = _story(politics)
    published = client.post(STORIES, {"action": "publish", "post": "yes",
                                       ACTION_CHECKBOX_NAME: [story.pk]})
    assert published["Location"] == reverse("admin:newsroom_story_alert", args=[story.pk])
    assert client.get(OPERATIONS).status_code == 200
    assert client.get(EXPORT_CSV).status_code == 200

    command = runall.Command()
    command.stdout = SimpleNamespace(write=lambda text: lines.append(text), flush=lambda: None)
    lines: list[str] = []
    command._banner({"host": "localhost", "port": 8000, "flower_port": 5555}, password)
    banner = "\n".join(lines)
    assert f"user: editor  password: {password}" in banner
    assert "Editors and Operations groups" in banner and "send breaking alerts" in banner
