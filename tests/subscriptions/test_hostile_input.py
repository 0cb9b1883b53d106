"""What a stranger controls, thrown at the public endpoints: never a 5xx.

Issue 12: the sign-up and preference forms, every token URL and the ESP
webhooks are fed arbitrary text and bytes through the Django test client
(hypothesis, fixed example counts and no per-example deadline, a few seconds
each). A 4xx with a page is the right answer to garbage; a 500 would mean an
unhandled path, a traceback in the log, and for webhooks an ESP retrying a
body that can never succeed.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from django.test import Client, override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from subscriptions import tasks
from subscriptions.models import Subscriber
from subscriptions.tokens import Purpose, _signer, token_make
from tests.subscriptions.factories import category, subscriber
from tests.subscriptions.test_tracking import ANYMAIL, AUTH, MAILGUN, POSTMARK, postmark_bounce

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=150, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_junk_text = st.text(max_size=80)
_junk_bytes = st.binary(max_size=300)
_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                  max_size=4),
    max_leaves=12,
)
_content_types = st.sampled_from([
    "application/json", "application/x-www-form-urlencoded", "text/plain",
    "multipart/form-data; boundary=xyz", "application/json; charset=utf-8", "",
])


@pytest.fixture
def client() -> Client:
    client = Client(REMOTE_ADDR="203.0.113.9")
    client.raise_request_exception = False  # a 500 must show as a status, not raise
    return client


@pytest.fixture(autouse=True)
def _no_mail_tasks(monkeypatch):
    monkeypatch.setattr(tasks.subscriber_email_send, "delay_on_commit", lambda *a, **k: None)
    monkeypatch.setattr(tasks.tracking_event_process, "delay_on_commit", lambda **k: None)


def _assert_no_server_error(response, what):
    assert response.status_code < 500, (what, response.status_code)


# --- Forms ------------------------------------------------------------------------------

_form_value = st.one_of(
    _junk_text, st.sampled_from(["daily", "weekly", "off", "yes", "no", "7", "23", "24", "-1",
                                 "UTC", "Europe/Berlin", "Africa/Asmera", "a@example.com",
                                 "x" * 300 + "@example.com", "1", "99999999999999999999"]),
)
_form = st.dictionaries(
    st.sampled_from(["email", "categories", "frequency", "digest_hour", "timezone",
                     "wants_alerts", "csrfmiddlewaretoken", "category", "List-Unsubscribe"]),
    st.one_of(_form_value, st.lists(_form_value, max_size=3)),
    max_size=8,
)


@FUZZ
@given(data=_form)
def test_signup_form_answers_any_post_without_a_server_error(client, data):
    category("world")
    _assert_no_server_error(client.post("/subscribe/", data), data)


@FUZZ
@given(query=_junk_text, cookie=_junk_text)
def test_signup_page_answers_any_query_and_cookie(client, query, cookie):
    # As a WSGI server passes it: the header's UTF-8 bytes, decoded as Latin-1.
    wsgi_value = cookie.encode().decode("latin-1")
    client.cookies["tz"] = wsgi_value.translate(dict.fromkeys(map(ord, ";\r\n")))
    response = client.get("/subscribe/?tz=" + quote(query) + "&category=" + quote(query))
    _assert_no_server_error(response, (query, cookie))


@FUZZ
@given(data=_form)
def test_preference_forms_answer_any_post_without_a_server_error(client, data):
    reader = Subscriber.objects.filter(email="fuzz@example.com").first() or subscriber(
        "fuzz@example.com", categories=[category("world"), category("sport")])
    token = token_make(subscriber_id=reader.pk, email=reader.email, purpose=Purpose.MANAGE)
    for suffix in ("", "unfollow/", "unsubscribe/", "resubscribe/"):
        response = client.post(f"/preferences/{token}/{suffix}", data)
        _assert_no_server_error(response, (suffix, data))


@FUZZ
@given(body=_junk_bytes, content_type=_content_types)
def test_forms_answer_any_raw_body(client, body, content_type):
    _assert_no_server_error(
        client.post("/subscribe/", body, content_type=content_type), (body, content_type))


# --- Tokens -----------------------------------------------------------------------------

TOKEN_URLS = [
    "/subscribe/confirm/{}/", "/preferences/{}/", "/preferences/{}/unfollow/",
    "/preferences/{}/unsubscribe/", "/preferences/{}/resubscribe/", "/unsubscribe/{}/",
    "/editions/{}/",
]


def _signed(value: str, purpose: Purpose) -> str:
    """A token with our real signature over a value we never issue."""
    return _signer(purpose).sign(value)


_token = st.one_of(
    _junk_text.filter(lambda t: t.strip("/.") and "/" not in t),
    st.builds(lambda v: _signed(v, Purpose.MANAGE), st.text(max_size=40)),
    st.builds(lambda n, d: _signed(f"{n}.{d}", Purpose.UNSUBSCRIBE),
              st.integers(min_value=0, max_value=10**40), st.text(max_size=16)),
)


@FUZZ
@given(token=_token)
def test_any_token_gets_a_clear_4xx_page(client, token):
    for template in TOKEN_URLS:
        url = template.format(quote(token, safe=""))
        for method in (client.get, client.post):
            response = method(url)
            assert 400 <= response.status_code < 500 or response.status_code in (301, 302), (
                url, response.status_code)


@pytest.mark.parametrize("value", ["99999999999999999999999999.abc", "1.", ".abc", "-1.abc",
                                   "١٢.abc", "1" * 5000 + ".x"])
def test_a_signed_token_with_an_odd_value_is_a_400_page(client, value):
    for purpose, template in [(Purpose.CONFIRM, "/subscribe/confirm/{}/"),
                              (Purpose.MANAGE, "/preferences/{}/"),
                              (Purpose.UNSUBSCRIBE, "/unsubscribe/{}/")]:
        response = client.get(template.format(_signed(value, purpose)))
        assert response.status_code == 400, (value, purpose, response.status_code)
        assert b"not valid" in response.content


# --- Webhooks ---------------------------------------------------------------------------

_webhook_body = st.one_of(
    _junk_bytes,
    _json_value.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda extra: json.dumps({**postmark_bounce("ann@example.com"), **extra}).encode(),
              st.dictionaries(st.sampled_from(["Email", "BouncedAt", "Type", "RecordType",
                                               "Metadata", "ID", "MessageID", "Details"]),
                              _json_value, max_size=3)),
    st.builds(lambda extra: json.dumps({"signature": extra.get("signature"),
                                        "event-data": extra.get("data")}).encode(),
              st.fixed_dictionaries({"signature": _json_value, "data": _json_value})),
)


@FUZZ
@given(url=st.sampled_from([POSTMARK, MAILGUN]), body=_webhook_body, content_type=_content_types,
       authorised=st.booleans())
def test_webhooks_answer_any_body_without_a_server_error(client, url, body, content_type,
                                                        authorised):
    ann = Subscriber.objects.filter(email="ann@example.com").first() or subscriber(
        "ann@example.com")
    with override_settings(ANYMAIL=ANYMAIL):
        response = client.post(url, body, content_type=content_type,
                               **(AUTH if authorised else {}))
    _assert_no_server_error(response, (url, body[:80], content_type))
    if url == MAILGUN:  # a forged body carries no valid signature: nothing may change
        ann.refresh_from_db()
        assert ann.status == Subscriber.Status.ACTIVE


def test_a_failure_after_parsing_is_still_a_500_so_the_esp_retries(client, monkeypatch):
    """Only unreadable bodies become 400s: a broker outage must still make the ESP retry."""

    def broker_down(**payload):
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.tracking_event_process, "delay_on_commit", broker_down)
    with override_settings(ANYMAIL=ANYMAIL):
        response = client.post(POSTMARK, json.dumps(postmark_bounce("ann@example.com")),
                               content_type="application/json", **AUTH)
    assert response.status_code == 500


@pytest.mark.parametrize("pk", ["9223372036854775808", "1" * 5000, "\u0661", "-1", "1.5", ""])
def test_a_topic_id_out_of_any_range_is_a_form_error(client, pk):
    reader = subscriber("odd@example.com", categories=[category("world")])
    token = token_make(subscriber_id=reader.pk, email=reader.email, purpose=Purpose.MANAGE)
    response = client.post(f"/preferences/{token}/", {
        "categories": [pk], "frequency": "daily", "digest_hour": "7", "timezone": "UTC",
        "wants_alerts": "yes"})
    assert response.status_code == 200
    assert b"Choose" in response.content  # a form error on the page, not a server error
