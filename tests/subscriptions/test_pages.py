"""The public subscription pages: sign-up, confirm, preferences, unsubscribe.

Each emailed link is checked for what a GET must not do (scanners prefetch
links), for tampered, foreign, stale and expired tokens, and the sign-up for
answering alike whether or not an address is known.
"""

from __future__ import annotations

import hashlib
import re
import time
from unittest import mock
from urllib.parse import urlsplit

import pytest
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse

from newsroom.models import Category
from subscriptions import emails
from subscriptions.models import ConsentRecord, Subscriber
from subscriptions.services.subscribers import SIGNUP_WORDING_VERSION
from subscriptions.tokens import LIFETIME, Purpose, token_make
from tests.mailbox import text_body, unsubscribe_link

pytestmark = pytest.mark.django_db

IP, UA = "203.0.113.7", "Mozilla/5.0 (Tests) Newsroom/1"
Status = Subscriber.Status


# --- Helpers ---------------------------------------------------------------------


@pytest.fixture
def topics() -> dict[str, Category]:
    """Created out of order, so the page must sort them."""
    science = Category.objects.create(name="Science", slug="science", order=3)
    world = Category.objects.create(
        name="World", slug="world", order=1, description="News from everywhere."
    )
    sport = Category.objects.create(name="Sport", slug="sport", order=2)
    return {"world": world, "sport": sport, "science": science}


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple[int, str]]:
    """(subscriber id, kind) of each subscription email the services enqueue."""
    from subscriptions import tasks

    sent: list[tuple[int, str]] = []
    monkeypatch.setattr(tasks.subscriber_email_send, "delay_on_commit",
                        lambda subscriber_id, kind: sent.append((subscriber_id, kind)))
    return sent


@pytest.fixture
def client() -> Client:
    return Client(REMOTE_ADDR=IP, HTTP_USER_AGENT=UA)


@pytest.fixture
def csrf_client() -> Client:
    """A client that, like a browser, must present a CSRF token."""
    return Client(enforce_csrf_checks=True, REMOTE_ADDR=IP, HTTP_USER_AGENT=UA)


def make_subscriber(email="ann@example.com", *, status=Status.ACTIVE, categories=(), **fields):
    subscriber = Subscriber.objects.create(email=email, status=status, **fields)
    subscriber.categories.set(categories)
    return subscriber


def token_for(subscriber: Subscriber, purpose: Purpose, *, age_days: float = 0) -> str:
    """A token as if made `age_days` ago."""
    made_at = time.time() - age_days * 86400
    with mock.patch("django.core.signing.time.time", return_value=made_at):
        return token_make(subscriber_id=subscriber.pk, email=subscriber.email, purpose=purpose)


def expired(purpose: Purpose) -> float:
    return LIFETIME[purpose].days + 1


def tampered(token: str) -> str:
    """The token with one character of its signature changed."""
    last = token[-1]
    return token[:-1] + ("A" if last != "A" else "B")


def url(name: str, token: str) -> str:
    return reverse(f"subscriptions:{name}", args=[token])


def signup_data(**overrides) -> dict:
    data = {"email": "new@example.com", "categories": ["world"], "frequency": "weekly",
            "digest_hour": "18", "timezone": "Europe/Berlin", "wants_alerts": "no"}
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def post_signup(client: Client, topics: dict[str, Category], **overrides):
    data = signup_data(**overrides)
    data["categories"] = [topics[slug].pk for slug in data.get("categories", [])]
    return client.post(reverse("subscriptions:signup"), data)


def without_csrf(html: str) -> str:
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", html)


def html(response) -> str:
    return response.content.decode()


def consents(subscriber: Subscriber, action: str) -> list[ConsentRecord]:
    return list(subscriber.consents.filter(action=action))


# --- Sign-up page ------------------------------------------------------------------


