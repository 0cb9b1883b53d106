"""ESP webhooks fail closed: no credentials, no effect, and never a 500."""

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from anymail import urls as anymail_urls
from anymail.exceptions import AnymailConfigurationError
from django.core.checks import run_checks
from django.test import RequestFactory

from subscriptions.models import Subscriber, TrackingEvent
from subscriptions.webhooks import SIGNING_KEYS, fail_closed, missing_credentials
from tests.settings_helpers import process_env
from tests.subscriptions.factories import subscriber
from tests.subscriptions.test_tracking import WEBHOOK_SECRET, mailgun_event, postmark_bounce

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(WEBHOOK_SECRET.encode()).decode()}


def every_anymail_url() -> list[str]:
    """Every URL anymail's own urls.py would mount, inbound ones included."""
    routes = []
    for pattern in anymail_urls.urlpatterns:
        route = str(pattern.pattern)
        if route.startswith("^"):  # the one re_path: mailgun/inbound(_mime)?/
            assert route == r"^mailgun/inbound(_mime)?/$", route
            routes += ["mailgun/inbound/", "mailgun/inbound_mime/"]
        else:
            routes.append(route)
    return [f"/anymail/{route}" for route in routes]


def forged_bodies(email: str) -> list[tuple[str, str]]:
    """Bodies in each ESP's shape that would suppress `email` if accepted."""
    brevo = {"event": "hard_bounce", "email": email, "id": 1, "message-id": "<m@x>",
             "date": "2026-11-27 06:02:11", "ts_event": 1_790_000_000, "reason": "unknown user"}
    ses = {"Type": "Notification", "MessageId": "n-1", "TopicArn": "arn:aws:sns:x:1:t",
           "Message": json.dumps({"notificationType": "Bounce", "mail": {"messageId": "m"},
                                  "bounce": {"bounceType": "Permanent", "bouncedRecipients":
                                             [{"emailAddress": email}]}})}
    listed = [{"event": "bounce", "email": email, "sg_event_id": "e1", "type": "bounce",
               "msys": {"message_event": {"type": "bounce", "rcpt_to": email}}}]
    mandrill = "mandrill_events=" + json.dumps(
        [{"event": "hard_bounce", "msg": {"email": email, "_id": "m"}, "_id": "e"}])
    return [
        ("application/json", json.dumps(postmark_bounce(email))),
        ("application/json", json.dumps(brevo)),
        ("application/json", json.dumps(mailgun_event(email))),
        ("application/json", json.dumps(ses)),
        ("application/json", json.dumps(listed)),
        ("application/x-www-form-urlencoded", mandrill),
    ]


@pytest.fixture
def eager(django_capture_on_commit_callbacks):
    """Anything a webhook enqueues runs at once, so a wrongly accepted event would show."""
    from newsroom.celery import app

    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = False, False


@pytest.mark.django_db
def test_forged_events_to_every_anymail_url_change_nothing_under_default_settings(
    client, eager, django_capture_on_commit_callbacks, settings
):
    assert not settings.ANYMAIL.get("WEBHOOK_SECRET"), "the default test settings set a secret"
    client.raise_request_exception = False
    ann = subscriber("ann@example.com")
    answers = {}
    for url in every_anymail_url():
        for content_type, body in forged_bodies(ann.email):
            with django_capture_on_commit_callbacks(execute=True):
                response = client.post(url, body, content_type=content_type)
            answers.setdefault(url, set()).add(response.status_code)
    assert {code for codes in answers.values() for code in codes} <= {401, 403, 404}, answers
    assert answers["/anymail/postmark/tracking/"] == {403}  # mounted, refusing
    assert answers["/anymail/mailgun/inbound/"] == {404}  # inbound mail is not ours to take
    ann.refresh_from_db()
    assert ann.status == Subscriber.Status.ACTIVE
    assert not TrackingEvent.objects.exists()


