"""Signed, expiring tokens for every link we put in an email.

A token names a subscriber and a purpose, never an address in the clear.
Each purpose has its own salt, so a confirm token cannot be replayed as an
unsubscribe token, and its own lifetime. SECRET_KEY_FALLBACKS keeps tokens
valid across a key rotation.

What a token holds (format 2). A signature alone hides nothing: Django's signed
value is readable base64. Format 1 carried `<subscriber id>.<sha256(address)>`,
so anyone holding a link read a sequential id (how many readers, who signed up
when) and could confirm a guessed address by hashing it. Format 2 carries 20
opaque bytes, a deterministic authenticated encryption of the id (the SIV
construction, built from the HMAC the signer already uses):

    tag = HMAC(k_tag, id ‖ address)[:12]   binds the address, keyed by the secret
    box = id XOR HMAC(k_pad, tag)[:8]      the id, encrypted under the tag as nonce

Chosen over a random per-subscriber public id because the send path mints two
tokens per recipient from (id, address) alone: a new column would have to be
read for every delivery, and the ids in tokens already sent would still need
this reader. Chosen over AES/Fernet because it needs nothing beyond the stdlib
HMAC, keeps tokens short (a List-Unsubscribe header each) and costs two HMACs.
The same (id, address) always gives the same 20 bytes: links reveal that they
are for the same reader, nothing else. Erasing (or re-addressing) a subscriber
changes the tag, which voids every link already sent.

Format 1 links are still accepted until they expire by their own lifetime
(confirm 7 days, preferences 90, unsubscribe 365): they are in inboxes, and
CAN-SPAM wants unsubscribe links to work for 30 days at least. Accepting them
reveals nothing they did not already show. Nothing mints format 1 any more, so
`_read_format_1` can go a year after the release that made format 2.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from dataclasses import dataclass, field
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


_FORMAT_1 = re.compile(r"([0-9]{1,19})\.([0-9a-f]{16})")  # "<id>.<sha256(address)[:16]>"
_FORMAT_2 = re.compile(r"[A-Za-z0-9_-]{27}")  # 20 bytes, base64url without padding
_TAG, _ID_BYTES = 12, 8


class TokenError(ValueError):
    """The link is not one of ours, or was altered."""


class TokenExpired(TokenError):
    """The link was ours but is too old."""


@dataclass(frozen=True)
class TokenClaim:
    """What a verified token says: which subscriber, and how to check the address."""

    subscriber_id: int
    purpose: Purpose
    tag: bytes  # format 2: HMAC of id and address
    secret: str | bytes = field(default="", repr=False)  # format 2: the key that verified it
    legacy_digest: str = ""  # format 1: unkeyed sha256 of the address


def _legacy_digest(email: str) -> str:
    return hashlib.sha256(email.encode()).hexdigest()[:16]


@lru_cache(maxsize=32)
def _seal_keys(secret: str | bytes, purpose: Purpose) -> tuple[bytes, bytes]:
    """The HMAC keys for the tag and the pad, derived once per secret and purpose
    as Django's salted_hmac derives its keys."""
    salt = f"newsroom.subscriptions.{purpose}"
    return (hashlib.sha256(force_bytes(f"{salt}.tag") + force_bytes(secret)).digest(),
            hashlib.sha256(force_bytes(f"{salt}.pad") + force_bytes(secret)).digest())


def _tag(secret: str | bytes, purpose: Purpose, subscriber_id: int, email: str) -> bytes:
    # The id is fixed-width, so (id, address) pairs cannot run into each other.
    message = subscriber_id.to_bytes(_ID_BYTES, "big") + email.encode()
    return hmac.digest(_seal_keys(secret, purpose)[0], message, "sha256")[:_TAG]


def _pad(secret: str | bytes, purpose: Purpose, tag: bytes) -> int:
    pad = hmac.digest(_seal_keys(secret, purpose)[1], tag, "sha256")[:_ID_BYTES]
    return int.from_bytes(pad, "big")


def _seal(secret: str | bytes, purpose: Purpose, subscriber_id: int, email: str) -> str:
    tag = _tag(secret, purpose, subscriber_id, email)
    box = subscriber_id ^ _pad(secret, purpose, tag)
    return base64.urlsafe_b64encode(tag + box.to_bytes(_ID_BYTES, "big")).decode()[:-1]


def _unseal(secret: str | bytes, purpose: Purpose, value: str) -> TokenClaim:
    try:
        raw = base64.urlsafe_b64decode(value + "=")
    except (binascii.Error, ValueError):
        raise TokenError("This link is not valid.") from None
    tag, box = raw[:_TAG], int.from_bytes(raw[_TAG:], "big")
    subscriber_id = box ^ _pad(secret, purpose, tag)
    return TokenClaim(subscriber_id=subscriber_id, purpose=purpose, tag=tag, secret=secret)


class _Signer(signing.TimestampSigner):
    """Django's TimestampSigner, token for token, at half the cost.

    Each stock signature goes through `salted_hmac`, which hashes salt + secret
    into a key and keys a new HMAC with it, and each timestamp is encoded anew;
    every list message carries two tokens, so both are per-recipient costs.
    Here the keyed HMAC is kept per (secret, salt, algorithm) and copied, and
    the timestamp encoded once a second. Keyed on the secret, so a changed
    SECRET_KEY (or a fallback) gets its own.
    """

    salt: str  # text, as Django's own signature() assumes (it appends "signer")

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
    # A short opaque value rather than sign_object's JSON + zlib: every list
    # message carries two tokens, so their cost is per recipient.
    return _signer(purpose).sign(_seal(settings.SECRET_KEY, purpose, subscriber_id, email))


def token_read(token: str, *, purpose: Purpose) -> TokenClaim:
    """The claim of a token we made for `purpose`; TokenError (or TokenExpired) if none.

    Each key is tried on its own (current first, then the fallbacks): the one
    whose signature verifies is also the one that sealed the id.
    """
    for secret in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS):
        try:
            value = _signer_for(purpose, secret, ()).unsign(token, max_age=LIFETIME[purpose])
        except signing.SignatureExpired as exc:
            raise TokenExpired("This link has expired.") from exc
        except signing.BadSignature:
            continue
        if _FORMAT_2.fullmatch(value):
            return _unseal(secret, purpose, value)
        return _read_format_1(value, purpose)
    raise TokenError("This link is not valid. It may have been cut short or altered.")


def _read_format_1(value: str, purpose: Purpose) -> TokenClaim:
    """A link sent before format 2 (see the module docstring); remove a year after it."""
    # ASCII digits and a bigint's length: str.isdigit() takes "١٢", and int()
    # refuses over 4,300 digits with a ValueError, which would be a 500.
    match = _FORMAT_1.fullmatch(value)
    if match is None:
        raise TokenError("This link is not valid.")
    return TokenClaim(subscriber_id=int(match[1]), purpose=purpose, tag=b"",
                      legacy_digest=match[2])


def token_matches(claim: TokenClaim, email: str) -> bool:
    """Whether the token was made for this address (erasure changes the address)."""
    if claim.legacy_digest:
        return hmac.compare_digest(claim.legacy_digest, _legacy_digest(email))
    expected = _tag(claim.secret, claim.purpose, claim.subscriber_id, email)
    return hmac.compare_digest(claim.tag, expected)
