"""VERP bounce addresses: signed, short, lower case, and on the SMTP envelope only."""

import pytest
from django.test import override_settings

from subscriptions.sending.transports.base import Batch, Recipient
from subscriptions.sending.transports.smtp import SMTPBackend, SMTPTransport
from subscriptions.sending.verp import Delivery, bounce_address, bounce_token_read

DOMAIN = "bounce.example.com"


@override_settings(NEWSROOM_BOUNCE_DOMAIN=DOMAIN)
def test_an_address_names_its_delivery_and_fits_a_local_part():
    address = bounce_address(edition_id=123_456_789, subscriber_id=987_654_321)
    local, _, domain = address.partition("@")
    assert domain == DOMAIN and local.startswith("bounces+") and len(local) <= 64
    assert address == address.lower()
    assert bounce_token_read(address) == Delivery(123_456_789, 987_654_321)
    assert bounce_token_read(f"<{address.upper()}>") == Delivery(123_456_789, 987_654_321)


@override_settings(NEWSROOM_BOUNCE_DOMAIN=DOMAIN)
def test_a_forged_or_foreign_address_names_nothing():
    address = bounce_address(edition_id=7, subscriber_id=12)
    local, _, _ = address.partition("@")
    edition, _subscriber, signature = local.removeprefix("bounces+").split(".")
    assert bounce_token_read(f"bounces+{edition}.d.{signature}@{DOMAIN}") is None  # another reader
    assert bounce_token_read(f"{local}@elsewhere.example") is None
    assert bounce_token_read("bounces+fbl@" + DOMAIN) is None
    with override_settings(SECRET_KEY="another-key-entirely-" * 3):
        assert bounce_token_read(address) is None


def test_a_rotated_key_still_reads_tokens_already_sent(settings):
    settings.NEWSROOM_BOUNCE_DOMAIN = DOMAIN
    address = bounce_address(edition_id=7, subscriber_id=12)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "the-new-key-after-rotation-" * 2
    assert bounce_token_read(address) == Delivery(7, 12)


def test_off_by_default():
    assert bounce_address(edition_id=7, subscriber_id=12) == ""


@pytest.mark.parametrize("return_path", ["", f"bounces+7.c.0123456789abcdef@{DOMAIN}"])
def test_the_smtp_envelope_sender_is_the_readers_return_path(smtp, return_path):
    recipient = Recipient(delivery_id=1, email="ann@example.net", values={}, headers={},
                          message_id="<m@example.com>", return_path=return_path)
    batch = Batch(from_email="Newsroom <news@example.com>", recipients=[recipient],
                  render=lambda r: b"Subject: hi\r\n\r\nhello\r\n")
    transport = SMTPTransport(SMTPBackend())
    assert [r.status for r in transport.send(batch)] == ["sent"]
    assert [m.mail_from for m in smtp.handler.messages] == [return_path or "news@example.com"]
