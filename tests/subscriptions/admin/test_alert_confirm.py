"""The editor's side of a send's safety: what the confirm page shows and refuses,
what a story that cannot be sent does to its edition, and unpublishing with an
alert still on its way."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse
from django.utils import timezone

from newsroom.models import Story
from subscriptions.models import Delivery, Edition
from subscriptions.sending import dispatch, reconcile, steering
from tests.subscriptions.factories import category, subscriber

pytestmark = pytest.mark.django_db

HUGE = "A paragraph long enough to matter, over and over. " * 6000  # ~300 KB


@pytest.fixture
def policy():
    return category("policy", name="Policy")


def breaking(cat, **fields) -> Story:
    fields.setdefault("body", "What happened, and why it matters.")
    return Story.objects.create(
        headline=fields.pop("headline", "Parliament votes"), slug=fields.pop("slug", "vote"),
        category=cat, breaking=True, status=Story.Status.PUBLISHED,
        published_at=timezone.now() - timedelta(minutes=1), **fields,
    )


def alert_url(story: Story) -> str:
    return reverse("admin:newsroom_story_alert", args=[story.pk])


def test_the_confirm_page_shows_what_readers_get_verbatim(admin_client, policy):
    story = breaking(policy, headline="Vote @@email@@ {{ x }} %s")
    subscriber(categories=[policy])
    page = admin_client.get(alert_url(story)).content.decode()
    assert 'class="alert-subject">Breaking: Vote @@email@@ {{ x }} %s<' in page
    assert "alert-preview-html" in page and "How it reads in a digest" in page
    assert 'value="Send breaking alert"' in page


def test_a_story_too_large_to_send_is_refused_at_confirm(admin_client, policy):
    story = breaking(policy, body=HUGE)
    subscriber(categories=[policy])
    page = admin_client.get(alert_url(story)).content.decode()
    assert "This alert cannot be sent as it is" in page and "shorten the story" in page
    assert 'value="Send breaking alert"' not in page

    response = admin_client.post(alert_url(story), {"post": "yes"}, follow=True)
    assert not Edition.objects.exists()
    assert "it cannot be sent as it is" in response.content.decode()
    with pytest.raises(steering.EditionError, match="shorten the story"):
        dispatch.edition_create_alert(story=story, by=None)


def forced_alert(story: Story) -> Edition:
    """An alert made past the service's checks, as a story corrected after its confirm is."""
    edition = Edition.objects.create(
        key=f"alert:story:{story.pk}", kind=Edition.Kind.ALERT, scheduled_at=timezone.now(),
        audience={"category_id": story.category_id},
    )
    edition.stories.set([story])
    return edition


def test_a_forced_alert_that_cannot_be_built_fails_with_its_reason_and_stays_failed(
        policy, django_capture_on_commit_callbacks):
    story = breaking(policy, body=HUGE)
    subscriber(categories=[policy])
    edition = forced_alert(story)
    assert dispatch.edition_dispatch(edition_id=edition.pk) == 0
    edition.refresh_from_db()
    assert edition.status == Edition.Status.FAILED and "shorten the story" in edition.note
    assert not Delivery.objects.filter(edition=edition).exists()  # stopped before writing rows
    later = timezone.now() + timedelta(hours=1)
    for _ in range(3):  # reconcile leaves it for a person: no loop, nothing counted
        report = reconcile.editions_reconcile(now=later)
        assert not report.acted
    edition.refresh_from_db()
    assert (edition.status, edition.requeued) == (Edition.Status.FAILED, 0)

    with pytest.raises(steering.EditionError, match="still cannot be sent"):
        steering.edition_retry_failed(edition=edition)
    story.body = "Shorter now."
    story.save()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        steering.edition_retry_failed(edition=edition)
    edition.refresh_from_db()
    assert (edition.status, edition.note) == (Edition.Status.PLANNED, "")
    assert len(callbacks) == 1  # its dispatch, enqueued on commit


def test_the_edition_page_offers_retry_and_reports_a_refusal(admin_client, policy):
    story = breaking(policy, body=HUGE)
    reader = subscriber(categories=[policy])
    edition = forced_alert(story)
    dispatch.edition_dispatch(edition_id=edition.pk)
    retry = reverse("admin:subscriptions_edition_retry", args=[edition.pk])
    response = admin_client.post(retry, {"post": "yes"}, follow=True)
    assert "still cannot be sent" in response.content.decode()
    preview = reverse("admin:subscriptions_edition_preview", args=[edition.pk])
    response = admin_client.get(preview, {"email": reader.email})
    assert response.status_code == 200
    assert "shorten the story" in response.content.decode()


def unpublish(admin_client, story: Story, **extra):
    return admin_client.post(reverse("admin:newsroom_story_changelist"), {
        "action": "unpublish", ACTION_CHECKBOX_NAME: [story.pk], **extra,
    })


def sending_alert(story: Story) -> Edition:
    edition = forced_alert(story)
    Edition.objects.filter(pk=edition.pk).update(status=Edition.Status.SENDING,
                                                 started_at=timezone.now(), targeted=10, sent=4)
    return edition


def test_unpublishing_asks_to_cancel_the_alert_and_does_by_default(
        admin_client, policy, django_capture_on_commit_callbacks):
    story = breaking(policy)
    edition = sending_alert(story)
    page = unpublish(admin_client, story).content.decode()
    assert "not reached everyone yet" in page and "4 of 10 sent" in page
    assert 'name="withdraw_alerts" value="yes" checked' in page
    with django_capture_on_commit_callbacks(execute=True):
        unpublish(admin_client, story, post="yes", withdraw_alerts="yes",
                  withdraw_alerts_offered="yes")
    edition.refresh_from_db()
    assert edition.status == Edition.Status.CANCELLED
    assert edition.note == "cancelled: the story was unpublished"


def test_unpublishing_with_the_box_unticked_lets_the_alert_go_on(
        admin_client, policy, django_capture_on_commit_callbacks):
    story = breaking(policy)
    edition = sending_alert(story)
    with django_capture_on_commit_callbacks(execute=True):
        unpublish(admin_client, story, post="yes", withdraw_alerts_offered="yes")
    story.refresh_from_db()
    edition.refresh_from_db()
    assert story.status == Story.Status.DRAFT
    assert edition.status == Edition.Status.SENDING


def test_a_story_saved_is_a_new_revision_even_from_a_stale_copy(policy):
    story = breaking(policy)
    stale = Story.objects.get(pk=story.pk)
    story.headline = "First fix"
    story.save()
    stale.headline = "Second fix"
    stale.save()
    assert (story.revision, stale.revision) == (2, 3)
    story.save(update_fields=["headline"])
    assert Story.objects.get(pk=story.pk).revision == 4
