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
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from django.core import signing


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


def _signer(purpose: Purpose) -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=f"newsroom.subscriptions.{purpose}")


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
    if not subscriber_id.isdigit() or not digest:
        raise TokenError("This link is not valid.")
    return TokenClaim(subscriber_id=int(subscriber_id), email_digest=digest)


def token_matches(claim: TokenClaim, email: str) -> bool:
    return claim.email_digest == _digest(email)
