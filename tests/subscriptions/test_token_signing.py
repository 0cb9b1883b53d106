"""Link tokens stay Django TimestampSigner tokens, byte for byte.

subscriptions.tokens keeps each keyed HMAC instead of deriving it per token;
tokens in emails already sent (made by the stock signer) must still verify,
and tokens made now must verify with the stock signer, across key rotations.
The signed value is format 2's sealed id (`_seal`); format 1 values, made by
the stock signer before it, are in tests/subscriptions/test_token_privacy.py.
"""

from unittest import mock

import pytest
from django.conf import settings
from django.core import signing
from django.test import override_settings

from subscriptions.tokens import Purpose, TokenError, _seal, token_make, token_read

OLD_KEY = "the-old-secret-key-" + "o" * 40
NEW_KEY = "the-new-secret-key-" + "n" * 40


def stock_signer(purpose: Purpose, **kwargs) -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=f"newsroom.subscriptions.{purpose}", **kwargs)


def value(purpose: Purpose, subscriber_id: int = 42, email: str = "a@example.com") -> str:
    return _seal(settings.SECRET_KEY, purpose, subscriber_id, email)


def stock_token(purpose: Purpose, subscriber_id: int = 42, email: str = "a@example.com") -> str:
    return stock_signer(purpose).sign(value(purpose, subscriber_id, email))


@pytest.mark.parametrize("purpose", list(Purpose))
def test_the_same_token_as_the_stock_signer(purpose):
    with mock.patch("django.core.signing.time.time", return_value=1_800_000_000.5):
        ours = token_make(subscriber_id=42, email="a@example.com", purpose=purpose)
        assert ours == stock_token(purpose)


@pytest.mark.parametrize("purpose", list(Purpose))
def test_stock_tokens_verify_and_ours_verify_with_the_stock_signer(purpose):
    assert token_read(stock_token(purpose), purpose=purpose).subscriber_id == 42
    ours = token_make(subscriber_id=42, email="a@example.com", purpose=purpose)
    assert stock_signer(purpose).unsign(ours) == value(purpose)
    with pytest.raises(signing.BadSignature):  # the salt still binds the purpose
        stock_signer(Purpose.CONFIRM if purpose != Purpose.CONFIRM else Purpose.MANAGE
                     ).unsign(ours)


def test_tokens_of_a_rotated_key_verify_both_ways():
    with override_settings(SECRET_KEY=OLD_KEY, SECRET_KEY_FALLBACKS=[]):
        sent_by_stock = stock_token(Purpose.UNSUBSCRIBE)  # sealed with the old key too
        sent_by_us = token_make(subscriber_id=42, email="a@example.com",
                                purpose=Purpose.UNSUBSCRIBE)
    with override_settings(SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[OLD_KEY]):
        assert token_read(sent_by_stock, purpose=Purpose.UNSUBSCRIBE).subscriber_id == 42
        assert stock_signer(Purpose.UNSUBSCRIBE).unsign(sent_by_us)
    with override_settings(SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[]):
        for token in (sent_by_stock, sent_by_us):
            with pytest.raises(TokenError):
                token_read(token, purpose=Purpose.UNSUBSCRIBE)


def test_a_changed_secret_key_signs_with_the_new_key():
    """Kept keyed HMACs are per secret: a new SECRET_KEY never signs with the old one."""
    at = mock.patch("django.core.signing.time.time", return_value=1_800_000_000)
    with at, override_settings(SECRET_KEY=OLD_KEY, SECRET_KEY_FALLBACKS=[]):
        old = token_make(subscriber_id=1, email="a@example.com", purpose=Purpose.MANAGE)
    with at, override_settings(SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[]):
        new = token_make(subscriber_id=1, email="a@example.com", purpose=Purpose.MANAGE)
        assert new != old
        assert new == stock_signer(Purpose.MANAGE).sign(value(Purpose.MANAGE, 1))
        assert stock_signer(Purpose.MANAGE, key=OLD_KEY).unsign(old)
        with pytest.raises(TokenError):
            token_read(old, purpose=Purpose.MANAGE)
