"""An editor's whole path in a real browser (issue 10, "Done when").

A member of the *Editors* group logs into the real admin in Chromium, writes a
breaking story, publishes it with the admin action, confirms the alert on the
page that previews it, and watches the edition's live panel reach *Done* while
a real Celery worker sends it through the real SMTP listener. Each reader of
the story's category gets exactly one message; nobody else gets any. A
screenshot of each step is kept in var/test/artifacts/browser/.
"""

from __future__ import annotations

import email
import importlib
import re
from email import policy

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.urls import reverse
from playwright.sync_api import expect

from newsroom.models import Story
from subscriptions.models import Delivery, Edition
from tests.subscriptions.factories import category, subscriber
from tests.subscriptions.test_browser import (  # noqa: F401 (browser, shots: fixtures)
    CHROMIUM,
    browser,
    shots,
    snap,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason=f"{CHROMIUM} is missing (apt-get install chromium; CI installs it)"),
]

HEADLINE = "Flood barrier fails as river reaches record height"
READERS = ["ada@example.com", "ben@example.org", "chloe@example.net"]
PASSWORD = "a-long-Editor-password-7"


def editors_group() -> Group:
    """The Editors group as the migrations make it. A transactional test's flush
    removes what data migrations made, so their own functions make it again."""
    for module in ("newsroom.migrations.0002_editors_group",
                   "subscriptions.migrations.0007_newsroom_roles"):
        migration = importlib.import_module(module)
        create = getattr(migration, "create_editors_group", None) or migration.create_roles
        create(apps, None)  # get_or_create: harmless when the group is there
    return Group.objects.get(name="Editors")


@pytest.mark.django_db(transaction=True)
def test_an_editor_writes_publishes_and_alerts_and_watches_it_sent(
    live_server, celery_worker, smtp, browser, shots  # noqa: F811
):
    weather = category("weather", name="Weather")
    for address in READERS:
        subscriber(address, categories=[weather], wants_alerts=True)
    subscriber("no-alerts@example.com", categories=[weather], wants_alerts=False)
    subscriber("elsewhere@example.com", categories=[category("sport", name="Sport")])
    editor = get_user_model().objects.create_user("desk", password=PASSWORD, is_staff=True)
    editor.groups.add(editors_group())
    smtp.handler.delay = 1.0  # each message takes a second: the send is seen running

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    csp: list[str] = []
    page.on("console", lambda m: csp.append(m.text) if "Content Security Policy" in m.text
            else None)
    try:
        # 1. Log in through the login page (django-axes watches it).
        page.goto(live_server.url + reverse("admin:login"))
        page.get_by_label("Username").fill("desk")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("link", name="Stories")).to_be_visible()

        # 2. Write the story: headline (the slug follows it), category, Markdown, breaking.
        page.goto(live_server.url + reverse("admin:newsroom_story_add"))
        page.get_by_label("Headline").press_sequentially(HEADLINE)  # as typed: keyup fills the slug
        expect(page.get_by_label("Slug")).to_have_value(
            "flood-barrier-fails-as-river-reaches-record-height")
        page.get_by_label("Category").select_option(label="Weather")
        page.get_by_label("Body").fill(
            "The barrier at **Millbrook** gave way at 04:10.\n\n"
            "## What we know\n\n* Two districts are evacuated\n* Roads are closed\n")
        page.get_by_label("Breaking").check()
        snap(page, shots, "20-editor-story-written")
        page.get_by_role("button", name="Save", exact=True).click()
        expect(page.locator(".messagelist .success")).to_contain_text("was added successfully")
        story = Story.objects.get(headline=HEADLINE)
        assert (story.status, story.breaking, story.category_id, story.last_editor_id) == (
            Story.Status.DRAFT, True, weather.pk, editor.pk)

        # 3. Publish it with the admin action and its confirmation page.
        page.locator(f"input[name=_selected_action][value='{story.pk}']").check()
        page.get_by_label("Action:").select_option("publish")
        page.get_by_role("button", name="Go").click()
        expect(page.get_by_text("you will be taken to the page that sends their breaking "
                                "alert")).to_be_visible()
        snap(page, shots, "21-editor-publish-confirm")
        page.get_by_role("button", name=re.compile(r"^Yes, I.m sure$")).click()

        # 4. The alert's confirmation page previews what readers get.
        expect(page.get_by_role("heading", name="Send a breaking alert?")).to_be_visible()
        expect(page.locator(".alert-subject")).to_have_text(f"Breaking: {HEADLINE}")
        expect(page.locator(".alert-audience")).to_contain_text("3 subscribers")
        expect(page.frame_locator("iframe.alert-preview-html").get_by_role(
            "listitem").filter(has_text="Two districts are evacuated")).to_be_visible()
        snap(page, shots, "22-editor-alert-confirm")
        story.refresh_from_db()
        assert story.status == Story.Status.PUBLISHED and not Edition.objects.exists()

        # 5. Confirm: the edition's page, whose live panel follows the send to Done.
        # Scrolled to first: clicked straight away, Playwright's click landed in the
        # preview frame above (its masthead link, blocked by the CSP) and posted nothing.
        send = page.get_by_role("button", name="Send breaking alert")
        send.scroll_into_view_if_needed()
        send.click()
        page.wait_for_url("**/admin/subscriptions/edition/*/change/")
        expect(page.locator(".messagelist .success")).to_contain_text("planned")
        panel = page.locator("#edition-live")
        edition = Edition.objects.get()
        assert page.url.endswith(reverse("admin:subscriptions_edition_change",
                                         args=[edition.pk]))
        expect(panel.get_by_role("heading")).not_to_have_text("Done")  # still running
        snap(page, shots, "23-editor-edition-running")
        expect(panel.get_by_role("heading")).to_have_text("Done", timeout=60_000)
        expect(panel).to_contain_text("3 of 3 handled (3 sent, 0 failed, 0 skipped)")
        snap(page, shots, "24-editor-edition-done")
    finally:
        smtp.handler.delay = 0.0

    assert smtp.handler.counts() == {address: 1 for address in READERS}
    for address in READERS:
        [received] = smtp.handler.to(address)
        message = email.message_from_bytes(received.data, policy=policy.default)
        assert HEADLINE in message["Subject"] and address in message["To"]
    assert set(Delivery.objects.values_list("status", flat=True)) == {Delivery.Status.SENT}
    edition.refresh_from_db()
    assert (edition.status, edition.sent, edition.created_by_id) == ("done", 3, editor.pk)
    assert failed == [] and csp == []  # no missing file, nothing the CSP blocked
