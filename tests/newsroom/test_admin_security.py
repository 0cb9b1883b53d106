"""The admin resists guessing and misuse: login lock-out (django-axes), idle
sessions end, and no regex lookups from a query string."""

import time
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from newsroom.middleware import RENEW_EVERY, RENEWED
from subscriptions.ratelimit import login_client_address
from tests.subscriptions.factories import subscriber

pytestmark = pytest.mark.django_db

LOGIN = reverse("admin:login")
INDEX = reverse("admin:index")
SUBSCRIBERS = reverse("admin:subscriptions_subscriber_changelist")
PASSWORD = "correct horse battery staple"


@pytest.fixture
def staff():
    return get_user_model().objects.create_user("desk", password=PASSWORD, is_staff=True,
                                                is_superuser=True)


def login(client, password, *, username="desk", **extra):
    return client.post(LOGIN, {"username": username, "password": password, "next": INDEX},
                       **extra)


def logged_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == INDEX


# --- Lock-out ---------------------------------------------------------------------------

def test_wrong_passwords_lock_the_account_for_that_client_even_with_the_right_one(
    client, staff, settings
):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, "guess").status_code == 200  # the form again, with its error
    assert login(client, "guess").status_code == 429  # the last allowed failure locks
    locked = login(client, PASSWORD)
    assert locked.status_code == 429
    assert b"too many" in locked.content.lower() or b"locked" in locked.content.lower()

    # Another client may still log in as that user: the lock is per (user, client).
    other = Client(REMOTE_ADDR="198.51.100.7")
    assert logged_in(login(other, PASSWORD))


def test_the_lock_lifts_after_the_cool_off(client, staff, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(client, "guess")
    assert login(client, PASSWORD).status_code == 429
    AccessAttempt.objects.update(  # what the clock would do
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))
    assert logged_in(login(client, PASSWORD))


def test_the_reset_command_unlocks_at_once(client, staff, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(client, "guess")
    assert login(client, PASSWORD).status_code == 429
    call_command("axes_reset_username", "desk", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert logged_in(login(client, PASSWORD))


def test_a_success_resets_the_count(client, staff, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        login(client, "guess")
    assert logged_in(login(client, PASSWORD))
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, "guess").status_code == 200


def test_behind_proxies_the_lock_follows_the_forwarded_client(staff, settings):
    """All requests come from the proxy; the client is the entry it appended."""
    settings.NEWSROOM_TRUSTED_PROXY_HOPS = 1
    attacker = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    editor = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "198.51.100.20"}
    # A spoofed left-most entry does not give the attacker a fresh address.
    spoofed = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "1.2.3.4, 203.0.113.9"}
    client = Client()
    for number in range(settings.AXES_FAILURE_LIMIT):
        login(client, "guess", **(spoofed if number % 2 else attacker))
    assert login(client, PASSWORD, **attacker).status_code == 429
    assert login(client, PASSWORD, **spoofed).status_code == 429
    assert logged_in(login(Client(), PASSWORD, **editor))
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.9"}


def test_an_ipv6_client_is_its_64(rf, settings):
    settings.NEWSROOM_TRUSTED_PROXY_HOPS = 0
    one = rf.get("/", REMOTE_ADDR="2001:db8:1:2::1")
    other = rf.get("/", REMOTE_ADDR="2001:db8:1:2:ffff::9")
    assert login_client_address(one) == login_client_address(other) == "2001:db8:1:2::"
    assert login_client_address(rf.get("/", REMOTE_ADDR="")) is None


# --- Idle sessions ----------------------------------------------------------------------

def _expiry(client) -> timezone.datetime:
    return Session.objects.get(session_key=client.session.session_key).expire_date


def test_an_admin_session_expires_after_the_idle_time(client, staff, settings):
    assert settings.SESSION_COOKIE_AGE == settings.NEWSROOM_ADMIN_IDLE_MINUTES * 60 == 30 * 60
    assert logged_in(login(client, PASSWORD))
    assert client.get(INDEX).status_code == 200
    expiry = _expiry(client)
    assert timedelta(minutes=29) < expiry - timezone.now() <= timedelta(minutes=30)

    Session.objects.update(expire_date=timezone.now() - timedelta(seconds=1))  # 30 idle minutes
    response = client.get(INDEX)
    assert response.status_code == 302 and response["Location"].startswith(LOGIN)


def test_use_pushes_the_idle_deadline_back_at_most_once_a_minute(client, staff):
    assert logged_in(login(client, PASSWORD))
    Session.objects.update(expire_date=timezone.now() + timedelta(minutes=1))  # 29 min idle
    assert client.get(INDEX).status_code == 200
    assert _expiry(client) - timezone.now() < timedelta(minutes=1)  # renewed < 1 min ago

    session = client.session
    session[RENEWED] = int(time.time()) - RENEW_EVERY  # the last renewal a minute ago
    session.save()
    Session.objects.update(expire_date=timezone.now() + timedelta(minutes=1))
    assert client.get(INDEX).status_code == 200
    assert _expiry(client) - timezone.now() > timedelta(minutes=29)


def test_public_pages_create_no_sessions(client):
    client.get(reverse("subscriptions:signup"))
    assert not Session.objects.exists()


# --- Regex lookups ----------------------------------------------------------------------

@pytest.mark.parametrize("query", [
    "email__regex=(b%2B)%2BZ", "email__iregex=(b%2B)%2BZ", "categories__name__REGEX=x",
    "_changelist_filters=email__regex%3D(b%252B)%252BZ",
])
def test_regex_lookups_in_admin_urls_are_refused(client, staff, query):
    subscriber("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb@example.com")
    client.force_login(staff)
    response = client.get(f"{SUBSCRIBERS}?{query}")
    assert response.status_code == 400
    assert b"Regular-expression lookups are not allowed" in response.content


def test_ordinary_admin_filters_still_work(client, staff):
    subscriber("ann@example.com")
    client.force_login(staff)
    response = client.get(f"{SUBSCRIBERS}?status__exact=active&q=ann")
    assert response.status_code == 200
    assert b"ann@example.com" in response.content
