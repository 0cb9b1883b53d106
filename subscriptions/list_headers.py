"""The list headers every digest and alert carries (RFC 2369, 2919, 8058).

One place builds them so that every list email — whatever sends it — offers
the same one-click unsubscribe that Gmail and Yahoo require of bulk senders.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import quote, urlsplit

from django.conf import settings
from django.urls import reverse

from subscriptions.tokens import Purpose, token_make


@lru_cache(maxsize=8)
def _url_around_token(view: str, site_url: str) -> tuple[str, str]:
    # reverse() once, not once per recipient: the URL is fixed around the token.
    before, _, after = reverse(view, args=["TOKEN"]).partition("TOKEN")
    return site_url + before, after


def unsubscribe_url(*, subscriber_id: int, email: str) -> str:
    token = token_make(subscriber_id=subscriber_id, email=email, purpose=Purpose.UNSUBSCRIBE)
    before, after = _url_around_token("subscriptions:unsubscribe", settings.SITE_URL)
    return before + token + after


def manage_url(*, subscriber_id: int, email: str) -> str:
    token = token_make(subscriber_id=subscriber_id, email=email, purpose=Purpose.MANAGE)
    before, after = _url_around_token("subscriptions:manage", settings.SITE_URL)
    return before + token + after


def list_id(list_key: str) -> str:
    """`List-Id` from an immutable key, so renaming a category keeps the id."""
    host = urlsplit(settings.SITE_URL).hostname
    return f"{settings.NEWSROOM_NAME} <{list_key}.lists.{host}>"


@lru_cache(maxsize=8)
def _mailto(address: str) -> str:
    return f"mailto:{quote(address, safe='@+')}?subject=unsubscribe"


def list_unsubscribe(url: str) -> str:
    """The `List-Unsubscribe` value: the one-click https URL first (RFC 8058 wants
    https; mail programs try the URIs in order), then a mailto (RFC 2369) for
    programs that offer only that. The mailto unsubscribes only where an inbound
    route for NEWSROOM_UNSUBSCRIBE_MAILTO exists; the URL always does."""
    mailto = settings.NEWSROOM_UNSUBSCRIBE_MAILTO
    return f"<{url}>, <{_mailto(mailto)}>" if mailto else f"<{url}>"


def list_headers(*, subscriber_id: int, email: str, list_key: str) -> dict[str, str]:
    url = unsubscribe_url(subscriber_id=subscriber_id, email=email)
    return {
        "List-Id": list_id(list_key),
        "List-Unsubscribe": list_unsubscribe(url),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Post": "NO",
    }
