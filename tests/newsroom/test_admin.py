"""The editorial admin as an editor uses it: write, preview, publish, unpublish."""

import importlib
from types import SimpleNamespace

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from django.utils import timezone

from newsroom.models import Category, Source, Story

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:newsroom_story_changelist")
ADD = reverse("admin:newsroom_story_add")
editors_migration = importlib.import_module("newsroom.migrations.0002_editors_group")


@pytest.fixture
def category():
    return Category.objects.create(name="Politics", slug="politics")


def _staff(username, *groups, **extra):
    user = get_user_model().objects.create_user(username, password="pw", is_staff=True, **extra)
    user.groups.add(*groups)
    return user


@pytest.fixture
def editor():
    return _staff("editor", Group.objects.get(name="Editors"))


@pytest.fixture
def editor_client(client, editor):
    client.force_login(editor)
    return client


@pytest.fixture
def writer(client):
    """Staff who may write stories but not publish them."""
    user = _staff("writer")
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="newsroom",
            codename__in=["view_story", "add_story", "change_story", "view_category"],
        )
    )
    return user


def _story(category, slug="budget", **fields):
    fields.setdefault("headline", "Budget passes")
    fields.setdefault("body", "## Detail\n\nThe vote was *close*.")
    return Story.objects.create(category=category, slug=slug, **fields)


def _action_choices(response):
    form = response.context["action_form"]  # None when no action is allowed at all
    return set() if form is None else {value for value, _ in form.fields["action"].choices}


def _action(client, action, stories, confirm=False):
    data = {"action": action, ACTION_CHECKBOX_NAME: [story.pk for story in stories]}
    if confirm:
        data["post"] = "yes"
    return client.post(CHANGELIST, data)


# --- The Editors group ------------------------------------------------------------


def test_migration_creates_the_editors_group_on_a_fresh_database():
    """The editorial half; subscriptions 0006 adds alerts (tests/newsroom/test_roles.py)."""
    group = Group.objects.get(name="Editors")
    granted = set(group.permissions.filter(content_type__app_label="newsroom")
                  .values_list("content_type__model", "codename"))
    assert granted == {
        (model, codename)
        for model, codenames in editors_migration.EDITOR_PERMISSIONS.items()
        for codename in codenames
    }
    assert ("category", "delete_category") not in granted


def test_migration_is_reversible_and_repeatable():
    state_apps = (
        MigrationExecutor(connection)
        .loader.project_state(("newsroom", "0002_editors_group"))
        .apps
    )
    # RunPython only needs the connection: no schema change is involved.
    schema_editor = SimpleNamespace(connection=connection)
    editors_migration.delete_editors_group(state_apps, schema_editor)
    assert not Group.objects.filter(name="Editors").exists()
    editors_migration.create_editors_group(state_apps, schema_editor)
    editors_migration.create_editors_group(state_apps, schema_editor)
    assert Group.objects.get(name="Editors").permissions.count() == 12


# --- Access -----------------------------------------------------------------------