def test_signup_page_offers_every_topic_in_order_with_sensible_defaults(client, topics):
    response = client.get(reverse("subscriptions:signup"))

    assert response.status_code == 200
    page = html(response)
    assert page.index("World") < page.index("Sport") < page.index("Science")
    assert "News from everywhere." in page
    assert re.search(r'<option value="UTC" selected>', page)
    assert re.search(r'<option value="7" selected>07:00</option>', page)
    assert re.search(r'value="daily"[^>]*checked', page)
    assert re.search(r'value="yes"[^>]*checked', page)
    assert "Europe/Berlin" in page and "America/Argentina/Buenos_Aires" in page
    assert not re.search(r'name="categories"[^>]*checked', page)  # topics are a choice


def test_signup_page_is_accessible_without_javascript(client, topics):
    page = html(client.get(reverse("subscriptions:signup")))

    # The one script only preselects the time zone; no inline code (CSP).
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts == ['<script src="/static/subscriptions/timezone.js" defer>',
                       '<script id="timezone-aliases" type="application/json">']
    assert 'href="/static/subscriptions/forms.css"' in page
    for field in ("email", "digest_hour", "timezone"):
        assert f'<label for="id_{field}">' in page
    for group in ("Topics", "Digest", "Breaking news alerts"):  # checkbox and radio groups
        assert re.search(rf"<fieldset[^>]*>\s*<legend[^>]*>{group}</legend>", page)
    for value in range(Category.objects.count()):
        assert f'<label for="id_categories_{value}">' in page
    assert 'name="csrfmiddlewaretoken"' in page
    assert f'data-wording-version="{SIGNUP_WORDING_VERSION}"' in page
    assert 'aria-describedby="consent-wording"' in page


@pytest.mark.parametrize(("query", "cookie", "expected"), [
    ("", None, "UTC"),
    ("?tz=Europe/Berlin", None, "Europe/Berlin"),
    ("", "Asia/Tokyo", "Asia/Tokyo"),
    ("?tz=America/New_York", "Asia/Tokyo", "America/New_York"),
    ("?tz=Mars/Olympus_Mons", "Asia/Tokyo", "Asia/Tokyo"),
    ("?tz=%3Cscript%3E", "nonsense", "UTC"),
])
def test_signup_timezone_is_prefilled_from_query_or_cookie(client, topics, query, cookie,
                                                          expected):
    if cookie:
        client.cookies["tz"] = cookie
    page = html(client.get(reverse("subscriptions:signup") + query))

    assert re.findall(r'<option value="([^"]+)" selected>', page) == ["7", expected]


def test_signup_saves_a_pending_subscriber_with_consent_and_sends_a_confirmation(
    client, topics, enqueued
):
    response = post_signup(client, topics, email="  New@Example.com ",
                           categories=["world", "science"])

    assert response.status_code == 302
    assert response["Location"] == reverse("subscriptions:signup_done")
    subscriber = Subscriber.objects.get()
    assert subscriber.email == "new@example.com"
    assert subscriber.status == Status.PENDING
    assert set(subscriber.categories.values_list("slug", flat=True)) == {"world", "science"}
    assert (subscriber.frequency, subscriber.wants_alerts, subscriber.timezone,
            subscriber.digest_hour) == ("weekly", False, "Europe/Berlin", 18)
    [record] = consents(subscriber, ConsentRecord.Action.SIGNUP)
    assert record.ip_address == IP
    assert record.user_agent == UA
    assert record.page == "http://testserver/subscribe/"
    assert record.wording_version == SIGNUP_WORDING_VERSION
    assert record.details["categories"] == ["science", "world"]
    assert enqueued == [(subscriber.pk, "confirm")]


def test_check_your_inbox_page(client):
    response = client.get(reverse("subscriptions:signup_done"))

    assert response.status_code == 200
    assert "Check your inbox" in html(response)


