"""The JSON API over HTTP (/api/v1/): the same sign-up as the HTML form, through
Django's test client with the whole middleware stack (CORS included)."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from newsroom.models import Category
from subscriptions.models import ApiKey, ConsentRecord, Subscriber
from subscriptions.services.api_keys import api_key_create, api_key_revoke

pytestmark = pytest.mark.django_db

IP, UA = "203.0.113.9", "PartnerApp/2.0"
SITE = "https://partner.example"
SIGNUPS = "/api/v1/signups"
INBOX = {"status": "check your inbox"}


@pytest.fixture(autouse=True)
def _origins(settings):
    settings.NEWSROOM_API_ALLOWED_ORIGINS = [SITE]
    settings.CORS_ALLOWED_ORIGINS = [SITE]


@pytest.fixture
def topics() -> dict[str, Category]:
    sport = Category.objects.create(name="Sport", slug="sport", order=2)
    world = Category.objects.create(name="World", slug="world", order=1,
                                    description="News from everywhere.")
    return {"world": world, "sport": sport}


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple[int, str]]:
    """(subscriber id, kind) of each subscription email the service enqueues."""
    from subscriptions import tasks

    sent: list[tuple[int, str]] = []
    monkeypatch.setattr(tasks.subscriber_email_send, "delay_on_commit",
                        lambda subscriber_id, kind: sent.append((subscriber_id, kind)))
    return sent


@pytest.fixture
def client() -> Client:
    return Client(REMOTE_ADDR=IP, HTTP_USER_AGENT=UA)


def post(client: Client, body: object, **headers: str):
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(SIGNUPS, data, content_type="application/json", headers=headers)


def body(email: str = "reader@example.com", **fields: object) -> dict[str, object]:
    return {"email": email, "topics": ["world"], **fields}


# --- Topics and the schema ------------------------------------------------------------


def test_topics_lists_the_categories_in_order(client, topics):
    response = client.get("/api/v1/topics")
    assert response.status_code == 200
    assert response.json() == [
        {"slug": "world", "name": "World", "description": "News from everywhere."},
        {"slug": "sport", "name": "Sport", "description": ""},
    ]


def test_the_openapi_schema_and_docs_are_served(client):
    schema = client.get("/api/v1/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert set(paths) == {"/api/v1/signups", "/api/v1/topics"}
    assert set(paths["/api/v1/signups"]["post"]["responses"]) >= {"202", "400", "429"}
    docs = client.get("/api/v1/docs")
    assert docs.status_code == 200
    assert b"swagger-ui-bundle.js" in docs.content  # from our static files, not a CDN


# --- Sign-up ----------------------------------------------------------------------------


def test_a_sign_up_is_pending_recorded_and_mailed(client, topics, enqueued):
    response = post(client, body("Reader@Example.com", topics=["world", "sport"],
                                 frequency="weekly", alerts=False,
                                 timezone="Asia/Calcutta", digest_hour=18),
                    Origin=SITE)
    assert (response.status_code, response.json()) == (202, INBOX)
    subscriber = Subscriber.objects.get()
    assert subscriber.email == "reader@example.com"
    assert subscriber.status == Subscriber.Status.PENDING
    assert (subscriber.frequency, subscriber.wants_alerts, subscriber.timezone,
            subscriber.digest_hour) == ("weekly", False, "Asia/Kolkata", 18)
    assert set(subscriber.categories.values_list("slug", flat=True)) == {"world", "sport"}
    consent = ConsentRecord.objects.get()
    assert (consent.action, consent.method, consent.page, consent.ip_address,
            consent.user_agent) == ("signup", "api", SITE, IP, UA)
    assert consent.details["categories"] == ["sport", "world"]
    assert enqueued == [(subscriber.pk, "confirm")]  # double opt-in: nothing else yet


def test_a_call_without_origin_is_recorded_as_api(client, topics, enqueued):
    post(client, body())
    assert ConsentRecord.objects.get().page == "api"


def test_a_known_address_gets_the_same_answer(client, topics, enqueued):
    known = Subscriber.objects.create(email="known@example.com", status=Subscriber.Status.ACTIVE)
    new = post(client, body("new@example.com"))
    again = post(client, body("known@example.com"))
    assert (again.status_code, again.content) == (new.status_code, new.content)
    assert set(again.headers) == set(new.headers)
    known.refresh_from_db()
    assert known.status == Subscriber.Status.ACTIVE  # not reset to pending
    assert enqueued[-1] == (known.pk, "manage")  # its owner is nudged by mail instead


@pytest.mark.parametrize(("fields", "field"), [
    ({"email": "not an address"}, "email"),
    ({"email": "someone@localhost"}, "email"),
    ({"topics": []}, "topics"),
    ({"topics": ["world", "gossip"]}, "topics"),
    ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
    ({"digest_hour": 24}, "digest_hour"),
    ({"frequency": "hourly"}, "frequency"),
])
def test_bad_input_is_a_400_naming_the_field(client, topics, enqueued, fields, field):
    response = post(client, {**body(), **fields})
    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert not Subscriber.objects.exists() and not enqueued


def test_a_body_that_is_no_json_is_a_400(client, topics):
    response = post(client, "{not json")
    assert response.status_code == 400
    assert "errors" in response.json() or "detail" in response.json()


def test_the_per_ip_limit_counts_bad_attempts_too(client, topics, enqueued, settings):
    settings.NEWSROOM_SIGNUP_LIMIT_PER_IP = 2
    assert post(client, {"email": "x"}).status_code == 400
    assert post(client, body("a@example.com")).status_code == 202
    limited = post(client, body("b@example.com"))
    assert limited.status_code == 429
    assert limited["Retry-After"] == "3600"
    assert Subscriber.objects.count() == 1


def test_the_per_address_limit(client, topics, enqueued, settings):
    settings.NEWSROOM_SIGNUP_LIMIT_PER_EMAIL = 1
    assert post(client, body("a@example.com")).status_code == 202
    other = Client(REMOTE_ADDR="198.51.100.1")
    assert post(other, body("A@example.com")).status_code == 429
    assert len(enqueued) == 1


# --- API keys ----------------------------------------------------------------------------


def bearer(full_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {full_key}"}


def test_a_valid_key_skips_the_per_ip_limit_not_the_per_address_one(
        client, topics, enqueued, settings):
    settings.NEWSROOM_SIGNUP_LIMIT_PER_IP = 1
    settings.NEWSROOM_SIGNUP_LIMIT_PER_EMAIL = 2
    key, full_key = api_key_create(name="Partner", scopes=[ApiKey.Scope.SIGNUP])
    for n in range(3):
        assert post(client, body(f"r{n}@example.com"), **bearer(full_key)).status_code == 202
    assert post(client, body("r0@example.com"), **bearer(full_key)).status_code == 202
    assert post(client, body("r0@example.com"), **bearer(full_key)).status_code == 429
    consent = ConsentRecord.objects.filter(subscriber__email="r1@example.com").get()
    assert consent.method == f"api-key:{key.prefix}"
    key.refresh_from_db()
    assert key.last_used_at is not None
    # The same client without its key is still held to the per-IP limit.
    assert post(client, body("s@example.com")).status_code == 202
    assert post(client, body("t@example.com")).status_code == 429


def test_only_a_hash_of_the_secret_is_stored(topics):
    key, full_key = api_key_create(name="Partner", scopes=["signup"])
    secret = full_key.split("_", 2)[2]
    assert full_key.startswith(f"nr_{key.prefix}_")
    assert secret not in json.dumps(list(ApiKey.objects.values()), default=str)


@pytest.mark.parametrize("tamper", [
    lambda full: full[:-1] + ("A" if full[-1] != "A" else "B"),
    lambda full: full.replace("nr_", "xx_"),
    lambda full: "nr_",
    lambda full: "nr_00000000_" + full.split("_", 2)[2],
])
def test_a_wrong_key_is_refused(client, topics, enqueued, tamper):
    _key, full_key = api_key_create(name="Partner", scopes=["signup"])
    response = post(client, body(), **bearer(tamper(full_key)))
    assert response.status_code == 401
    assert not Subscriber.objects.exists()


def test_a_revoked_key_is_refused(client, topics, enqueued):
    key, full_key = api_key_create(name="Partner", scopes=["signup"])
    assert post(client, body("a@example.com"), **bearer(full_key)).status_code == 202
    assert api_key_revoke(key=key) and not api_key_revoke(key=key)
    assert post(client, body("b@example.com"), **bearer(full_key)).status_code == 401


def test_a_key_without_the_scope_is_refused(client, topics, enqueued):
    _key, full_key = api_key_create(name="Reader app", scopes=[])
    assert post(client, body(), **bearer(full_key)).status_code == 403
    assert not Subscriber.objects.exists()


# --- CORS ----------------------------------------------------------------------------------


def preflight(client: Client, origin: str):
    return client.options(SIGNUPS, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})


def test_a_preflight_from_an_allowed_origin_is_answered(client):
    response = preflight(client, SITE)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == SITE
    assert "POST" in response["Access-Control-Allow-Methods"]
    assert "content-type" in response["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in response  # no cookies cross-site


def test_other_origins_get_no_cors_headers(client, topics, enqueued):
    assert "Access-Control-Allow-Origin" not in preflight(client, "https://evil.example")
    response = post(client, body(), Origin="https://evil.example")
    assert "Access-Control-Allow-Origin" not in response


def test_an_allowed_origin_may_read_the_answer(client, topics, enqueued):
    response = post(client, body(), Origin=SITE)
    assert response["Access-Control-Allow-Origin"] == SITE


def test_the_html_pages_send_no_cors_headers(client):
    response = client.get("/subscribe/", headers={"Origin": SITE})
    assert "Access-Control-Allow-Origin" not in response


# --- The embeddable form without script ----------------------------------------------------

EMBEDDED = "/subscribe/embedded/"


def embedded_post(client: Client, origin: str | None, **fields: object):
    data = {"email": "reader@example.com", "topic": ["world", "sport"], "frequency": "daily",
            "digest_hour": "7", "timezone": "UTC", "wants_alerts": "yes", **fields}
    headers = {"Origin": origin} if origin else {}
    return client.post(EMBEDDED, data, headers=headers)


def test_the_embedded_form_signs_up_from_an_allowed_site(topics, enqueued):
    browser = Client(enforce_csrf_checks=True, REMOTE_ADDR=IP)  # it has no token of ours
    response = embedded_post(browser, SITE)
    assert response.status_code == 302
    assert response["Location"] == "/subscribe/check-your-inbox/"
    subscriber = Subscriber.objects.get()
    assert set(subscriber.categories.values_list("slug", flat=True)) == {"world", "sport"}
    assert ConsentRecord.objects.get().method == "form"
    assert enqueued == [(subscriber.pk, "confirm")]


@pytest.mark.parametrize("origin", ["https://evil.example", None])
def test_the_embedded_form_refuses_other_sites(topics, enqueued, origin):
    browser = Client(enforce_csrf_checks=True, REMOTE_ADDR=IP)
    response = embedded_post(browser, origin)
    assert response.status_code == 403
    assert b"sign up on our own page" in response.content
    assert not Subscriber.objects.exists()


def test_the_embedded_form_shows_errors_on_our_own_page(client, topics):
    response = embedded_post(client, SITE, email="nope", topic=["gossip"])
    assert response.status_code == 200
    page = response.content.decode()
    assert "Choose at least one topic." in page
    assert 'action="/subscribe/"' in page  # the corrected form posts to the usual view


def test_the_embedded_form_shares_the_rate_limit(client, topics, enqueued, settings):
    settings.NEWSROOM_SIGNUP_LIMIT_PER_IP = 1
    assert embedded_post(client, SITE).status_code == 302
    assert embedded_post(client, SITE, email="b@example.com").status_code == 429


# --- Keys in the admin ------------------------------------------------------------------------


def test_the_admin_shows_a_new_key_once_and_revokes_it(admin_client, client, topics, enqueued):
    response = admin_client.post("/admin/subscriptions/apikey/add/",
                                 {"name": "Partner site", "scopes": ["signup"]})
    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"]
    key = ApiKey.objects.get()
    page = response.content.decode()
    [full_key] = set(re.findall(rf"nr_{key.prefix}_[A-Za-z0-9_-]{{40,}}", page))
    assert post(client, body(), **bearer(full_key)).status_code == 202
    change = admin_client.get(f"/admin/subscriptions/apikey/{key.pk}/change/").content.decode()
    assert full_key not in change and f"nr_{key.prefix}_" in change
    listing = admin_client.get("/admin/subscriptions/apikey/").content.decode()
    assert full_key not in listing

    admin_client.post("/admin/subscriptions/apikey/", {
        "action": "revoke", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert post(client, body("b@example.com"), **bearer(full_key)).status_code == 401
    assert admin_client.post(f"/admin/subscriptions/apikey/{key.pk}/delete/").status_code == 403
