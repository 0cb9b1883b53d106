"""Click tracking through signed redirect links, end to end: an alert is built as
the send path builds it, its links are followed with the test client (and once
in a real browser), and the counts, the refusals and the admin pages are checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core import signing
from django.urls import reverse
from django.utils import timezone

from newsroom.models import Story
from subscriptions.models import ClickCount, Edition
from subscriptions.sending import content, links
from subscriptions.sending.content import ViewKey, alert_content, alert_key, digest_content
from tests.subscriptions.factories import breaking_story, category

pytestmark = pytest.mark.django_db

SOURCE = "https://example.org/report?id=7&lang=en"
BODY = f"First paragraph, from [the report]({SOURCE}).\n\nSecond paragraph."
REDIRECT = re.compile(r'href="(http://testserver/r/[^"]+)"')


def alert_edition(story: Story) -> Edition:
    edition = Edition.objects.create(key=f"alert:story:{story.pk}", kind=Edition.Kind.ALERT,
                                     scheduled_at=timezone.now())
    edition.stories.add(story)
    return edition


@pytest.fixture
def story() -> Story:
    found = breaking_story(category("policy"), body=BODY)
    return Story.objects.select_related("category").get(pk=found.pk)


def counts(edition: Edition) -> dict[str, int]:
    return dict(ClickCount.objects.filter(edition=edition).values_list("url", "count"))


def follow(client, link: str):
    return client.get(link.removeprefix("http://testserver"))


def test_an_alerts_links_lead_through_the_redirect_and_count(client, story):
    edition = alert_edition(story)
    alert = alert_content(edition.pk, story)
    story_url = settings.SITE_URL + story.get_absolute_url()
    html_links = REDIRECT.findall(alert.html)
    # headline, the body's source link, the button: all through the redirect, the same
    # for every reader (no hole, nothing personal in them)
    assert len(html_links) == 3
    assert story_url not in alert.html and SOURCE.replace("&", "&amp;") not in alert.html
    assert f"Read the full story: {html_links[0]}" in alert.text
    targets = [links.Click.from_token(link.rsplit("/", 1)[1]) for link in html_links]
    assert [(t.edition_id, t.story_id, t.url) for t in targets] == [
        (edition.pk, story.pk, story_url), (edition.pk, story.pk, SOURCE),
        (edition.pk, story.pk, story_url)]

    response = follow(client, html_links[0])
    assert response.status_code == 302
    assert response["Location"] == story_url
    assert response["Referrer-Policy"] == "no-referrer"
    assert "no-store" in response["Cache-Control"]
    follow(client, html_links[2])
    source = follow(client, html_links[1])
    assert source.status_code == 302 and source["Location"] == SOURCE
    assert counts(edition) == {story_url: 2, SOURCE: 1}


def test_a_head_request_is_redirected_but_not_counted(client, story):
    edition = alert_edition(story)
    link = REDIRECT.findall(alert_content(edition.pk, story).html)[0]
    response = client.head(link.removeprefix("http://testserver"))
    assert response.status_code == 302
    assert counts(edition) == {}


def test_a_tampered_or_foreign_token_is_refused(client, story):
    edition = alert_edition(story)
    link = REDIRECT.findall(alert_content(edition.pk, story).html)[0]
    token = link.rsplit("/", 1)[1]
    evil = signing.Signer(salt="another").sign_object(
        [edition.pk, story.pk, "https://evil.example/"], compress=True)
    # another target under this link's signature
    swapped = (links.Click(edition.pk, story.pk, "https://evil.example/").token().rsplit(":", 1)[0]
               + ":" + token.rsplit(":", 1)[1])
    for bad in (token[:-2] + ("AA" if not token.endswith("AA") else "BB"), swapped,
                evil, ViewKey(edition.pk).token(), "nonsense"):
        response = client.get(reverse("subscriptions:click", args=[bad]))
        assert response.status_code == 400
        assert "Location" not in response
        assert b"This link is not valid" in response.content
    assert counts(edition) == {}


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,hi", "//evil.example/",
                                 "ftp://example.org/file", "https:///no-host"])
def test_a_signed_link_to_anything_but_a_web_page_is_refused(client, story, url):
    edition = alert_edition(story)
    token = links.Click(edition.pk, story.pk, url).token()  # as if we had made it
    response = client.get(reverse("subscriptions:click", args=[token]))
    assert response.status_code == 400
    assert counts(edition) == {}
    assert links.tracked(edition.pk, story.pk, url) == url  # and we never make one


def test_a_click_for_a_gone_edition_still_leads_on_uncounted(client, story):
    link = links.tracked(987_654, story.pk, SOURCE)
    response = follow(client, link)
    assert response.status_code == 302 and response["Location"] == SOURCE
    assert not ClickCount.objects.exists()


def test_tracking_off_leaves_the_links_alone_and_is_in_the_cache_key(settings, story):
    edition = alert_edition(story)
    tracked_key = alert_key(story)
    settings.NEWSROOM_CLICK_TRACKING = False
    alert = alert_content(edition.pk, story)
    assert "/r/" not in alert.html and "/r/" not in alert.text
    assert f'href="{settings.SITE_URL}{story.get_absolute_url()}"' in alert.html
    assert f'href="{SOURCE.replace("&", "&amp;")}"' in alert.html
    assert alert_key(story) != tracked_key  # a cached tracked content is not reused


def test_a_preview_links_straight_to_the_story(story):
    preview = content.alert_preview(story=story)
    assert "/r/" not in preview["html"] and "/r/" not in preview["digest_html"]


def test_digest_sections_link_through_their_own_edition(settings, story):
    content._cache.clear()
    stories = [story]
    first = digest_content(11, timezone.now() - timedelta(days=1), "daily", stories,
                           [story.category])
    second = digest_content(12, timezone.now() - timedelta(days=1), "daily", stories,
                            [story.category])
    targets = {links.Click.from_token(link.rsplit("/", 1)[1]).edition_id
               for html in (first.html, second.html) for link in REDIRECT.findall(html)}
    assert targets == {11, 12}  # a section rendered for one edition is not reused by another
    settings.NEWSROOM_CLICK_TRACKING = False
    plain = digest_content(11, timezone.now() - timedelta(days=1), "daily", stories,
                           [story.category])
    assert "/r/" not in plain.html and "/r/" not in plain.text


def test_the_edition_and_story_pages_show_the_clicks(admin_client, client, story):
    edition = alert_edition(story)
    for link in REDIRECT.findall(alert_content(edition.pk, story).html):
        follow(client, link)
    page = admin_client.get(reverse("admin:subscriptions_edition_change", args=[edition.pk]))
    text = page.content.decode()
    assert "Clicks" in text
    assert re.search(r"all links</td><td>3<", text)
    assert re.search(r"report\?id=7&amp;lang=en</td><td>1<", text)
    story_page = admin_client.get(reverse("admin:newsroom_story_change", args=[story.pk]))
    assert re.search(r'field-clicks.*?<div class="readonly">3</div>',
                     story_page.content.decode(), re.DOTALL)


# --- In a browser ---------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def browser(monkeypatch) -> Iterator:
    from playwright.sync_api import sync_playwright
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # see test_browser.py
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()
        from django.db import connections
        connections.close_all()


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing")
@pytest.mark.django_db(transaction=True)
def test_a_reader_clicks_through_an_alert_in_a_browser(live_server, settings, browser):
    settings.SITE_URL = live_server.url
    content._cache.clear()
    story = breaking_story(category("policy"), body=BODY)
    edition = alert_edition(story)
    page = browser.new_page()
    page.goto(ViewKey(edition.pk).url())  # the alert's "view in browser" page, as mailed
    with page.expect_navigation():
        page.get_by_role("link", name="Read the full story").click()
    assert page.url == live_server.url + story.get_absolute_url()
    assert page.get_by_role("heading", name=story.headline).is_visible()
    assert counts(edition) == {live_server.url + story.get_absolute_url(): 1}


def test_a_click_after_a_links_first_is_one_query(client, story, django_assert_num_queries):
    edition = alert_edition(story)
    link = REDIRECT.findall(alert_content(edition.pk, story).html)[0]
    follow(client, link)  # the first: UPDATE (no row), then its INSERT
    with django_assert_num_queries(1):  # UPDATE … count = count + 1; no session, no lookup
        assert follow(client, link).status_code == 302
    assert counts(edition) == {settings.SITE_URL + story.get_absolute_url(): 2}
