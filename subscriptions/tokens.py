"""Signed, expiring tokens for every link we put in an email.

A token names a subscriber and a purpose, never an address in the clear.
Each purpose has its own salt, so a confirm token cannot be replayed as an
unsubscribe token, and its own lifetime. The subscriber's e-mail address is
folded into the signature, so erasing (or re-addressing) a subscriber voids the
links already sent. SECRET_KEY_FALLBACKS keeps tokens valid across a key
rotation.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from functools import lru_cache

from django.conf import settings
from django.core import signing
from django.utils.encoding import force_bytes


class Purpose(StrEnum):
    CONFIRM = "confirm"
    MANAGE = "manage"
    UNSUBSCRIBE = "unsubscribe"


LIFETIME = {
    Purpose.CONFIRM: timedelta(days=7),
    Purpose.MANAGE: timedelta(days=90),
    # CAN-SPAM wants 30 days, we promise 60; a year costs nothing.
    Purpose.UNSUBSCRIBE: timedelta(days=365),
}


_ID = re.compile(r"[0-9]{1,19}")


class TokenError(ValueError):
    """The link is not one of ours, or was altered."""


class TokenExpired(TokenError):
    """The link was ours but is too old."""


@dataclass(frozen=True)
class TokenClaim:
    subscriber_id: int
    email_digest: str


def _digest(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()[:16]


class _Signer(signing.TimestampSigner):
    """Django's TimestampSigner, token for token, at half the cost.

    Each stock signature goes through `salted_hmac`, which hashes salt + secret
    into a key and keys a new HMAC with it, and each timestamp is encoded anew;
    every list message carries two tokens, so both are per-recipient costs.
    Here the keyed HMAC is kept per (secret, salt, algorithm) and copied, and
    the timestamp encoded once a second. Keyed on the secret, so a changed
    SECRET_KEY (or a fallback) gets its own.
    """

    def timestamp(self) -> str:
        return _b62(int(time.time()))

    def signature(self, value: str | bytes, key: str | bytes | None = None) -> str:
        mac = _keyed_hmac(key or self.key, self.salt + "signer", self.algorithm).copy()
        mac.update(force_bytes(value))
        return signing.b64_encode(mac.digest()).decode()


@lru_cache(maxsize=1)
def _b62(seconds: int) -> str:
    """The timestamp, encoded once a second rather than once a token."""
    return signing.b62_encode(seconds)


@lru_cache(maxsize=32)
def _keyed_hmac(secret: str | bytes, key_salt: str, algorithm: str) -> hmac.HMAC:
    """What `salted_hmac(key_salt, value, secret)` builds before it reads `value`."""
    hasher = getattr(hashlib, algorithm)
    return hmac.new(hasher(force_bytes(key_salt) + force_bytes(secret)).digest(),
                    digestmod=hasher)


def _signer(purpose: Purpose) -> signing.TimestampSigner:
    return _signer_for(purpose, settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS))


@lru_cache(maxsize=32)
def _signer_for(purpose: Purpose, key: str | bytes, fallback_keys: tuple) -> _Signer:
    """Made once per purpose and keys: building a Signer costs as much as signing."""
    return _Signer(key=key, fallback_keys=list(fallback_keys),
                   salt=f"newsroom.subscriptions.{purpose}")


def token_make(*, subscriber_id: int, email: str, purpose: Purpose) -> str:
    # A plain "<id>.<digest>" value rather than sign_object's JSON + zlib: every
    # list message carries two tokens, so their cost is per recipient.
    return _signer(purpose).sign(f"{subscriber_id}.{_digest(email)}")


def token_read(token: str, *, purpose: Purpose) -> TokenClaim:
    try:
        value = _signer(purpose).unsign(token, max_age=LIFETIME[purpose])
    except signing.SignatureExpired as exc:
        raise TokenExpired("This link has expired.") from exc
    except signing.BadSignature as exc:
        raise TokenError("This link is not valid. It may have been cut short or altered.") from exc
    subscriber_id, _, digest = value.partition(".")
    # ASCII digits and a bigint's length: str.isdigit() takes "١٢", and int()
    # refuses over 4,300 digits with a ValueError, which would be a 500.
    if not _ID.fullmatch(subscriber_id) or not digest:
        raise TokenError("This link is not valid.")
    return TokenClaim(subscriber_id=int(subscriber_id), email_digest=digest)


def token_matches(claim: TokenClaim, email: str) -> bool:
    return claim.email_digest == _digest(email)
