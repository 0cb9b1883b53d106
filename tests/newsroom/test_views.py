"""Public pages: only live stories, paginated, in a constant number of queries."""

from datetime import timedelta

import pytest
from django.http import HttpResponse
from django.urls import include, path, reverse
from django.utils import timezone

from newsroom.models import Category, Source, Story
from newsroom.urls import urlpatterns as site_urlpatterns
from newsroom.views import STORIES_PER_PAGE

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    return Category.objects.create(
        name="World", slug="world", description="News from everywhere.", order=1
    )


@pytest.fixture
def sport():
    return Category.objects.create(name="Sport", slug="sport", order=2)


def make_story(category, slug, *, status=Story.Status.PUBLISHED, published_at=None, **fields):
    if published_at is None and status == Story.Status.PUBLISHED:
        published_at = timezone.now() - timedelta(minutes=5)
    fields.setdefault("headline", slug.replace("-", " ").title())
    fields.setdefault("body", "Body of the story.")
    return Story.objects.create(
        category=category, slug=slug, status=status, published_at=published_at, **fields
    )


@pytest.fixture
def live(world):
    story = make_story(
        world, "flood-warning", headline="Flood warning issued",
        dek="Rivers are rising.", body="## What we know\n\nWater is **high**.",
    )
    Source.objects.create(story=story, name="Met Office", url="https://metoffice.example/a",
                          domain="metoffice.example", order=1)
    Source.objects.create(story=story, name="Agency", url="https://agency.example/b", order=0)
    return story


@pytest.fixture
def draft(world):
    return make_story(world, "secret-draft", status=Story.Status.DRAFT)


@pytest.fixture
def scheduled(world):
    return make_story(world, "embargoed", published_at=timezone.now() + timedelta(hours=1))


def test_index_lists_live_stories_only(client, live, draft, scheduled):
    response = client.get(reverse("newsroom:index"))
    assert response.status_code == 200
    content = response.content.decode()
    assert "Flood warning issued" in content
    assert live.get_absolute_url() in content
    assert "Rivers are rising." in content
    assert "secret-draft" not in content
    assert "embargoed" not in content


def test_index_orders_newest_first(client, world):
    make_story(world, "older", published_at=timezone.now() - timedelta(days=2))
    make_story(world, "newer", published_at=timezone.now() - timedelta(days=1))
    content = client.get(reverse("newsroom:index")).content.decode()
    assert content.index("/stories/newer/") < content.index("/stories/older/")


def test_index_when_empty(client):
    response = client.get(reverse("newsroom:index"))
    assert response.status_code == 200
    assert "No stories yet." in response.content.decode()


def test_layout_is_accessible_and_lists_categories(client, world, sport):
    content = client.get(reverse("newsroom:index")).content.decode()
    assert '<html lang="en-us">' in content
    assert '<a class="skip-link" href="#main">' in content
    assert '<main id="main"' in content
    for landmark in ("<header", "<nav", "<footer"):
        assert landmark in content
    assert content.index(">World<") < content.index(">Sport<")  # editorial order
    assert "newsroom/site.css" in content
    assert "<script" not in content
    assert 'href="/subscribe/"' in content


def test_nav_marks_the_current_category(client, world, sport):
    content = client.get(world.get_absolute_url()).content.decode()
    assert '<a href="/categories/world/" aria-current="page">World</a>' in content
    assert '<a href="/categories/sport/">Sport</a>' in content


def test_story_page(client, live):
    response = client.get(live.get_absolute_url())
    assert response.status_code == 200
    content = response.content.decode()
    assert "<h1>Flood warning issued</h1>" in content
    assert '<p class="dek">Rivers are rising.</p>' in content
    assert '<a href="/categories/world/">World</a>' in content
    assert f'<time datetime="{live.published_at.isoformat()}">' in content
    assert "<h2>What we know</h2>" in content
    assert "<strong>high</strong>" in content
    assert (
        '<a href="https://agency.example/b" rel="noopener noreferrer nofollow">Agency</a>'
        in content
    )
    assert content.index("Agency") < content.index("Met Office")  # source order
    assert "(metoffice.example)" in content


def test_story_page_escapes_headline_and_sanitises_body(client, world):
    story = make_story(
        world, "hostile", headline="<b>Bold</b> claim", body="<script>alert(1)</script>Hi"
    )
    content = client.get(story.get_absolute_url()).content.decode()
    assert "&lt;b&gt;Bold&lt;/b&gt; claim" in content
    assert "<script" not in content


