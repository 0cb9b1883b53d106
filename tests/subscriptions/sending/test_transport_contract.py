"""The Transport contract, per class: batch limit, what it personalises, error classes,
and which transport the configured backend gets."""

from __future__ import annotations

import smtplib

import pytest
from anymail.exceptions import (
    AnymailAPIError,
    AnymailInvalidAddress,
    AnymailRecipientsRefused,
    AnymailUnsupportedFeature,
)
from django.core.mail import get_connection

from subscriptions.sending.transports.base import Batch, Recipient, Transport
from subscriptions.sending.transports.choose import transport_get
from subscriptions.sending.transports.esp import (
    ROADS,
    MailgunTransport,
    MailjetTransport,
    SparkPostTransport,
)
from subscriptions.sending.transports.one_by_one import OneByOneTransport, error_is_permanent
from subscriptions.sending.transports.outbox import OutboxTransport
from subscriptions.sending.transports.smtp import SMTPTransport

MAILGUN = "anymail.backends.mailgun.EmailBackend"


@pytest.mark.parametrize(("backend", "road"), [
    ("subscriptions.sending.transports.smtp.SMTPBackend", SMTPTransport),
    ("subscriptions.sending.transports.outbox.OutboxBackend", OutboxTransport),
    (MAILGUN, MailgunTransport),
    ("anymail.backends.mailjet.EmailBackend", MailjetTransport),
    ("anymail.backends.sparkpost.EmailBackend", SparkPostTransport),
    ("anymail.backends.postmark.EmailBackend", OneByOneTransport),  # no merge road
    ("django.core.mail.backends.smtp.EmailBackend", OneByOneTransport),  # not pipelined
    ("django.core.mail.backends.locmem.EmailBackend", OneByOneTransport),
])
def test_the_configured_backend_gets_its_one_road(settings, backend, road):
    settings.EMAIL_BACKEND = backend
    settings.ANYMAIL = {"MAILGUN_API_KEY": "k", "MAILJET_API_KEY": "k", "MAILJET_SECRET_KEY": "s",
                        "SPARKPOST_API_KEY": "k", "POSTMARK_SERVER_TOKEN": "t"}
    assert type(transport_get()) is road


@pytest.mark.parametrize(("road", "limit", "merges"), [
    (SMTPTransport, 250, False),
    (OutboxTransport, 250, False),
    (OneByOneTransport, 1, False),
    (MailgunTransport, 1000, True),
    (MailjetTransport, 50, True),
    (SparkPostTransport, 1000, True),
])
def test_each_road_declares_its_batch_limit_and_whether_it_merges(road, limit, merges):
    assert (road.batch_limit, road.merges) == (limit, merges)


@pytest.mark.parametrize(("road", "field"), [
    (MailgunTransport, "%recipient.email%"),
    (MailjetTransport, "[[var:email]]"),
    (SparkPostTransport, "{{email}}"),
])
def test_an_esp_merges_a_content_unless_it_spells_the_esps_own_merge_fields(settings, road,
                                                                              field):
    settings.ANYMAIL = {"MAILGUN_API_KEY": "k", "MAILJET_API_KEY": "k", "MAILJET_SECRET_KEY": "s",
                        "SPARKPOST_API_KEY": "k"}
    transport = road(get_connection(f"anymail.backends.{road.name}.EmailBackend"))
    assert transport.merge_field.format("email") == field
    assert transport.can_merge("Hello", "Plain text", "<p>HTML</p>")
    opener = field[: field.index("email")]
    assert not transport.can_merge("Hello", f"An editor wrote {opener}x here", "<p/>")
    assert not transport.can_merge(f"{opener}subject", "", "")


def test_prebuilt_roads_merge_nothing():
    for road in (SMTPTransport, OutboxTransport, OneByOneTransport):
        assert not road.can_merge(road.__new__(road), "Hello", "text", "<p/>")


def test_every_esp_road_has_a_name_anymail_knows():
    import importlib

    for road in ROADS:
        importlib.import_module(f"anymail.backends.{road.name}")


