"""Pages kept per process (`subscriptions.page_cache`): the sign-up and unsubscribe
pages, byte for byte what rendering them gives, never stale, CSRF intact."""

from __future__ import annotations

import re

import pytest
from django.shortcuts import render
from django.test import Client, RequestFactory
from django.urls import resolve, reverse

from newsroom.models import Category
from subscriptions import page_cache
from subscriptions.forms import SignupForm
from subscriptions.models import Subscriber
from subscriptions.tokens import Purpose, token_make
from subscriptions.views import _signup_context

pytestmark = pytest.mark.django_db

CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]*)"')


@pytest.fixture(autouse=True)
def _fresh():
    page_cache.page_cache_clear()
    yield
    page_cache.page_cache_clear()


@pytest.fixture
def topics() -> dict[str, Category]:
    world = Category.objects.create(name="World", slug="world", order=1,
                                    description="News <b>from</b> everywhere & more.")
    sport = Category.objects.create(name="Sport", slug="sport", order=2)
    return {"world": world, "sport": sport}


def rendered(path: str, template: str, context: dict, **cookies: str) -> str:
    """What `render` gives for this page, without any kept page."""
    request = RequestFactory().get(path)
    request.COOKIES.update(cookies)
    request.resolver_match = resolve(request.path)
    return render(request, template, context).content.decode()


def without_csrf(html: str) -> str:
    return CSRF_INPUT.sub('name="csrfmiddlewaretoken" value=""', html)


@pytest.mark.parametrize(("query", "cookie", "initial", "from_browser"), [
    ("", None, {"timezone": "UTC"}, True),
    ("?tz=Europe/Berlin", None, {"timezone": "Europe/Berlin"}, False),
    ("", "Asia/Calcutta", {"timezone": "Asia/Kolkata"}, False),
    ("?tz=UTC", None, {"timezone": "UTC"}, False),
    ("?category=world&category=nope", None, {"timezone": "UTC", "categories": ["world"]}, True),
])
def test_the_signup_page_is_what_rendering_it_gives(topics, query, cookie, initial,
                                                    from_browser):
    client = Client()
    if cookie:
        client.cookies["tz"] = cookie
    if "categories" in initial:
        initial["categories"] = [topics[slug] for slug in initial["categories"]]
    expected = rendered("/subscribe/" + query, "subscriptions/pages/signup.html",
                        _signup_context(SignupForm(initial=initial),
                                        timezone_from_browser=from_browser))
    for _ in range(2):  # rendered, then kept
        response = client.get("/subscribe/" + query)
        assert response.status_code == 200
        assert without_csrf(response.content.decode()) == without_csrf(expected)


def test_a_kept_page_renders_no_template_and_gets_a_new_csrf_token_each_time(topics):
    client = Client(enforce_csrf_checks=True)
    first = client.get("/subscribe/")
    second = Client(enforce_csrf_checks=True).get("/subscribe/")
    third = client.get("/subscribe/")

    assert first.templates and not second.templates and not third.templates
    tokens = [CSRF_INPUT.search(r.content.decode())[1] for r in (first, second, third)]
    assert len(set(tokens)) == 3  # masked anew per request (BREACH), as Django does
    assert all(len(t) == 64 for t in tokens)
    assert second.cookies["csrftoken"].value  # the cookie is set as rendering would
    assert "Cookie" in second["Vary"]
    # The token of a kept page is accepted, and a missing one still refused.
    data = {"email": "ann@example.com", "categories": [topics["world"].pk], "frequency": "daily",
            "digest_hour": "7", "timezone": "UTC", "wants_alerts": "yes"}
    assert client.post("/subscribe/", data).status_code == 403
    assert client.post("/subscribe/", {**data, "csrfmiddlewaretoken": tokens[2]}).status_code == 302


@pytest.mark.parametrize("change", ["rename", "describe", "reorder", "add", "delete"])
def test_a_category_change_shows_at_once(topics, change):
    client = Client()
    assert "World" in client.get("/subscribe/").content.decode()
    world = topics["world"]
    if change == "rename":
        Category.objects.filter(pk=world.pk).update(name="Planet")  # no signal: still seen
        seen = "Planet"
    elif change == "describe":
        world.description = "Fresh words."
        world.save()
        seen = "Fresh words."
    elif change == "reorder":
        Category.objects.filter(pk=world.pk).update(order=9)
        seen = re.compile(r"Sport.*World", re.S)
    elif change == "add":
        Category.objects.create(name="Culture", slug="culture", order=3)
        seen = "Culture"
    else:
        topics["sport"].delete()
        seen = None
    page = client.get("/subscribe/").content.decode()
    if seen is None:
        assert "Sport" not in page
    elif isinstance(seen, str):
        assert seen in page
    else:
        assert seen.search(page)


def test_a_setting_change_is_seen(topics, settings):
    Client().get("/subscribe/")
    settings.NEWSROOM_NAME = "The Daily Test"
    assert "Subscribe to The Daily Test" in Client().get("/subscribe/").content.decode()


@pytest.mark.parametrize("state", ["ask", "done"])
def test_the_unsubscribe_page_is_what_rendering_it_gives(topics, state):
    subscriber = Subscriber.objects.create(email="ann@example.com",
                                           status=Subscriber.Status.ACTIVE)
    token = token_make(subscriber_id=subscriber.pk, email=subscriber.email,
                       purpose=Purpose.UNSUBSCRIBE)
    path = reverse("subscriptions:unsubscribe", args=[token])
    client = Client()
    if state == "done":
        assert client.post(path).status_code == 200
    expected = rendered(path, "subscriptions/pages/unsubscribe.html",
                        {"token": token, "unsubscribed": state == "done"})
    for _ in range(2):
        response = client.get(path)
        assert response.content.decode() == expected
        assert token in response.content.decode()
        assert "csrfmiddlewaretoken" not in response.content.decode()
        assert not response.cookies


def test_another_readers_token_is_spliced_into_the_kept_page(topics):
    paths = []
    for n in range(3):
        subscriber = Subscriber.objects.create(email=f"r{n}@example.com",
                                               status=Subscriber.Status.ACTIVE)
        token = token_make(subscriber_id=subscriber.pk, email=subscriber.email,
                           purpose=Purpose.UNSUBSCRIBE)
        response = Client().get(reverse("subscriptions:unsubscribe", args=[token]))
        page = response.content.decode()
        assert f'action="/unsubscribe/{token}/"' in page
        assert f'action="/unsubscribe/{token}/preferences-link/"' in page
        paths.append(page)
        assert not response.templates or n == 0
    assert len(set(paths)) == 3


def test_a_value_that_would_be_escaped_is_rendered_not_spliced(rf, topics):
    request = rf.get("/")
    request.resolver_match = resolve("/subscribe/")
    value = 'a"<b>&c'
    response = page_cache.page_render(
        request, "subscriptions/pages/unsubscribe.html", lambda: {"unsubscribed": True},
        splice={"token": value})
    assert response.status_code == 200
    assert value not in response.content.decode()
    assert "You're unsubscribed" in response.content.decode()
    assert not page_cache._pages


def test_the_kept_pages_are_bounded(topics, rf, monkeypatch):
    monkeypatch.setattr(page_cache, "MAX_PAGES", 3)
    for zone in ["Europe/Berlin", "Europe/Paris", "Asia/Tokyo", "America/Lima", "UTC"]:
        assert Client().get(f"/subscribe/?tz={zone}").status_code == 200
    assert len(page_cache._pages) == 3
