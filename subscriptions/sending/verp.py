"""VERP: the envelope sender that tells us which delivery bounced.

Mail sent through our own SMTP relay goes out with the envelope sender (the
Return-Path the receiving side bounces to) `bounces+<token>@<bounce domain>`,
where the token names the delivery as (edition id, subscriber id), signed so
a forged bounce cannot suppress a stranger. A bounce then finds its reader
even when the report names no recipient, or one the receiving side rewrote
(a forward, an alias).

The token is `<edition>.<subscriber>.<signature>`: ids in base 36, the
signature the first 16 hex digits of django.core.signing's salted HMAC. All
lower case, because some MTAs fold the case of a local part; 64 bits of
signature, because a bounce address is no secret worth more and the local part
must stay under 64 characters. SECRET_KEY_FALLBACKS keeps tokens of mail
already out readable across a key rotation.
"""

from __future__ import annotations

from typing import NamedTuple

from django.conf import settings
from django.core import signing
from django.utils.crypto import salted_hmac

LOCAL_PREFIX = "bounces+"
SALT = "newsroom.bounce"
_SIGNATURE_DIGITS = 16
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


class BounceSigner(signing.Signer):
    """Django's Signer with a short, lower-case (hex) signature."""

    def signature(self, value: str | bytes, key: str | bytes | None = None) -> str:
        salt = self.salt if isinstance(self.salt, str) else self.salt.decode()
        mac = salted_hmac(salt + "signer", value, key or self.key, algorithm="sha256")
        return mac.hexdigest()[:_SIGNATURE_DIGITS]


class Delivery(NamedTuple):
    edition_id: int
    subscriber_id: int


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = _DIGITS[digit] + digits
        if not number:
            return digits


def bounce_token(*, edition_id: int, subscriber_id: int) -> str:
    value = f"{_base36(edition_id)}.{_base36(subscriber_id)}"
    return BounceSigner(salt=SALT, sep=".").sign(value)


def bounce_address(*, edition_id: int, subscriber_id: int) -> str:
    """The envelope sender for one delivery, or "" when VERP is off."""
    domain = settings.NEWSROOM_BOUNCE_DOMAIN
    if not domain:
        return ""
    token = bounce_token(edition_id=edition_id, subscriber_id=subscriber_id)
    return f"{LOCAL_PREFIX}{token}@{domain}"


def bounce_token_read(address: str) -> Delivery | None:
    """The delivery a bounce address names; None if it is not one of ours or
    its signature does not check (forged, or signed with a retired key)."""
    ours = settings.NEWSROOM_BOUNCE_DOMAIN
    local, _, domain = address.strip().strip("<>").lower().rpartition("@")
    if not ours or domain != ours or not local.startswith(LOCAL_PREFIX):
        return None
    try:
        value = BounceSigner(salt=SALT, sep=".").unsign(local.removeprefix(LOCAL_PREFIX))
        edition, subscriber = (int(part, 36) for part in value.split("."))
    except (signing.BadSignature, ValueError):
        return None
    return Delivery(edition, subscriber)