def api_error(status: int | None) -> AnymailAPIError:
    return AnymailAPIError("refused", status_code=status)


@pytest.mark.parametrize(("error", "permanent"), [
    (smtplib.SMTPRecipientsRefused({"a@example.com": (550, b"5.1.1 no such user")}), True),
    (smtplib.SMTPRecipientsRefused({"a@example.com": (452, b"4.2.2 mailbox full")}), False),
    (smtplib.SMTPSenderRefused(553, b"5.7.1 sender refused", "news@example.com"), True),
    (smtplib.SMTPDataError(554, b"5.7.1 looks like spam"), True),
    (smtplib.SMTPDataError(451, b"4.3.0 try again later"), False),
    (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), False),
    (ConnectionRefusedError(111, "Connection refused"), False),
    (TimeoutError("timed out"), False),
    (AnymailRecipientsRefused("all refused"), True),
    (AnymailInvalidAddress("not an address"), True),
    (AnymailUnsupportedFeature("no such feature"), False),
    (api_error(400), True),
    (api_error(401), True),
    (api_error(422), True),
    (api_error(429), False),
    (api_error(500), False),
    (api_error(503), False),
    (api_error(None), False),  # no answer: a timeout or a dropped connection
])
def test_errors_are_classified_permanent_or_transient(error, permanent):
    assert error_is_permanent(error) is permanent
    transport = OneByOneTransport(get_connection("django.core.mail.backends.locmem.EmailBackend"))
    assert transport.status_of(error) == ("failed" if permanent else "retry")


def test_the_smtp_road_retries_what_went_wrong_with_its_session():
    # Per-message refusals are Outcomes with their codes; exceptions concern the session.
    transport = SMTPTransport.__new__(SMTPTransport)
    assert transport.status_of(smtplib.SMTPAuthenticationError(535, b"bad login")) == "retry"
    assert transport.status_of(ConnectionRefusedError()) == "retry"


def test_the_base_class_leaves_send_to_the_roads():
    with pytest.raises(NotImplementedError):
        Transport().send(Batch("news@example.com", [], lambda r: b""))


# --- one by one through Django's own SMTP backend, against the real listener -------------


def one_by_one_to(smtp, settings, *addresses: str):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    transport = transport_get()
    assert type(transport) is OneByOneTransport
    recipients = [Recipient(n, a, {}, {}, "") for n, a in enumerate(addresses)]

    def render(r: Recipient) -> bytes:
        return (f"From: news@example.com\r\nTo: {r.email}\r\nSubject: Hi\r\n"
                "Content-Type: text/plain\r\n\r\nHello\r\n").encode()

    with transport.session():
        return transport.send(Batch("news@example.com", recipients, render))


@pytest.mark.django_db
def test_one_by_one_records_a_refused_reader_as_failed_and_the_rest_as_sent(smtp, settings):
    smtp.handler.reject["gone@example.com"] = "550 5.1.1 <gone@example.com>: User unknown"
    smtp.handler.reject["full@example.com"] = "452 4.2.2 Mailbox full"
    results = one_by_one_to(smtp, settings, "ok@example.com", "gone@example.com",
                            "full@example.com")
    assert [(r.delivery_id, r.status) for r in results] == [
        (0, "sent"), (1, "failed"), (2, "retry")]
    assert "User unknown" in results[1].detail
    assert [m.rcpt_to for m in smtp.handler.messages] == ["ok@example.com"]


@pytest.mark.django_db
def test_one_by_one_fails_a_message_the_server_refuses_for_good(smtp, settings):
    smtp.handler.reject_data = "554 5.7.1 Message refused"
    [result] = one_by_one_to(smtp, settings, "ok@example.com")
    assert (result.status, "554" in result.detail) == ("failed", True)


def test_one_by_one_retries_when_the_server_cannot_be_reached(settings):
    from tests.settings_helpers import free_port

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nobody listens
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    transport = transport_get()
    results = transport.send(Batch("news@example.com", [Recipient(1, "a@example.com", {}, {}, "")],
                                   lambda r: b"Subject: x\r\n\r\nx\r\n"))
    assert [r.status for r in results] == ["retry"]
