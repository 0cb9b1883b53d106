"""Signed redirect links (`/r/<token>`): how an edition learns which stories are read.

When NEWSROOM_CLICK_TRACKING is on, the links to stories in an edition's
content (and the links in an alert's story body) lead through
`SITE_URL/r/<token>`; the token is signed and carries the edition id, the story
id and the target URL. A content is built once for all its readers, so the
link is the same for everyone: it counts clicks per edition, story and link,
never per person. The redirect goes only where a token made here says (not an
open redirect), and only to http(s).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.core import signing
from django.urls import reverse

_SIGNER = signing.Signer(salt="newsroom.subscriptions.click")
SCHEMES = ("http", "https")
_HREF = re.compile(r'(<a\b[^>]*?\shref=")([^"]*)(")')


class LinkRefused(ValueError):
    """A token names a URL the redirect must not lead to."""


@dataclass(frozen=True)
class Click:
    """What a redirect link names."""

    edition_id: int
    story_id: int
    url: str

    def token(self) -> str:
        # No timestamp (a link in a mail works for good): the same link, the same token.
        return _SIGNER.sign_object([self.edition_id, self.story_id, self.url], compress=True)

    @classmethod
    def from_token(cls, token: str) -> Click:
        """Raises signing.BadSignature for a token not made by token(), LinkRefused for
        a URL that is not http(s) (ValueError/TypeError for a malformed payload)."""
        edition_id, story_id, url = _SIGNER.unsign_object(token)
        if not isinstance(url, str) or not _is_web(url):
            raise LinkRefused(f"not an http(s) URL: {url!r}")
        return cls(int(edition_id), int(story_id), url)


def _is_web(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in SCHEMES and bool(parts.netloc)


def tracked(edition_id: int, story_id: int, url: str) -> str:
    """`url` as an edition's readers get it: through the redirect when tracking is on.

    Edition 0 (a preview before there is an edition) and non-web URLs stay as
    they are: nothing to count them against.
    """
    if not settings.NEWSROOM_CLICK_TRACKING or not edition_id or not _is_web(url):
        return url
    token = Click(edition_id, story_id, url).token()
    return settings.SITE_URL + reverse("subscriptions:click", args=[token])


def tracked_html(edition_id: int, story_id: int, body: str) -> str:
    """A story body's HTML with each http(s) link through the redirect."""
    if not settings.NEWSROOM_CLICK_TRACKING or not edition_id:
        return body

    def link(match: re.Match) -> str:
        url = tracked(edition_id, story_id, html.unescape(match.group(2)))
        return match.group(1) + html.escape(url) + match.group(3)

    return _HREF.sub(link, body)