@pytest.mark.parametrize(("overrides", "field", "message"), [
    ({"email": "not-an-address"}, "email", "Enter a valid email address, like name@example.com."),
    ({"email": ""}, "email", "Enter your email address."),
    ({"categories": []}, "categories", "Choose at least one topic."),
    ({"timezone": "Mars/Olympus_Mons"}, "timezone", "Choose a time zone from the list"),
    ({"digest_hour": "24"}, "digest_hour", "Choose an hour from 0 to 23."),
    ({"digest_hour": "-1"}, "digest_hour", "Choose an hour from 0 to 23."),
    ({"frequency": "hourly"}, "frequency", "Choose daily, weekly or no digest."),
    ({"wants_alerts": None}, "wants_alerts", "Choose whether you want breaking news alerts."),
])
def test_signup_errors_are_clear_linked_and_keep_the_input(client, topics, enqueued, overrides,
                                                          field, message):
    response = post_signup(client, topics, **overrides)

    assert response.status_code == 200
    page = html(response)
    assert message in page
    assert page.count(message) == 2  # in the summary and next to the field
    assert f'href="#id_{field}"' in page  # the summary links to the field
    assert f'id="id_{field}_error"' in page
    assert re.search(rf'aria-describedby="[^"]*id_{field}_error', page)
    assert "<title>Error: " in page
    # What was entered is still there.
    if field != "email":
        assert 'value="new@example.com"' in page
    if field != "categories":
        assert re.search(rf'value="{topics["world"].pk}"[^>]*checked', page)
    if field != "timezone":
        assert '<option value="Europe/Berlin" selected>' in page
    assert not Subscriber.objects.exists()
    assert not ConsentRecord.objects.exists()
    assert enqueued == []


@pytest.mark.parametrize("status", [Status.PENDING, Status.ACTIVE, Status.UNSUBSCRIBED,
                                    Status.BOUNCED, Status.COMPLAINED])
def test_signup_answers_the_same_for_known_and_unknown_addresses(topics, enqueued, status):
    make_subscriber("known@example.com", status=status, categories=[topics["sport"]])
    answers = []
    for address in ("known@example.com", "unknown@example.com"):
        client = Client(REMOTE_ADDR=IP)
        response = post_signup(client, topics, email=address)
        final = client.get(response["Location"])
        answers.append((response.status_code, response["Location"], final.status_code,
                        without_csrf(html(final)), sorted(response.cookies)))

    assert answers[0] == answers[1]
    # Behind the identical pages, the known address got the email that fits it.
    known = Subscriber.objects.get(email="known@example.com")
    expected_kind = "manage" if status == Status.ACTIVE else "confirm"
    assert (known.pk, expected_kind) in enqueued


def test_signing_up_again_while_pending_sends_a_new_confirmation(client, topics, enqueued):
    subscriber = make_subscriber("ann@example.com", status=Status.PENDING,
                                 categories=[topics["sport"]])

    post_signup(client, topics, email="ANN@example.com", categories=["world"])

    subscriber.refresh_from_db()
    assert subscriber.status == Status.PENDING
    assert list(subscriber.categories.values_list("slug", flat=True)) == ["world"]
    assert enqueued == [(subscriber.pk, "confirm")]
    assert Subscriber.objects.count() == 1


def test_consent_wording_is_pinned_to_its_version():
    """Changing the consent text must come with a new SIGNUP_WORDING_VERSION.

    If this fails after a wording change: bump the version in
    subscriptions/services/subscribers.py and record the new hash here.
    """
    known = {"signup-2026-11": "b349ce6008"}
    text = render_to_string("subscriptions/pages/_consent.html",
                            {"site_name": "Newsroom", "wording_version": ""})
    wording = " ".join(re.sub(r"<[^>]+>", " ", text).split())
    digest = hashlib.sha256(wording.encode()).hexdigest()[:10]

    assert known.get(SIGNUP_WORDING_VERSION) == digest, (SIGNUP_WORDING_VERSION, digest)


# --- Confirmation -------------------------------------------------------------------


@pytest.fixture
def pending(topics) -> Subscriber:
    return make_subscriber("pat@example.com", status=Status.PENDING, categories=[topics["world"]])


def test_confirm_get_only_shows_a_button(client, pending):
    response = client.get(url("confirm", token_for(pending, Purpose.CONFIRM)))

    assert response.status_code == 200
    page = html(response)
    assert "Confirm my subscription</button>" in page
    assert 'method="post"' in page and 'name="csrfmiddlewaretoken"' in page
    assert '<meta name="robots" content="noindex, nofollow">' in page
    assert "no-cache" in response["Cache-Control"]
    pending.refresh_from_db()
    assert pending.status == Status.PENDING
    assert not ConsentRecord.objects.filter(action=ConsentRecord.Action.CONFIRM).exists()


