"""RSS and Atom feeds: live stories only, per category, absolute links on SITE_URL."""

from datetime import timedelta
from xml.etree import ElementTree  # our own server's output, not untrusted XML

import pytest
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from newsroom.feeds import FEED_ITEMS
from newsroom.models import Category
from tests.newsroom.test_views import make_story

pytestmark = pytest.mark.django_db

ATOM = "{http://www.w3.org/2005/Atom}"


@pytest.fixture
def world():
    return Category.objects.create(name="World", slug="world", order=1)


@pytest.fixture
def sport():
    return Category.objects.create(name="Sport", slug="sport", order=2)


@pytest.fixture
def stories(world, sport):
    return {
        "flood": make_story(world, "flood-warning", headline="Flood <warning> & more",
                            dek="Rivers are rising."),
        "final": make_story(sport, "cup-final", headline="Cup final tonight"),
        "draft": make_story(world, "secret-draft", status="draft"),
        "scheduled": make_story(world, "embargoed",
                                published_at=timezone.now() + timedelta(hours=1)),
    }


def rss_items(response):
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/rss+xml")
    channel = ElementTree.fromstring(response.content).find("channel")  # noqa: S314
    return channel, channel.findall("item")


def atom_entries(response):
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/atom+xml")
    feed = ElementTree.fromstring(response.content)  # noqa: S314
    return feed, feed.findall(f"{ATOM}entry")


@override_settings(SITE_URL="https://news.example", NEWSROOM_NAME="Daily")
def test_rss_lists_live_stories_with_absolute_links(client, stories):
    channel, items = rss_items(client.get(reverse("newsroom:feed")))
    assert channel.findtext("title") == "Daily"
    assert channel.findtext("link") == "https://news.example/"
    titles = [item.findtext("title") for item in items]
    assert sorted(titles) == ["Cup final tonight", "Flood <warning> & more"]  # escaped, read back
    flood = next(i for i in items if i.findtext("title").startswith("Flood"))
    assert flood.findtext("link") == "https://news.example/stories/flood-warning/"
    assert flood.findtext("guid") == "https://news.example/stories/flood-warning/"
    assert flood.findtext("description") == "Rivers are rising."
    assert flood.findtext("category") == "World"
    assert flood.findtext("pubDate")
    assert response_cache_control(client, "newsroom:feed") == "public, max-age=300"


def response_cache_control(client, name, *args):
    return client.get(reverse(name, args=args))["Cache-Control"]


@override_settings(SITE_URL="https://news.example")
def test_category_feed_holds_only_its_category(client, stories):
    _, items = rss_items(client.get(reverse("newsroom:category_feed", args=["sport"])))
    assert [i.findtext("title") for i in items] == ["Cup final tonight"]
    feed, entries = atom_entries(client.get(reverse("newsroom:category_feed_atom", args=["world"])))
    assert [e.findtext(f"{ATOM}title") for e in entries] == ["Flood <warning> & more"]
    self_link = [link.get("href") for link in feed.findall(f"{ATOM}link")
                 if link.get("rel") == "self"]
    assert self_link == ["https://news.example/categories/world/feed/atom/"]


def test_atom_feed_has_entries_with_ids_and_updated(client, stories):
    feed, entries = atom_entries(client.get(reverse("newsroom:feed_atom")))
    assert feed.findtext(f"{ATOM}subtitle")
    assert len(entries) == 2
    for entry in entries:
        assert entry.findtext(f"{ATOM}id").endswith("/")
        assert entry.findtext(f"{ATOM}updated")


def test_unknown_category_feed_is_404(client, stories):
    assert client.get(reverse("newsroom:category_feed", args=["nope"])).status_code == 404
    assert client.get(reverse("newsroom:category_feed_atom", args=["nope"])).status_code == 404


def test_feed_is_capped_and_newest_first(client, world):
    now = timezone.now()
    for n in range(FEED_ITEMS + 5):
        make_story(world, f"s-{n}", published_at=now - timedelta(minutes=n + 1))
    _, items = rss_items(client.get(reverse("newsroom:feed")))
    assert len(items) == FEED_ITEMS
    assert items[0].findtext("link").endswith("/stories/s-0/")


def test_feed_queries_do_not_grow_with_items(client, world, django_assert_max_num_queries):
    for n in range(10):
        make_story(world, f"s-{n}")
    with django_assert_max_num_queries(2):
        client.get(reverse("newsroom:feed"))


def test_pages_link_their_feeds(client, stories):
    index = client.get(reverse("newsroom:index")).content.decode()
    assert f'type="application/rss+xml" title="Newsroom" href="{reverse("newsroom:feed")}"' \
        in index
    assert 'rel="alternate" type="application/atom+xml"' in index
    category = client.get(reverse("newsroom:category", args=["world"])).content.decode()
    assert reverse("newsroom:category_feed", args=["world"]) in category
    assert reverse("newsroom:category_feed_atom", args=["world"]) in category
    assert reverse("newsroom:feed") in category  # all stories too
