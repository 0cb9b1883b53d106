"""From publishing a breaking story to its alert edition, as an editor does it in the admin."""

from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from newsroom.models import Story
from subscriptions.admin.alerts import StoryAlertAdmin
from subscriptions.models import Edition
from subscriptions.sending import dispatch
from tests.subscriptions.factories import category, subscriber

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:newsroom_story_changelist")


def alert_url(story: Story) -> str:
    return reverse("admin:newsroom_story_alert", args=[story.pk])


def change_url(story: Story) -> str:
    return reverse("admin:newsroom_story_change", args=[story.pk])


def edition_url(edition: Edition) -> str:
    return reverse("admin:subscriptions_edition_change", args=[edition.pk])


def _editor(username: str, *, may_send: bool):
    """In the Editors group (which sends alerts), or given only its editorial part."""
    user = get_user_model().objects.create_user(username, password="pw", is_staff=True)
    editors = Group.objects.get(name="Editors")
    if may_send:
        user.groups.add(editors)
    else:
        user.user_permissions.add(*editors.permissions.filter(content_type__app_label="newsroom"))
    return user


@pytest.fixture
def desk(client):
    """An editor who may also send alerts."""
    client.force_login(_editor("desk", may_send=True))
    return client


@pytest.fixture
def writer_client(client):
    """An editor who may publish but not send alerts."""
    client.force_login(_editor("plain", may_send=False))
    return client


@pytest.fixture
def politics():
    return category("politics")


@pytest.fixture
def audience(politics):
    """Two readers who get the alert, and one of each kind who does not."""
    tech = category("tech")
    wanted = [subscriber("a@example.com", categories=[politics]),
              subscriber("b@example.com", categories=[politics, tech])]
    subscriber("no-alerts@example.com", categories=[politics], wants_alerts=False)
    subscriber("pending@example.com", categories=[politics], status="pending")
    subscriber("left@example.com", categories=[politics], status="unsubscribed")
    subscriber("other@example.com", categories=[tech])
    return wanted


def _story(cat, slug="dam", **fields) -> Story:
    fields.setdefault("headline", "Dam bursts upstream")
    fields.setdefault("dek", "Towns evacuated.")
    fields.setdefault("body", "First paragraph.")
    fields.setdefault("breaking", True)
    return Story.objects.create(category=cat, slug=slug, **fields)


def _published(cat, slug="dam", **fields) -> Story:
    return _story(cat, slug, status=Story.Status.PUBLISHED,
                  published_at=timezone.now() - timedelta(minutes=1), **fields)


def _publish(client, *stories):
    return client.post(CHANGELIST, {"action": "publish", "post": "yes",
                                    ACTION_CHECKBOX_NAME: [s.pk for s in stories]})


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# --- The offer after publishing -------------------------------------------------------


def test_publishing_a_breaking_story_leads_to_its_alert_offer(desk, politics, audience):
    story = _story(politics)
    response = _publish(desk, story)
    assert response.status_code == 302 and response["Location"] == alert_url(story)
    story.refresh_from_db()
    assert story.status == Story.Status.PUBLISHED

    page = desk.get(response["Location"])
    assert page.status_code == 200
    assert page.context["audience"] == len(audience) == 2
    html = page.content.decode()
    assert "Dam bursts upstream" in html and "Politics" in html
    assert '<input type="submit" class="default" value="Send breaking alert">' in html
    assert f'href="{change_url(story)}" class="button cancel-link">Not now</a>' in html
    assert _messages(page) == ["Published 1 story."]
    assert not Edition.objects.exists()  # offering sends nothing


def test_confirming_creates_one_planned_edition_and_a_second_post_none(
    desk, politics, audience, enqueued, django_capture_on_commit_callbacks
):
    story = _published(politics)
    with django_capture_on_commit_callbacks(execute=True):
        response = desk.post(alert_url(story), {"post": "yes"})
    edition = Edition.objects.get()
    assert response.status_code == 302 and response["Location"] == edition_url(edition)
    assert (edition.kind, edition.status, edition.key) == ("alert", "planned",
                                                          f"alert:story:{story.pk}")
    assert edition.created_by.username == "desk"
    assert list(edition.stories.all()) == [story]
    assert enqueued == [edition.pk]
    page = desk.get(response["Location"])
    assert page.status_code == 200
    assert _messages(page) == [
        f"Breaking alert for “Dam bursts upstream” planned: edition #{edition.pk} "
        "starts sending now."
    ]

    again = desk.post(alert_url(story), {"post": "yes"})  # the double click
    assert again.status_code == 302 and again["Location"] == edition_url(edition)
    assert Edition.objects.count() == 1 and enqueued == [edition.pk]
    [message] = _messages(desk.get(again["Location"]))
    assert "already exists" in message and f"edition #{edition.pk}" in message


def test_a_race_lost_in_the_service_creates_nothing_more(
    desk, politics, enqueued, monkeypatch
):
    """Two editors at once: both pass the page's check, the service refuses the second."""
    story = _published(politics)
    first = dispatch.edition_create_alert(story=story, by=None)
    monkeypatch.setattr(StoryAlertAdmin, "_alert_editions", staticmethod(lambda stories: {}))
    response = desk.post(alert_url(story), {"post": "yes"})
    assert response["Location"] == edition_url(first)
    assert Edition.objects.count() == 1
    assert "already exists" in _messages(desk.get(response["Location"]))[0]