def test_confirm_post_activates_and_links_to_the_preferences(client, pending):
    token = token_for(pending, Purpose.CONFIRM)
    response = client.post(url("confirm", token))

    assert response.status_code == 200
    page = html(response)
    assert "You're subscribed" in page
    pending.refresh_from_db()
    assert pending.status == Status.ACTIVE
    assert pending.confirmed_at is not None
    manage_path = re.search(r'href="(/preferences/[^"]+/)"', page).group(1)
    assert "Pat" not in manage_path and "pat@" not in manage_path
    assert client.get(manage_path).status_code == 200
    [record] = consents(pending, ConsentRecord.Action.CONFIRM)
    assert (record.ip_address, record.user_agent) == (IP, UA)
    assert record.page == "http://testserver/subscribe/confirm/<token>/"  # no live token kept
    assert record.wording_version == SIGNUP_WORDING_VERSION


def test_confirm_needs_a_csrf_token(csrf_client, pending):
    response = csrf_client.post(url("confirm", token_for(pending, Purpose.CONFIRM)))

    assert response.status_code == 403
    pending.refresh_from_db()
    assert pending.status == Status.PENDING


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_used_confirmation_link_says_already_confirmed(client, pending, method):
    token = token_for(pending, Purpose.CONFIRM)
    client.post(url("confirm", token))

    response = getattr(client, method)(url("confirm", token))

    assert response.status_code == 200
    page = html(response)
    assert "Already confirmed" in page
    assert re.search(r'href="/preferences/[^"]+/"', page)
    assert len(consents(pending, ConsentRecord.Action.CONFIRM)) == 1


def test_a_confirmation_link_after_unsubscribing_changes_nothing(client, pending):
    token = token_for(pending, Purpose.CONFIRM)
    Subscriber.objects.filter(pk=pending.pk).update(status=Status.UNSUBSCRIBED)

    response = client.post(url("confirm", token))

    assert response.status_code == 200
    assert "Subscription cancelled" in html(response)
    pending.refresh_from_db()
    assert pending.status == Status.UNSUBSCRIBED


@pytest.mark.parametrize("method", ["get", "post"])
def test_an_expired_confirmation_link_says_so_and_offers_a_new_one(
    client, topics, pending, enqueued, method
):
    token = token_for(pending, Purpose.CONFIRM, age_days=expired(Purpose.CONFIRM))

    response = getattr(client, method)(url("confirm", token))

    assert response.status_code == 410
    page = html(response)
    assert "This link has expired" in page
    signup_url = reverse("subscriptions:signup")
    assert f'href="{signup_url}"' in page and "Get a new confirmation link" in page
    pending.refresh_from_db()
    assert pending.status == Status.PENDING

    # The way out works: signing up again mails a fresh link that confirms.
    post_signup(client, topics, email=pending.email)
    assert enqueued == [(pending.pk, "confirm")]
    fresh = emails.confirm_url(pending)
    assert client.post(urlsplit(fresh).path).status_code == 200
    pending.refresh_from_db()
    assert pending.status == Status.ACTIVE


def test_a_confirmation_link_is_valid_until_it_expires(client, pending):
    token = token_for(pending, Purpose.CONFIRM, age_days=LIFETIME[Purpose.CONFIRM].days - 0.5)

    assert client.post(url("confirm", token)).status_code == 200
    pending.refresh_from_db()
    assert pending.status == Status.ACTIVE


def _bad_tokens(subscriber: Subscriber, purpose: Purpose) -> dict[str, str]:
    """Every kind of link that must be refused with "not valid" and change nothing."""
    other = next(p for p in Purpose if p != purpose)
    ghost = Subscriber(pk=subscriber.pk + 1000, email="ghost@example.com")
    return {
        "flipped character": tampered(token_for(subscriber, purpose)),
        "cut short": token_for(subscriber, purpose)[:-6],
        "other purpose": token_for(subscriber, other),
        "unknown subscriber": token_for(ghost, purpose),
        "not a token": "hello",
        "unsigned id": str(subscriber.pk),
    }


@pytest.mark.parametrize("kind", ["flipped character", "cut short", "other purpose",
                                  "unknown subscriber", "not a token", "unsigned id"])
