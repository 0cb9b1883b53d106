"""The public site's frame (issue 12, "The public site"): error pages, favicon,
date-only stories, the footer's column, the sign-up prompt, the admin's story page.

The browser checks (overflow at 1280 px, the 404 page as drawn, the time zone
from the browser) are in tests/subscriptions/test_browser.py.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

import pytest
from django.contrib.auth.models import User
from django.test import Client, RequestFactory
from django.urls import path

from newsroom import views
from newsroom.models import Category, Story
from newsroom.urls import urlpatterns as site_urlpatterns

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> Category:
    return Category.objects.create(name="World", slug="world", order=1)


def story_at(category: Category, moment: dt.datetime, slug: str = "a-story") -> Story:
    return Story.objects.create(category=category, slug=slug, headline="A story", body="Body.",
                                status=Story.Status.PUBLISHED, published_at=moment)


def _boom(request):
    raise RuntimeError("boom")


# This module doubles as a URLconf: the site's URLs, a view that fails, and the
# site's 500 handler (a test URLconf does not inherit newsroom.urls' handlers).
urlpatterns = [*site_urlpatterns, path("boom/", _boom)]
handler500 = "newsroom.views.server_error"


# --- Error pages ---------------------------------------------------------------------


def test_404_page_is_the_sites(client, world):
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "<title>Page not found \N{EN DASH} Newsroom</title>" in page
    assert '<h1>Page not found</h1>' in page
    assert 'href="/static/newsroom/site.css"' in page
    assert 'href="/categories/world/"' in page  # the site's navigation
    assert '<meta name="robots" content="noindex">' in page


def test_500_page_is_the_sites_without_database_or_context_processors(
    settings, world, monkeypatch, django_assert_num_queries
):
    settings.ROOT_URLCONF = __name__

    def broken(request):
        raise AssertionError("context processors must not run for the 500 page")

    monkeypatch.setattr("newsroom.context_processors.site", broken)
    client = Client(raise_request_exception=False)
    with django_assert_num_queries(0):
        response = client.get("/boom/")
    assert response.status_code == 500
    page = response.content.decode()
    assert "<title>Something went wrong \N{EN DASH} Newsroom</title>" in page
    assert 'href="/static/newsroom/site.css"' in page
    assert 'href="/static/newsroom/favicon.svg"' in page
    assert "/categories/world/" not in page  # no navigation: it needs the database
    assert "boom" not in page


def test_500_page_falls_back_to_plain_text(monkeypatch):
    def missing(name):
        raise OSError("templates are gone")

    monkeypatch.setattr(views.loader, "get_template", missing)
    response = views.server_error(RequestFactory().get("/"))
    assert response.status_code == 500
    assert response.content == b"<h1>Server Error (500)</h1>"


def test_newsroom_urls_name_the_500_handler():
    from newsroom import urls

    assert urls.handler500 == "newsroom.views.server_error"


# --- Favicon ----------------------------------------------------------------------------


def test_favicon_is_linked_and_answered_at_favicon_ico(client):
    page = client.get("/").content.decode()
    assert '<link rel="icon" href="/static/newsroom/favicon.svg" type="image/svg+xml">' in page
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    assert "max-age=86400" in response["Cache-Control"]
    assert response.content == views.FAVICON.read_bytes()
    assert response.content.startswith(b"<svg ")


# --- Dates --------------------------------------------------------------------------


def test_a_date_only_story_shows_its_date_alone(client, world, settings):
    settings.TIME_ZONE = "Europe/Paris"
    midnight = dt.datetime(2026, 5, 8, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    page = client.get(story_at(world, midnight).get_absolute_url()).content.decode()
    assert '<p class="meta"><time datetime="2026-05-08">8 May 2026</time></p>' in page
    assert "00:00" not in page


def test_a_story_with_a_time_shows_it(client, world):
    moment = dt.datetime(2026, 5, 8, 9, 30, 12, tzinfo=dt.UTC)
    page = client.get(story_at(world, moment).get_absolute_url()).content.decode()
    assert ('<time datetime="2026-05-08T09:30:12+00:00">8 May 2026, 09:30 UTC</time>'
            in page)


# --- Layout --------------------------------------------------------------------------


def test_footer_type_size_does_not_narrow_its_column():
    """`ch` follows the font size: a smaller footer on .wrap made its column narrower,
    so the footer sat to the right of the content. The size goes on the children."""
    text = (views.FAVICON.parent / "site.css").read_text()
    footer = re.search(r"\.site-footer \{(.*?)\}", text, re.S).group(1)
    assert "font-size" not in footer
    assert ".site-footer .wrap > * { font-size: 0.9rem; }" in text


def test_story_page_invites_to_subscribe_to_its_category(client, world):
    moment = dt.datetime(2026, 5, 8, 9, 30, tzinfo=dt.UTC)
    page = client.get(story_at(world, moment).get_absolute_url()).content.decode()
    assert '<aside class="signup-prompt" aria-labelledby="signup-prompt-heading">' in page
    assert ('<a class="signup-prompt-link" href="/subscribe/?category=world">'
            "Subscribe to World</a>") in page


# --- Admin -------------------------------------------------------------------------------


def test_admin_story_page_loads_its_stylesheet_and_preview(client, world):
    admin = User.objects.create_superuser("editor", "editor@example.com", "pw")
    client.force_login(admin)
    story = story_at(world, dt.datetime(2026, 5, 8, tzinfo=dt.UTC))
    page = client.get(f"/admin/newsroom/story/{story.pk}/change/").content.decode()
    assert 'href="/static/newsroom/admin-story.css"' in page
    assert '<div class="story-preview"><h1>A story</h1><p>Body.</p></div>' in page