def test_a_get_or_an_unconfirmed_post_sends_nothing(desk, politics, enqueued):
    story = _published(politics)
    assert desk.get(alert_url(story)).status_code == 200
    assert desk.post(alert_url(story), {}).status_code == 200
    assert not Edition.objects.exists() and enqueued == []


def test_several_breaking_stories_get_links_to_each_offer(desk, politics):
    one, two = _story(politics, "one"), _story(politics, "two", headline="Second story")
    calm = _story(politics, "calm", breaking=False)
    response = _publish(desk, one, two, calm)
    assert response["Location"] == CHANGELIST
    messages = _messages(desk.get(CHANGELIST))
    assert messages[0] == "Published 3 stories."
    assert f'<a href="{alert_url(one)}">Dam bursts upstream</a>' in messages[1]
    assert f'<a href="{alert_url(two)}">Second story</a>' in messages[1]
    assert alert_url(calm) not in messages[1]


def test_a_scheduled_breaking_story_is_not_offered_until_live(desk, politics, enqueued):
    story = _story(politics, published_at=timezone.now() + timedelta(hours=2))
    response = _publish(desk, story)
    assert response["Location"] == CHANGELIST
    assert "send its breaking alert from its page once it is live" in " ".join(
        _messages(desk.get(CHANGELIST)))
    refused = desk.post(alert_url(story), {"post": "yes"})
    assert refused["Location"] == change_url(story)
    assert not Edition.objects.exists()


# --- No offer -------------------------------------------------------------------------


def test_non_breaking_stories_get_no_offer(desk, politics, enqueued):
    story = _story(politics, breaking=False)
    response = _publish(desk, story)
    assert response["Location"] == CHANGELIST
    assert _messages(desk.get(CHANGELIST)) == ["Published 1 story."]

    refused = desk.post(alert_url(story), {"post": "yes"})
    assert refused["Location"] == change_url(story)
    assert _messages(desk.get(refused["Location"])) == [
        "No alert for “Dam bursts upstream”: it is not marked breaking; only breaking "
        "stories send alerts."
    ]
    assert "Send breaking alert" not in desk.get(change_url(story)).content.decode()
    assert not Edition.objects.exists()


def test_a_draft_sends_no_alert(desk, politics, enqueued):
    story = _story(politics)
    refused = desk.post(alert_url(story), {"post": "yes"})
    assert refused["Location"] == change_url(story)
    assert "not published" in _messages(desk.get(refused["Location"]))[0]
    assert not Edition.objects.exists()


def test_an_editor_without_send_permission_publishes_but_cannot_alert(
    writer_client, politics, enqueued
):
    story = _story(politics)
    response = _publish(writer_client, story)
    assert response["Location"] == CHANGELIST  # published, and no offer
    story.refresh_from_db()
    assert story.status == Story.Status.PUBLISHED
    assert _messages(writer_client.get(CHANGELIST)) == [
        "Published 1 story.",
        "Breaking alerts are sent by editors with the permission to send them (the Editors "
        "group): ask one to send the alert from the story's page.",
    ]

    assert writer_client.get(alert_url(story)).status_code == 403
    assert writer_client.post(alert_url(story), {"post": "yes"}).status_code == 403
    assert "Send breaking alert" not in writer_client.get(change_url(story)).content.decode()
    choices = writer_client.get(CHANGELIST).context["action_form"].fields["action"].choices
    assert "send_alert" not in {value for value, _ in choices}
    assert not Edition.objects.exists()


def test_the_alert_page_is_for_staff_only(client, politics):
    story = _published(politics)
    client.force_login(get_user_model().objects.create_user("reader", password="pw"))
    response = client.get(alert_url(story))
    assert response.status_code == 302 and response["Location"].startswith(
        reverse("admin:login"))


# --- Other ways to the offer ----------------------------------------------------------


def test_the_change_page_of_a_breaking_story_has_the_button_then_the_edition(
    desk, politics, enqueued
):
    story = _published(politics)
    html = desk.get(change_url(story)).content.decode()
    assert f'<a href="{alert_url(story)}" class="send-alert-link">Send breaking alert</a>' in html

    edition = dispatch.edition_create_alert(story=story, by=None)
    html = desk.get(change_url(story)).content.decode()
    assert "send-alert-link" not in html
    assert f'<a href="{edition_url(edition)}" class="alert-edition-link">' in html


def test_the_send_alert_action_leads_to_the_offer(desk, politics, enqueued):
    story = _published(politics)
    response = desk.post(CHANGELIST, {"action": "send_alert", ACTION_CHECKBOX_NAME: [story.pk]})
    assert response.status_code == 302 and response["Location"] == alert_url(story)
    assert not Edition.objects.exists()


def test_the_send_alert_action_explains_what_it_skips(desk, politics, enqueued):
    sent = _published(politics, "sent")
    edition = dispatch.edition_create_alert(story=sent, by=None)
    calm = _published(politics, "calm", breaking=False)
    draft = _story(politics, "draft")
    response = desk.post(CHANGELIST, {"action": "send_alert",
                                      ACTION_CHECKBOX_NAME: [sent.pk, calm.pk, draft.pk]})
    assert response["Location"] == CHANGELIST
    messages = _messages(desk.get(CHANGELIST))
    assert len(messages) == 3
    assert any(f"its alert was already sent (edition #{edition.pk})" in m for m in messages)
    assert any("not marked breaking" in m for m in messages)
    assert any("not published" in m for m in messages)
    assert Edition.objects.count() == 1