@pytest.mark.parametrize("method", ["get", "post"])
def test_a_bad_confirmation_link_is_refused_and_changes_nothing(client, pending, kind, method):
    token = _bad_tokens(pending, Purpose.CONFIRM)[kind]

    response = getattr(client, method)(url("confirm", token))

    assert response.status_code == 400
    assert "This link is not valid" in html(response)
    pending.refresh_from_db()
    assert pending.status == Status.PENDING
    assert not ConsentRecord.objects.exists()


def test_a_link_of_an_erased_or_readdressed_subscriber_is_refused(client, pending):
    token = token_for(pending, Purpose.CONFIRM)
    Subscriber.objects.filter(pk=pending.pk).update(email="erased-1@invalid.example")

    response = client.post(url("confirm", token))

    assert response.status_code == 400
    assert "This link is not valid" in html(response)
    pending.refresh_from_db()
    assert pending.status == Status.PENDING


def test_the_confirmation_email_link_works_end_to_end(client, topics, enqueued, mailoutbox):
    """From the form, through the email the task would send, to a confirmed subscriber."""
    post_signup(client, topics, email="reader@example.com")
    [(subscriber_id, kind)] = enqueued
    assert emails.subscriber_email_send(subscriber_id=subscriber_id, kind=kind)

    [message] = mailoutbox
    link = re.search(r"http://testserver(/subscribe/confirm/\S+/)", message.body).group(1)
    assert "reader" not in link
    assert client.get(link).status_code == 200
    assert client.post(link).status_code == 200
    assert Subscriber.objects.get(pk=subscriber_id).status == Status.ACTIVE


def test_an_active_subscriber_signing_up_gets_a_working_preferences_link(
    client, topics, enqueued, mailoutbox
):
    subscriber = make_subscriber("ann@example.com", categories=[topics["sport"]])
    post_signup(client, topics, email="ann@example.com", categories=["world"])

    assert enqueued == [(subscriber.pk, "manage")]
    assert emails.subscriber_email_send(subscriber_id=subscriber.pk, kind="manage")
    link = re.search(r"http://testserver(/preferences/\S+/)", mailoutbox[0].body).group(1)
    response = client.get(link)
    assert response.status_code == 200
    assert "ann@example.com" in html(response)
    # Nothing about the subscription changed through the anonymous form.
    assert list(subscriber.categories.values_list("slug", flat=True)) == ["sport"]


# --- Preferences ------------------------------------------------------------------


@pytest.fixture
def active(topics) -> Subscriber:
    return make_subscriber(
        "ann@example.com", categories=[topics["world"], topics["sport"]],
        frequency="weekly", wants_alerts=False, timezone="Asia/Tokyo", digest_hour=6,
    )


def manage_post(client, subscriber, action: str = "", data: dict | None = None, token=None):
    token = token or token_for(subscriber, Purpose.MANAGE)
    name = f"manage_{action}" if action else "manage"
    return client.post(url(name, token), data or {})


def test_preferences_page_shows_the_current_settings(client, active, topics):
    response = client.get(url("manage", token_for(active, Purpose.MANAGE)))

    assert response.status_code == 200
    page = html(response)
    assert "ann@example.com" in page
    checked = re.findall(r'name="categories" value="(\d+)"[^>]*checked', page)
    assert sorted(map(int, checked)) == sorted([topics["world"].pk, topics["sport"].pk])
    assert re.search(r'value="weekly"[^>]*checked', page)
    assert re.search(r'value="no"[^>]*checked', page)
    assert re.findall(r'<option value="([^"]+)" selected>', page) == ["6", "Asia/Tokyo"]
    assert "Unfollow<span class=\"visually-hidden\"> World</span>" in page
    assert "Unsubscribe from everything</button>" in page
    assert "Subscribe again" not in page
    assert '<meta name="robots" content="noindex, nofollow">' in page


