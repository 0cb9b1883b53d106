"""Publishing and unpublishing: guarded transitions announced after commit."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from newsroom.models import Category, Story
from newsroom.services import story_publish, story_unpublish
from newsroom.signals import story_unpublished

pytestmark = pytest.mark.django_db


@pytest.fixture
def editor():
    return get_user_model().objects.create_user("editor", password="x")


@pytest.fixture
def story():
    category = Category.objects.create(name="World", slug="world")
    return Story.objects.create(headline="Quake", slug="quake", category=category, body="Text")


@pytest.fixture
def received():
    """Calls of the unpublished signal, as (signal name, kwargs) pairs."""
    calls = []

    def unpublished(sender, **kwargs):
        calls.append(("unpublished", kwargs))

    story_unpublished.connect(unpublished, dispatch_uid="test-unpublished")
    yield calls
    story_unpublished.disconnect(dispatch_uid="test-unpublished")


def test_publish_sets_status_time_and_editor(story, editor, django_capture_on_commit_callbacks):
    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        assert story_publish(story=story, by=editor) is True

    story.refresh_from_db()
    assert story.status == Story.Status.PUBLISHED
    assert story.published_at >= before
    assert story.last_editor == editor
    assert story.updated_at >= before
    assert story.is_live


def test_publish_updates_the_callers_instance(story, editor):
    story_publish(story=story, by=editor)
    assert story.status == Story.Status.PUBLISHED
    assert story.published_at is not None
    assert story.last_editor_id == editor.pk


def test_publish_keeps_an_existing_publication_time(story, editor):
    earlier = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    Story.objects.filter(pk=story.pk).update(published_at=earlier)
    story_publish(story=story, by=editor)
    story.refresh_from_db()
    assert story.published_at == earlier


def test_publish_at_a_future_time_schedules(story, editor):
    later = timezone.now() + timedelta(hours=2)
    assert story_publish(story=story, by=editor, at=later)
    story.refresh_from_db()
    assert story.published_at == later
    assert story.status == Story.Status.PUBLISHED
    assert not story.is_live
    assert not Story.objects.live().exists()


def test_publish_rejects_a_naive_time(story, editor):
    with pytest.raises(ValueError, match="aware"):
        story_publish(story=story, by=editor, at=datetime(2026, 1, 1))
    story.refresh_from_db()
    assert story.status == Story.Status.DRAFT


def test_publishing_twice_is_a_no_op(story, editor, django_capture_on_commit_callbacks):
    other = get_user_model().objects.create_user("other", password="x")
    with django_capture_on_commit_callbacks(execute=True):
        assert story_publish(story=story, by=editor) is True
    first_time = story.published_at
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert story_publish(story=Story.objects.get(pk=story.pk), by=other) is False
    assert callbacks == []
    story.refresh_from_db()
    assert story.published_at == first_time
    assert story.last_editor == editor


def test_a_stale_instance_cannot_publish_twice(story, editor):
    """Two editors holding the same draft: only one transition happens."""
    copy = Story.objects.get(pk=story.pk)
    assert story_publish(story=story, by=editor) is True
    assert story_publish(story=copy, by=editor) is False


def test_signal_waits_for_the_commit(story, editor, received, django_capture_on_commit_callbacks):
    story_publish(story=story, by=None)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        story_unpublish(story=story, by=editor)
        assert received == []
    assert len(callbacks) == 1
    assert received == []  # the transaction never committed


def test_a_failing_receiver_does_not_undo_or_raise(
    story, editor, caplog, django_capture_on_commit_callbacks
):
    def broken(sender, **kwargs):
        raise RuntimeError("queue down")

    story_publish(story=story, by=None)
    story_unpublished.connect(broken, dispatch_uid="test-broken")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert story_unpublish(story=story, by=editor) is True
    finally:
        story_unpublished.disconnect(dispatch_uid="test-broken")
    story.refresh_from_db()
    assert story.status == Story.Status.DRAFT
    assert "failed for story" in caplog.text


def test_unpublish_returns_to_draft_and_keeps_the_time(
    story, editor, received, django_capture_on_commit_callbacks
):
    story_publish(story=story, by=None)
    published_at = story.published_at
    with django_capture_on_commit_callbacks(execute=True):
        assert story_unpublish(story=story, by=editor) is True
    story.refresh_from_db()
    assert story.status == Story.Status.DRAFT
    assert story.published_at == published_at
    assert story.last_editor == editor
    assert received == [("unpublished", {"signal": story_unpublished, "story_id": story.pk,
                                          "withdraw_alerts": True})]


def test_unpublishing_a_draft_is_a_no_op(story, editor, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert story_unpublish(story=story, by=editor) is False
    assert callbacks == []
    story.refresh_from_db()
    assert story.last_editor is None


def test_republishing_keeps_the_original_time(story, editor):
    story_publish(story=story, by=editor)
    first = story.published_at
    story_unpublish(story=story, by=editor)
    assert story_publish(story=story, by=editor) is True
    assert story.published_at == first
