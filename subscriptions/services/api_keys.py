"""API keys for server-to-server calls: made, checked and revoked here only.

A key reads `nr_<prefix>_<secret>`. The full key exists once, in the answer to
`api_key_create` (the admin shows it then); afterwards only its prefix and a
SHA-256 of the secret are stored (`subscriptions.models.ApiKey` says why not a
password hash).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable

from django.utils import timezone

from subscriptions.models import ApiKey

logger = logging.getLogger(__name__)

KEY_START = "nr_"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_create(*, name: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
    """A new key and its full text, which is never available again."""
    prefix = secrets.token_hex(4)  # hex: no "_" to confuse the split in `api_key_check`
    secret = secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        name=name, prefix=prefix, secret_hash=_digest(secret), scopes=sorted(set(scopes)))
    logger.info("api key created", extra={"api_key": prefix})
    return key, f"{KEY_START}{prefix}_{secret}"


def api_key_revoke(*, key: ApiKey) -> bool:
    """Revoke a key for good; False if it already was."""
    changed = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now())
    if changed:
        logger.info("api key revoked", extra={"api_key": key.prefix})
    return bool(changed)


def api_key_check(full_key: str) -> ApiKey | None:
    """The live key `full_key` is, else None (unknown, forged or revoked alike).

    Counts the use in `last_used_at`, so the admin shows which keys are idle.
    """
    start, _, rest = full_key.partition(KEY_START)
    prefix, _, secret = rest.partition("_")
    if start or not prefix or not secret:
        return None
    key = ApiKey.objects.filter(prefix=prefix, revoked_at__isnull=True).first()
    # Compared in constant time even though the stored value is a digest: cheap insurance.
    if key is None or not hmac.compare_digest(key.secret_hash, _digest(secret)):
        return None
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
    return key