def test_saving_preferences_goes_through_the_service(client, active, topics):
    token = token_for(active, Purpose.MANAGE)
    data = {"categories": [topics["science"].pk], "frequency": "daily", "digest_hour": "21",
            "timezone": "America/New_York", "wants_alerts": "yes"}

    response = client.post(url("manage", token), data)

    assert response.status_code == 302
    assert response["Location"] == url("manage", token)
    active.refresh_from_db()
    assert list(active.categories.values_list("slug", flat=True)) == ["science"]
    assert (active.frequency, active.wants_alerts, active.timezone, active.digest_hour) == (
        "daily", True, "America/New_York", 21)
    [record] = consents(active, ConsentRecord.Action.CHANGE)
    assert (record.method, record.ip_address, record.user_agent) == ("preferences-page", IP, UA)
    assert record.page == "http://testserver/preferences/<token>/"
    assert "Your preferences are saved." in html(client.get(response["Location"]))


def test_preferences_need_a_topic_and_point_to_unsubscribing(client, active):
    data = {"frequency": "daily", "digest_hour": "7", "timezone": "UTC", "wants_alerts": "yes"}

    response = manage_post(client, active, data=data)

    assert response.status_code == 200
    assert "Choose at least one topic. To stop all emails, use" in html(response)
    assert active.categories.count() == 2
    assert not ConsentRecord.objects.exists()


def test_preference_forms_need_a_csrf_token(csrf_client, active, topics):
    for action, data in [("", {"categories": [topics["science"].pk]}),
                         ("unfollow", {"category": "world"}), ("unsubscribe", {}),
                         ("resubscribe", {})]:
        assert manage_post(csrf_client, active, action, data).status_code == 403
    active.refresh_from_db()
    assert active.status == Status.ACTIVE
    assert active.categories.count() == 2


def test_unfollowing_one_topic(client, active):
    response = manage_post(client, active, "unfollow", {"category": "world"})

    assert response.status_code == 302
    assert list(active.categories.values_list("slug", flat=True)) == ["sport"]
    [record] = consents(active, ConsentRecord.Action.CHANGE)
    assert record.details == {"unfollowed": "world"}
    assert "You no longer follow World." in html(client.get(response["Location"]))


def test_the_last_topic_cannot_be_unfollowed_only_left(client, active):
    manage_post(client, active, "unfollow", {"category": "world"})
    response = manage_post(client, active, "unfollow", {"category": "sport"})

    assert list(active.categories.values_list("slug", flat=True)) == ["sport"]
    page = html(client.get(response["Location"]))
    assert "Sport is your only topic" in page
    assert "Unfollow<span" not in page  # no button offered for the last topic


def test_unfollowing_a_topic_not_followed(client, active):
    response = manage_post(client, active, "unfollow", {"category": "science"})

    assert "You were not following that topic." in html(client.get(response["Location"]))
    assert not ConsentRecord.objects.exists()


def test_unsubscribing_from_everything_sends_a_goodbye(client, active, enqueued):
    response = manage_post(client, active, "unsubscribe")

    assert response.status_code == 302
    active.refresh_from_db()
    assert active.status == Status.UNSUBSCRIBED
    [record] = consents(active, ConsentRecord.Action.WITHDRAW)
    assert record.method == "preferences-page"
    assert enqueued == [(active.pk, "goodbye")]
    page = html(client.get(response["Location"]))
    assert "You are unsubscribed from everything." in page
    assert "Subscribe again</button>" in page
    assert "Unsubscribe from everything</button>" not in page

    manage_post(client, active, "unsubscribe")  # twice is harmless
    assert len(consents(active, ConsentRecord.Action.WITHDRAW)) == 1
    assert enqueued == [(active.pk, "goodbye")]


@pytest.mark.parametrize("status", [Status.UNSUBSCRIBED, Status.BOUNCED, Status.COMPLAINED])
def test_resubscribing_from_the_preferences_page(client, topics, status):
    subscriber = make_subscriber(status=status, categories=[topics["world"]])
    assert "Subscribe again</button>" in html(
        client.get(url("manage", token_for(subscriber, Purpose.MANAGE))))

    response = manage_post(client, subscriber, "resubscribe")

    subscriber.refresh_from_db()
    assert subscriber.status == Status.ACTIVE
    [record] = consents(subscriber, ConsentRecord.Action.RESUBSCRIBE)
    assert (record.ip_address, record.wording_version) == (IP, SIGNUP_WORDING_VERSION)
    assert "Welcome back!" in html(client.get(response["Location"]))


