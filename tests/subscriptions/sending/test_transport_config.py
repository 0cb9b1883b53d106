"""EMAIL_URL parsing (sending/transports/config.py)."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from subscriptions.sending.transports.config import email_settings


def parse(url, **environ):
    return email_settings(url, environ, outbox_dir="/tmp/outbox")


def test_outbox_is_the_default():
    conf = parse("")
    assert conf["EMAIL_BACKEND"] == "subscriptions.sending.transports.outbox.OutboxBackend"
    assert conf["EMAIL_TRANSPORT"] == "outbox"


def test_smtp_url():
    conf = parse("smtp://mailer:s%3Acret@smtp.example.com:587?tls=1&timeout=5")
    assert conf["EMAIL_BACKEND"] == "subscriptions.sending.transports.smtp.SMTPBackend"
    assert (conf["EMAIL_HOST"], conf["EMAIL_PORT"]) == ("smtp.example.com", 587)
    assert (conf["EMAIL_HOST_USER"], conf["EMAIL_HOST_PASSWORD"]) == ("mailer", "s:cret")
    assert conf["EMAIL_USE_TLS"] is True and conf["EMAIL_USE_SSL"] is False
    assert conf["EMAIL_TIMEOUT"] == 5.0


def test_smtps_url_defaults_to_port_465():
    conf = parse("smtps://smtp.example.com")
    assert conf["EMAIL_PORT"] == 465 and conf["EMAIL_USE_SSL"] is True


def test_smtps_with_starttls_is_contradictory():
    with pytest.raises(ImproperlyConfigured, match="already uses TLS"):
        parse("smtps://smtp.example.com?tls=1")


def test_smtp_without_host_is_refused():
    with pytest.raises(ImproperlyConfigured, match="no SMTP host"):
        parse("smtp://")


def test_anymail_url_selects_the_esp_and_collects_its_settings():
    conf = parse(
        "anymail://mailgun",
        ANYMAIL_MAILGUN_API_KEY="key-123",
        ANYMAIL_WEBHOOK_SECRET="a:b, c:d",
        UNRELATED="x",
    )
    assert conf["EMAIL_BACKEND"] == "anymail.backends.mailgun.EmailBackend"
    assert conf["ANYMAIL"]["MAILGUN_API_KEY"] == "key-123"
    assert conf["ANYMAIL"]["WEBHOOK_SECRET"] == ["a:b", "c:d"]
    assert conf["EMAIL_TRANSPORT"] == "mailgun"
    typed = parse("anymail://mailgun", ANYMAIL_REQUESTS_TIMEOUT="2.5",
                  ANYMAIL_IGNORE_RECIPIENT_STATUS="true", ANYMAIL_POSTMARK_SERVER_TOKEN="1234")
    assert typed["ANYMAIL"]["REQUESTS_TIMEOUT"] == 2.5
    assert typed["ANYMAIL"]["IGNORE_RECIPIENT_STATUS"] is True
    assert typed["ANYMAIL"]["POSTMARK_SERVER_TOKEN"] == "1234"  # secrets stay text
    assert parse("anymail://amazon-ses")["EMAIL_BACKEND"] == (
        "anymail.backends.amazon_ses.EmailBackend"
    )


def test_unknown_esp_is_refused():
    with pytest.raises(ImproperlyConfigured, match="no backend named 'pigeon'"):
        parse("anymail://pigeon")


def test_unknown_scheme_is_refused():
    with pytest.raises(ImproperlyConfigured, match="EMAIL_URL must start with"):
        parse("http://mail.example.com")