def test_story_page_does_not_link_unsafe_source_urls(client, live):
    Source.objects.create(story=live, name="Trap", url="javascript:alert(1)", order=9)
    content = client.get(live.get_absolute_url()).content.decode()
    assert "Trap" in content
    assert "javascript:" not in content


@pytest.mark.parametrize("fixture", ["draft", "scheduled"])
def test_unpublished_stories_are_404(client, request, fixture):
    story = request.getfixturevalue(fixture)
    assert client.get(story.get_absolute_url()).status_code == 404


def test_unknown_story_is_404(client):
    assert client.get(reverse("newsroom:story", args=["nope"])).status_code == 404


def test_category_page(client, world, sport, live, draft, scheduled):
    make_story(sport, "match-report", headline="Match report")
    response = client.get(world.get_absolute_url())
    assert response.status_code == 200
    content = response.content.decode()
    assert "<h1>World</h1>" in content
    assert "News from everywhere." in content
    assert "Flood warning issued" in content
    assert "Match report" not in content
    assert "secret-draft" not in content
    assert "embargoed" not in content


def test_unknown_category_is_404(client):
    assert client.get(reverse("newsroom:category", args=["nope"])).status_code == 404


def test_pagination(client, world):
    now = timezone.now()
    for number in range(STORIES_PER_PAGE + 5):
        make_story(world, f"story-{number:02d}", published_at=now - timedelta(minutes=number + 1))
    first = client.get(reverse("newsroom:index")).content.decode()
    assert first.count('class="teaser"') == STORIES_PER_PAGE
    assert "/stories/story-00/" in first
    assert "/stories/story-24/" not in first
    assert '<a href="?page=2" rel="next">' in first
    assert "Page 1 of 2" in first

    second = client.get(reverse("newsroom:index"), {"page": 2}).content.decode()
    assert second.count('class="teaser"') == 5
    assert "/stories/story-24/" in second
    assert '<a href="?page=1" rel="prev">' in second

    category_second = client.get(world.get_absolute_url(), {"page": 2})
    assert category_second.status_code == 200
    assert category_second.content.decode().count('class="teaser"') == 5


@pytest.mark.parametrize("page", ["3", "0", "abc", "-1"])
def test_pages_that_do_not_exist_are_404(client, world, page):
    make_story(world, "only-one")
    assert client.get(reverse("newsroom:index"), {"page": page}).status_code == 404


def test_only_safe_methods(client):
    assert client.post(reverse("newsroom:index")).status_code == 405


@pytest.mark.parametrize("count", [1, 30])
def test_index_query_count_is_constant(client, world, sport, count, django_assert_max_num_queries):
    for number in range(count):
        category = world if number % 2 else sport
        make_story(category, f"s-{number}")
    # count, one page of stories with their categories, the navigation
    with django_assert_max_num_queries(3):
        assert client.get(reverse("newsroom:index")).status_code == 200


@pytest.mark.parametrize("sources", [0, 10])
def test_story_query_count_is_constant(client, live, sources, django_assert_max_num_queries):
    for number in range(sources):
        Source.objects.create(story=live, name=f"S{number}", url=f"https://s{number}.example/")
    # the story with its category, its sources, the navigation
    with django_assert_max_num_queries(3):
        assert client.get(live.get_absolute_url()).status_code == 200


def test_category_query_count_is_constant(client, world, django_assert_max_num_queries):
    for number in range(25):
        make_story(world, f"c-{number}")
    # the category, count, one page of stories, the navigation
    with django_assert_max_num_queries(4):
        assert client.get(world.get_absolute_url()).status_code == 200



def _signup(request):
    return HttpResponse("sign up")


# This module doubles as a URLconf: the site's URLs plus a stand-in for the
# subscriptions app's sign-up page, which base.html links to once it exists.
urlpatterns = [
    *site_urlpatterns,
    path("", include(([path("subscribe/", _signup, name="signup")], "subscriptions"))),
]


def test_nav_links_to_signup_when_it_exists(client, settings):
    settings.ROOT_URLCONF = __name__
    content = client.get("/").content.decode()
    assert '<li class="site-nav-subscribe"><a href="/subscribe/">Subscribe</a></li>' in content