def test_resubscribing_an_active_subscriber_changes_nothing(client, active):
    response = manage_post(client, active, "resubscribe")

    assert "already active" in html(client.get(response["Location"]))
    assert not ConsentRecord.objects.exists()


def test_a_pending_subscriber_is_told_to_confirm_first(client, pending):
    page = html(client.get(url("manage", token_for(pending, Purpose.MANAGE))))

    assert "Your subscription is not confirmed yet." in page
    assert "Subscribe again" not in page
    pending.refresh_from_db()
    assert pending.status == Status.PENDING


@pytest.mark.parametrize("action", ["", "unfollow", "unsubscribe", "resubscribe"])
def test_bad_and_expired_preferences_links_change_nothing(client, active, topics, action):
    data = {"category": "world"} if action == "unfollow" else {}
    for kind, token in _bad_tokens(active, Purpose.MANAGE).items():
        response = manage_post(client, active, action, data, token=token)
        assert response.status_code == 400, kind
        assert "This link is not valid" in html(response)
    old = token_for(active, Purpose.MANAGE, age_days=expired(Purpose.MANAGE))
    response = manage_post(client, active, action, data, token=old)
    assert response.status_code == 410
    assert "This link has expired" in html(response)

    active.refresh_from_db()
    assert active.status == Status.ACTIVE
    assert active.categories.count() == 2
    assert not ConsentRecord.objects.exists()


def test_preference_actions_refuse_get(client, active):
    token = token_for(active, Purpose.MANAGE)
    for action in ("unfollow", "unsubscribe", "resubscribe"):
        assert client.get(url(f"manage_{action}", token)).status_code == 405
    active.refresh_from_db()
    assert active.status == Status.ACTIVE


# --- Unsubscribe (RFC 8058) --------------------------------------------------------


def one_click(client: Client, token: str, *, multipart: bool):
    if multipart:  # the test client's default encoding for a dict
        return client.post(url("unsubscribe", token), {"List-Unsubscribe": "One-Click"})
    return client.post(url("unsubscribe", token), "List-Unsubscribe=One-Click",
                       content_type="application/x-www-form-urlencoded")


@pytest.mark.parametrize("method", ["get", "head"])
def test_unsubscribe_get_asks_and_changes_nothing(client, active, method):
    response = getattr(client, method)(url("unsubscribe", token_for(active, Purpose.UNSUBSCRIBE)))

    assert response.status_code == 200
    active.refresh_from_db()
    assert active.status == Status.ACTIVE
    assert not ConsentRecord.objects.exists()
    if method == "get":
        page = html(response)
        assert re.search(r'<form method="post" action="/unsubscribe/[^"]+/">', page)
        assert "csrfmiddlewaretoken" not in page  # the button works without cookies
        assert "Unsubscribe</button>" in page


@pytest.mark.parametrize("multipart", [False, True], ids=["form-encoded", "multipart"])
def test_one_click_unsubscribes_without_cookies_or_csrf_and_is_idempotent(
    csrf_client, active, enqueued, multipart
):
    token = token_for(active, Purpose.UNSUBSCRIBE)
    for _ in range(3):
        response = one_click(csrf_client, token, multipart=multipart)
        assert response.status_code == 200  # not a redirect
        assert "You're unsubscribed" in html(response)
        assert not response.cookies  # asks nothing of the mail program
        assert not csrf_client.cookies

    active.refresh_from_db()
    assert active.status == Status.UNSUBSCRIBED
    assert active.unsubscribed_at is not None
    [record] = consents(active, ConsentRecord.Action.WITHDRAW)
    assert (record.method, record.ip_address, record.user_agent) == ("one-click", IP, UA)
    assert record.page == "http://testserver/unsubscribe/<token>/"
    assert enqueued == []  # no goodbye email after a one-click


