"""Sign-up rate limits: a fixed-window counter in the real (Redis) cache.

Over a limit nothing is saved or sent, and the answer is the same whether the
address is known or not.
"""

from __future__ import annotations

import re
import threading

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from newsroom.models import Category
from subscriptions import ratelimit
from subscriptions.models import ConsentRecord, Subscriber


@pytest.fixture
def world(db) -> Category:
    return Category.objects.create(name="World", slug="world", order=1)


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple[int, str]]:
    from subscriptions import tasks

    sent: list[tuple[int, str]] = []
    monkeypatch.setattr(tasks.subscriber_email_send, "delay_on_commit",
                        lambda subscriber_id, kind: sent.append((subscriber_id, kind)))
    return sent


def signup(world: Category, email: str, *, ip: str = "198.51.100.1", **overrides):
    data = {"email": email, "categories": [world.pk], "frequency": "daily", "digest_hour": "7",
            "timezone": "UTC", "wants_alerts": "yes", **overrides}
    return Client(REMOTE_ADDR=ip).post(reverse("subscriptions:signup"), data)


def without_csrf(html: str) -> str:
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", html)


# --- The counter ------------------------------------------------------------------


def test_hit_allows_up_to_the_limit_per_identity():
    results = [ratelimit.hit("test", "a", limit=3) for _ in range(5)]

    assert results == [True, True, True, False, False]
    assert ratelimit.hit("test", "b", limit=3)  # another identity has its own count
    assert ratelimit.hit("other-scope", "a", limit=3)  # and another scope


def test_the_window_has_a_ttl_and_a_new_one_opens_after_it():
    ratelimit.hit("test", "ann@example.com", limit=1, window=120)
    assert not ratelimit.hit("test", "ann@example.com", limit=1, window=120)

    client = cache._cache.get_client(write=True)
    [key] = list(client.scan_iter(match="*ratelimit:test:*"))
    assert 0 < client.ttl(key) <= 120  # incr keeps the TTL that add set
    assert b"ann" not in key  # identities are hashed: no addresses in the cache

    client.delete(key)  # what the TTL does after the window
    assert ratelimit.hit("test", "ann@example.com", limit=1, window=120)


def test_concurrent_hits_are_counted_exactly():
    """cache.add + INCR are atomic in Redis: 40 racing requests, exactly 10 let through."""
    allowed: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(40)

    def attempt() -> None:
        start.wait()
        result = ratelimit.hit("test", "burst", limit=10)
        with lock:
            allowed.append(result)

    threads = [threading.Thread(target=attempt) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert allowed.count(True) == 10
    assert len(allowed) == 40


@pytest.mark.parametrize(("address", "identity"), [
    ("203.0.113.9", "203.0.113.9"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("::ffff:203.0.113.9", "203.0.113.9"),
    ("", "unknown"),
    (None, "unknown"),
    ("not-an-ip", "unknown"),
])
def test_clients_are_counted_by_address_or_ipv6_64(address, identity):
    assert ratelimit.client_identity(address) == identity


# --- The sign-up page -----------------------------------------------------------


def test_too_many_signups_from_one_client_get_a_429_and_nothing_happens(
    settings, world, enqueued
):
    settings.NEWSROOM_SIGNUP_LIMIT_PER_IP = 3
    for n in range(3):
        assert signup(world, f"reader{n}@example.com").status_code == 302

    response = signup(world, "one-more@example.com")

    assert response.status_code == 429
    assert response["Retry-After"] == "3600"
    assert "Too many sign-up attempts" in response.content.decode()
    assert "try again in an hour" in response.content.decode()
    assert not Subscriber.objects.filter(email="one-more@example.com").exists()
    assert Subscriber.objects.count() == ConsentRecord.objects.count() == len(enqueued) == 3
    # Another client is not affected.
    assert signup(world, "one-more@example.com", ip="198.51.100.2").status_code == 302


def test_invalid_attempts_count_against_the_client_too(settings, world, enqueued):
    settings.NEWSROOM_SIGNUP_LIMIT_PER_IP = 2
    for _ in range(2):
        assert signup(world, "not-an-address").status_code == 200

    assert signup(world, "valid@example.com").status_code == 429
    assert not Subscriber.objects.exists()


def test_one_ipv6_client_cannot_rotate_addresses_within_its_64(settings, world, enqueued):
    settings.NEWSROOM_SIGNUP_LIMIT_PER_IP = 2
    signup(world, "a@example.com", ip="2001:db8:1:2::1")
    signup(world, "b@example.com", ip="2001:db8:1:2::2")

    assert signup(world, "c@example.com", ip="2001:db8:1:2::3").status_code == 429
    assert signup(world, "c@example.com", ip="2001:db8:1:3::1").status_code == 302


def test_one_address_is_limited_whatever_the_client_and_spelling(settings, world, enqueued):
    settings.NEWSROOM_SIGNUP_LIMIT_PER_EMAIL = 2
    signup(world, "ann@example.com", ip="198.51.100.1")
    signup(world, " ANN@example.com", ip="198.51.100.2")
    consents = ConsentRecord.objects.count()

    response = signup(world, "Ann@Example.com", ip="198.51.100.3")

    assert response.status_code == 429
    assert ConsentRecord.objects.count() == consents
    assert len(enqueued) == 2
    assert signup(world, "bob@example.com", ip="198.51.100.3").status_code == 302


def test_the_address_limit_reveals_nothing_about_known_addresses(settings, world, enqueued):
    """Known and unknown addresses hit the limit at the same count, with the same page."""
    settings.NEWSROOM_SIGNUP_LIMIT_PER_EMAIL = 2
    Subscriber.objects.create(email="known@example.com", status=Subscriber.Status.ACTIVE)
    answers = {}
    for address in ("known@example.com", "unknown@example.com"):
        responses = [signup(world, address, ip=f"198.51.100.{n}") for n in range(1, 5)]
        answers[address] = [
            (r.status_code, r.get("Location"), r.get("Retry-After"),
             without_csrf(r.content.decode()))
            for r in responses
        ]

    assert answers["known@example.com"] == answers["unknown@example.com"]
    assert [status for status, *_ in answers["known@example.com"]] == [302, 302, 429, 429]
    assert len(enqueued) == 4  # two each, none over the limit


def test_another_cache_backend_counts_through_the_cache_api(settings):
    """Off Redis (one MULTI/EXEC round trip there), the cache's own add and incr count."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

    assert [ratelimit.hit("test", "a", limit=2) for _ in range(3)] == [True, True, False]