@pytest.mark.django_db
def test_the_secret_alone_is_not_enough_where_the_esp_signs(client, settings):
    """Mailgun without its signing key answered 500 inside anymail; now a plain 403."""
    settings.ANYMAIL = {"WEBHOOK_SECRET": WEBHOOK_SECRET}
    ann = subscriber("ann@example.com")
    response = client.post("/anymail/mailgun/tracking/", json.dumps(mailgun_event(ann.email)),
                           content_type="application/json", **AUTH)
    assert response.status_code == 403
    assert b"credentials" in response.content
    ann.refresh_from_db()
    assert ann.status == Subscriber.Status.ACTIVE


@pytest.mark.django_db
def test_a_signing_key_without_the_secret_is_refused_too(client, settings):
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": "k"}
    body = json.dumps(mailgun_event("a@b.example", key="k"))
    response = client.post("/anymail/mailgun/tracking/", body, content_type="application/json")
    assert response.status_code == 403


def test_missing_credentials_per_esp(settings):
    settings.ANYMAIL = {}
    assert missing_credentials("postmark") == ["WEBHOOK_SECRET"]
    assert missing_credentials("mailgun") == ["WEBHOOK_SECRET", "MAILGUN_WEBHOOK_SIGNING_KEY"]
    settings.ANYMAIL = {"WEBHOOK_SECRET": ["a:b", "c:d"],
                        "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": " "}
    assert missing_credentials("postmark") == []
    assert missing_credentials("sendgrid") == ["SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY"]
    settings.ANYMAIL = {"WEBHOOK_SECRET": ""}
    assert missing_credentials("amazon_ses") == ["WEBHOOK_SECRET"]
    assert missing_credentials("console") == []  # no webhook at all


def test_every_tracking_webhook_anymail_ships_is_known():
    """A new anymail release with a new ESP stays unmounted until it is listed."""
    tracked = {str(p.pattern).split("/", 1)[0] for p in anymail_urls.urlpatterns
               if p.name.endswith("_tracking_webhook") or p.name == "mandrill_webhook"}
    assert tracked == set(SIGNING_KEYS)


def test_a_configuration_error_inside_anymail_is_a_403_not_a_500(settings):
    settings.ANYMAIL = {"WEBHOOK_SECRET": WEBHOOK_SECRET}

    def view(request):
        raise AnymailConfigurationError("MAILGUN_SOMETHING is missing")

    response = fail_closed(view, "postmark")(RequestFactory().post("/anymail/x/"))
    assert response.status_code == 403


def test_the_system_check_names_what_the_configured_esp_lacks(settings):
    settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
    settings.ANYMAIL = {"MAILGUN_API_KEY": "key"}
    [warning] = [m for m in run_checks() if m.id == "newsroom.W001"]
    assert "ANYMAIL_WEBHOOK_SECRET, ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY" in warning.msg

    settings.ANYMAIL = {"WEBHOOK_SECRET": "a:b", "MAILGUN_WEBHOOK_SIGNING_KEY": "k"}
    assert not [m for m in run_checks() if m.id == "newsroom.W001"]
    settings.EMAIL_BACKEND = "subscriptions.sending.transports.outbox.OutboxBackend"
    settings.ANYMAIL = {}
    assert not [m for m in run_checks() if m.id == "newsroom.W001"]


def test_check_deploy_reports_an_open_esp_webhook(tmp_path):
    env = process_env(
        DJANGO_SETTINGS_MODULE="newsroom.settings", DJANGO_SECRET_KEY="s" * 60,
        NEWSROOM_DATA_DIR=str(tmp_path), REDIS_URL="redis://127.0.0.1:6379/15",
        EMAIL_URL="anymail://postmark", ANYMAIL_POSTMARK_SERVER_TOKEN="t",
        NEWSROOM_NO_BOOTSTRAP="1",
    )
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    assert "newsroom.W001" in result.stderr + result.stdout
    assert "ANYMAIL_WEBHOOK_SECRET is not set" in result.stderr + result.stdout