def test_the_pages_own_button_unsubscribes_without_cookies(csrf_client, active, enqueued):
    token = token_for(active, Purpose.UNSUBSCRIBE)

    response = csrf_client.post(url("unsubscribe", token))

    assert response.status_code == 200
    active.refresh_from_db()
    assert active.status == Status.UNSUBSCRIBED
    [record] = consents(active, ConsentRecord.Action.WITHDRAW)
    assert record.method == "unsubscribe-page"
    assert enqueued == []
    # The way back is a preferences link by email, not one on this page (the
    # unsubscribe link lives a year; tests/subscriptions/test_token_privacy.py).
    page = html(response)
    assert "/preferences/" not in page
    link_request = re.search(r'<form method="post" action="(/unsubscribe/[^"]+/preferences-link/)"',
                             page).group(1)
    assert csrf_client.post(link_request).status_code == 200
    assert enqueued == [(active.pk, "manage")]


def test_an_unsubscribed_reader_sees_so_on_get(client, active):
    one_click(client, token_for(active, Purpose.UNSUBSCRIBE), multipart=False)

    page = html(client.get(url("unsubscribe", token_for(active, Purpose.UNSUBSCRIBE))))

    assert "You're unsubscribed" in page
    assert "Unsubscribe</button>" not in page


def test_a_confirm_token_on_the_unsubscribe_url_is_refused(csrf_client, active):
    response = one_click(csrf_client, token_for(active, Purpose.CONFIRM), multipart=False)

    assert response.status_code == 400
    active.refresh_from_db()
    assert active.status == Status.ACTIVE


@pytest.mark.parametrize("kind", ["flipped character", "cut short", "other purpose",
                                  "unknown subscriber", "not a token", "unsigned id"])
def test_a_bad_unsubscribe_link_is_refused_and_changes_nothing(csrf_client, active, kind):
    token = _bad_tokens(active, Purpose.UNSUBSCRIBE)[kind]

    for response in (csrf_client.get(url("unsubscribe", token)),
                     one_click(csrf_client, token, multipart=True)):
        assert response.status_code == 400
        assert "This link is not valid" in html(response)
    active.refresh_from_db()
    assert active.status == Status.ACTIVE
    assert not ConsentRecord.objects.exists()


def test_an_expired_unsubscribe_link_says_so_and_links_to_signup(csrf_client, active):
    token = token_for(active, Purpose.UNSUBSCRIBE, age_days=expired(Purpose.UNSUBSCRIBE))

    response = one_click(csrf_client, token, multipart=False)

    assert response.status_code == 410
    page = html(response)
    assert "This link has expired" in page
    assert f'href="{reverse("subscriptions:signup")}"' in page
    active.refresh_from_db()
    assert active.status == Status.ACTIVE


def test_unsubscribe_links_outlive_the_60_days_we_promise(csrf_client, active):
    token = token_for(active, Purpose.UNSUBSCRIBE, age_days=61)

    assert one_click(csrf_client, token, multipart=False).status_code == 200
    active.refresh_from_db()
    assert active.status == Status.UNSUBSCRIBED


def test_the_list_unsubscribe_header_url_works(csrf_client, active):
    from subscriptions.sending.mime import list_headers_personal, unsubscribe_url

    url = unsubscribe_url(subscriber_id=active.pk, email=active.email)
    headers = list_headers_personal(unsubscribe_url=url)
    header_url = unsubscribe_link(headers["List-Unsubscribe"])

    response = csrf_client.post(urlsplit(header_url).path, "List-Unsubscribe=One-Click",
                                content_type="application/x-www-form-urlencoded")

    assert response.status_code == 200
    active.refresh_from_db()
    assert active.status == Status.UNSUBSCRIBED


# --- The real worker ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_signup_mails_a_working_confirmation_through_the_worker(celery_worker, outbox):
    """The page, the queue, the worker and the outbox, with nothing mocked."""
    world = Category.objects.create(name="World", slug="world", order=1)
    client = Client(REMOTE_ADDR=IP)
    client.post(reverse("subscriptions:signup"), signup_data(
        email="worker-reader@example.com", categories=[world.pk]))

    [message] = outbox.wait_for("worker-reader@example.com")
    assert "Confirm your subscription" in message["Subject"]
    link = re.search(r"http://testserver(/subscribe/confirm/\S+/)", text_body(message)).group(1)
    assert client.post(link).status_code == 200
    assert Subscriber.objects.get(email="worker-reader@example.com").status == Status.ACTIVE
