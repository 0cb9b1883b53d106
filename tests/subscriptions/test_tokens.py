"""Signed link tokens: purpose-bound, expiring, tied to the address."""

import time
from unittest import mock

import pytest
from django.test import override_settings

from subscriptions.tokens import (
    LIFETIME,
    Purpose,
    TokenError,
    TokenExpired,
    token_make,
    token_matches,
    token_read,
)


def test_round_trip_and_address_binding():
    token = token_make(subscriber_id=42, email="ann@example.com", purpose=Purpose.MANAGE)
    claim = token_read(token, purpose=Purpose.MANAGE)
    assert claim.subscriber_id == 42
    assert token_matches(claim, "ann@example.com")
    assert not token_matches(claim, "erased-42@invalid.example")
    assert "ann" not in token and "example" not in token  # the address never appears


def test_a_token_works_only_for_its_purpose():
    token = token_make(subscriber_id=1, email="a@example.com", purpose=Purpose.CONFIRM)
    with pytest.raises(TokenError):
        token_read(token, purpose=Purpose.UNSUBSCRIBE)


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
    lambda t: "X" + t[1:],
    lambda t: t[: len(t) // 2],
    lambda t: "",
    lambda t: "not-a-token",
])
def test_tampered_tokens_are_refused(mangle):
    token = token_make(subscriber_id=1, email="a@example.com", purpose=Purpose.UNSUBSCRIBE)
    with pytest.raises(TokenError):
        token_read(mangle(token), purpose=Purpose.UNSUBSCRIBE)


@pytest.mark.parametrize("purpose", list(Purpose))
def test_tokens_expire_after_their_lifetime(purpose):
    token = token_make(subscriber_id=1, email="a@example.com", purpose=purpose)
    later = time.time() + LIFETIME[purpose].total_seconds() + 5
    with mock.patch("django.core.signing.time.time", return_value=later), \
            pytest.raises(TokenExpired):
        token_read(token, purpose=purpose)
    nearly = time.time() + LIFETIME[purpose].total_seconds() - 60
    with mock.patch("django.core.signing.time.time", return_value=nearly):
        assert token_read(token, purpose=purpose).subscriber_id == 1


def test_unsubscribe_links_live_at_least_sixty_days():
    assert LIFETIME[Purpose.UNSUBSCRIBE].days >= 60
    assert LIFETIME[Purpose.CONFIRM].days == 7


def test_tokens_survive_a_secret_key_rotation(settings):
    token = token_make(subscriber_id=7, email="a@example.com", purpose=Purpose.UNSUBSCRIBE)
    with override_settings(SECRET_KEY="a-brand-new-key-" + "x" * 40,
                           SECRET_KEY_FALLBACKS=[settings.SECRET_KEY]):
        assert token_read(token, purpose=Purpose.UNSUBSCRIBE).subscriber_id == 7
    with override_settings(SECRET_KEY="a-brand-new-key-" + "x" * 40, SECRET_KEY_FALLBACKS=[]), \
            pytest.raises(TokenError):
        token_read(token, purpose=Purpose.UNSUBSCRIBE)