def test_non_staff_are_sent_to_the_admin_login(client):
    user = get_user_model().objects.create_user("reader", password="pw")
    client.force_login(user)
    response = client.get(CHANGELIST)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_anonymous_visitors_are_sent_to_the_admin_login(client):
    response = client.get(reverse("admin:index"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_editor_logs_in_with_a_password(client, editor):
    response = client.post(
        reverse("admin:login"), {"username": "editor", "password": "pw", "next": CHANGELIST}
    )
    assert response.status_code == 302
    assert client.get(CHANGELIST).status_code == 200


# --- Writing and previewing ---------------------------------------------------------


def test_editor_creates_a_story_with_sources_and_sees_the_preview(editor_client, editor, category):
    assert editor_client.get(ADD).status_code == 200
    response = editor_client.post(ADD, {
        "headline": "Budget passes",
        "slug": "budget-passes",
        "category": category.pk,
        "story_number": "",
        "dek": "A narrow vote.",
        "body": "## The vote\n\nIt was *close*.\n\n<script>alert(1)</script>",
        "published_at_0": "",
        "published_at_1": "",
        "sources-TOTAL_FORMS": "2",
        "sources-INITIAL_FORMS": "0",
        "sources-MIN_NUM_FORMS": "0",
        "sources-MAX_NUM_FORMS": "1000",
        "sources-0-order": "2",
        "sources-0-name": "Parliament",
        "sources-0-url": "https://parliament.example/vote",
        "sources-0-domain": "parliament.example",
        "sources-1-order": "1",
        "sources-1-name": "Treasury",
        "sources-1-url": "https://treasury.example/budget",
        "sources-1-domain": "",
        "_continue": "Save and continue editing",
    })
    assert response.status_code == 302, response.context["adminform"].form.errors
    story = Story.objects.get(slug="budget-passes")
    assert story.status == Story.Status.DRAFT
    assert story.last_editor == editor
    assert list(story.sources.values_list("name", flat=True)) == ["Treasury", "Parliament"]

    page = editor_client.get(response["Location"]).content.decode()
    assert '<div class="story-preview"><h1>Budget passes</h1>' in page
    assert "<h2>The vote</h2>" in page
    assert "<em>close</em>" in page
    assert "<script>" not in page.split('class="story-preview"')[1]


def test_preview_escapes_the_headline(editor_client, category):
    story = _story(category, headline="<img src=x onerror=alert(1)>")
    page = editor_client.get(reverse("admin:newsroom_story_change", args=[story.pk]))
    assert "<img src=x onerror" not in page.content.decode()
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.content.decode()


def test_status_cannot_be_set_through_the_form(editor_client, category):
    story = _story(category)
    url = reverse("admin:newsroom_story_change", args=[story.pk])
    data = {
        "headline": story.headline, "slug": story.slug, "category": category.pk,
        "body": story.body, "status": "published", "published_at_0": "", "published_at_1": "",
        "sources-TOTAL_FORMS": "0", "sources-INITIAL_FORMS": "0",
        "sources-MIN_NUM_FORMS": "0", "sources-MAX_NUM_FORMS": "1000",
    }
    assert editor_client.post(url, data).status_code == 302
    story.refresh_from_db()
    assert story.status == Story.Status.DRAFT


def test_a_published_story_keeps_its_publication_time(editor_client, category):
    story = _story(category, status=Story.Status.PUBLISHED, published_at=timezone.now())
    url = reverse("admin:newsroom_story_change", args=[story.pk])
    response = editor_client.post(url, {
        "headline": story.headline, "slug": story.slug, "category": category.pk,
        "body": story.body, "published_at_0": "", "published_at_1": "",
        "sources-TOTAL_FORMS": "0", "sources-INITIAL_FORMS": "0",
        "sources-MIN_NUM_FORMS": "0", "sources-MAX_NUM_FORMS": "1000",
    })
    assert response.status_code == 200
    assert "needs a publication time" in response.content.decode()


# --- Publishing ---------------------------------------------------------------------


def test_publish_asks_for_confirmation_first(editor_client, category):
    story = _story(category, breaking=True)
    already = _story(category, slug="old", headline="Old news", status=Story.Status.PUBLISHED,
                     published_at=timezone.now())

    response = _action(editor_client, "publish", [story, already])
    assert response.status_code == 200
    page = response.content.decode()
    assert "Budget passes" in page
    assert "Old news" in page and "already published" in page
    assert "breaking alert" in page
    assert '<input type="hidden" name="post" value="yes">' in page
    assert '<input type="hidden" name="action" value="publish">' in page
    story.refresh_from_db()
    assert story.status == Story.Status.DRAFT


def test_publish_after_confirming(
    editor_client, editor, category, django_capture_on_commit_callbacks
):
    story = _story(category, breaking=True)
    with django_capture_on_commit_callbacks(execute=True):
        response = _action(editor_client, "publish", [story], confirm=True)
    assert response.status_code == 302
    story.refresh_from_db()
    assert story.status == Story.Status.PUBLISHED
    assert story.published_at is not None
    assert story.last_editor == editor

    messages = [str(m) for m in editor_client.get(CHANGELIST).context["messages"]]
    assert messages == ["Published 1 story."]


def test_publish_reports_what_was_left_alone(editor_client, category):
    story = _story(category)
    already = _story(category, slug="old", status=Story.Status.PUBLISHED,
                     published_at=timezone.now())
    response = _action(editor_client, "publish", [story, already], confirm=True)
    messages = [str(m) for m in editor_client.get(response["Location"]).context["messages"]]
    assert messages == ["Published 1 story. 1 story already published, left as is."]


def test_unpublish_asks_then_acts(editor_client, editor, category):
    story = _story(category, status=Story.Status.PUBLISHED, published_at=timezone.now())

    response = _action(editor_client, "unpublish", [story])
    assert response.status_code == 200
    assert "Unpublish the following 1 story?" in response.content.decode()
    story.refresh_from_db()
    assert story.status == Story.Status.PUBLISHED

    response = _action(editor_client, "unpublish", [story], confirm=True)
    assert response.status_code == 302
    story.refresh_from_db()
    assert story.status == Story.Status.DRAFT
    assert story.last_editor == editor
    messages = [str(m) for m in editor_client.get(CHANGELIST).context["messages"]]
    assert messages == ["Unpublished 1 story."]


def test_actions_are_logged_in_the_history(editor_client, category):
    story = _story(category)
    _action(editor_client, "publish", [story], confirm=True)
    history = editor_client.get(reverse("admin:newsroom_story_history", args=[story.pk]))
    assert "Published." in history.content.decode()


def test_staff_without_publish_permission_do_not_get_the_actions(client, writer, category):
    story = _story(category)
    client.force_login(writer)
    response = client.get(CHANGELIST)
    assert response.status_code == 200
    assert not {"publish", "unpublish"} & _action_choices(response)

    # Posting the action anyway changes nothing.
    _action(client, "publish", [story], confirm=True)
    story.refresh_from_db()
    assert story.status == Story.Status.DRAFT


def test_editors_get_the_actions(editor_client):
    response = editor_client.get(CHANGELIST)
    assert {"publish", "unpublish"} <= _action_choices(response)


# --- Lists ---------------------------------------------------------------------------


@pytest.mark.parametrize("query", [
    {},
    {"q": "budget"},
    {"status__exact": "published"},
    {"breaking__exact": "1"},
    {"category__id__exact": "1"},
    {"published_at__isnull": "False"},
    {"published_at__year": "2026"},
])
def test_story_list_filters_and_search(editor_client, category, query):
    _story(category, status=Story.Status.PUBLISHED, published_at=timezone.now())
    Source.objects.create(story=Story.objects.get(), name="S", url="https://s.example/")
    assert editor_client.get(CHANGELIST, query).status_code == 200


@pytest.mark.parametrize("count", [1, 30])
def test_story_list_query_count_is_constant(
    editor_client, editor, category, count, django_assert_num_queries
):
    for number in range(count):
        _story(category, slug=f"s{number}", last_editor=editor, status=Story.Status.PUBLISHED,
               published_at=timezone.now())
    # session, user, group permissions, counts, one page of rows with their
    # category and editor, the category filter, the date hierarchy
    with django_assert_num_queries(10):
        assert editor_client.get(CHANGELIST).status_code == 200


def test_category_list_shows_story_counts(editor_client, category):
    _story(category)
    _story(category, slug="second")
    response = editor_client.get(reverse("admin:newsroom_category_changelist"))
    assert response.status_code == 200
    assert '<td class="field-story_count">2</td>' in response.content.decode()
