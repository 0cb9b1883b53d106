"""What an edition says: rendered once per distinct content, never per reader.

An alert has one content. A digest has one per distinct (window, categories)
combination among its recipients: a few hundred at most, however many
subscribers. Each content is rendered from the stories' cached HTML into
subject, text and CSS-inlined HTML with holes (see `mime.hole`) for the few
per-recipient values, and kept in a small per-process cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import css_inline
from django.conf import settings
from django.core import signing
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.text import Truncator

from newsroom.models import Category, Story
from newsroom.rendering import html_to_text

# Gmail clips messages whose HTML passes ~102 KB and hides the footer with the
# unsubscribe link; keep well below.
MAX_HTML_BYTES = 100_000
MAX_DIGEST_STORIES_PER_CATEGORY = 12
_VIEW_SALT = "newsroom.subscriptions.view-edition"
_inliner = css_inline.CSSInliner(keep_at_rules=True)


@dataclass(frozen=True)
class Content:
    subject: str
    preheader: str
    text: str  # with holes: email, manage_url, unsubscribe_url
    html: str
    list_key: str  # List-Id: alerts per category, digests per frequency
    story_ids: tuple[int, ...]


@dataclass(frozen=True)
class ViewKey:
    """What a "view in browser" link names: an edition and, for a digest, its variant."""

    edition_id: int
    window_start: datetime | None = None
    category_ids: tuple[int, ...] = ()

    def token(self) -> str:
        start = self.window_start.isoformat() if self.window_start else None
        return signing.dumps([self.edition_id, start, list(self.category_ids)],
                             salt=_VIEW_SALT, compress=True)

    @classmethod
    def from_token(cls, token: str) -> ViewKey:
        """Raises signing.BadSignature (or ValueError) for anything not made by token()."""
        edition_id, start, category_ids = signing.loads(token, salt=_VIEW_SALT)
        return cls(int(edition_id), datetime.fromisoformat(start) if start else None,
                   tuple(int(c) for c in category_ids))

    def url(self) -> str:
        return settings.SITE_URL + reverse("subscriptions:edition_view", args=[self.token()])


def variant_key(window_start: datetime | None, category_ids: Sequence[int]) -> str:
    """A short stable name for one digest content."""
    raw = f"{window_start.isoformat() if window_start else '-'}|{sorted(category_ids)}"
    return hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()[:16]


def _base_context(view: ViewKey) -> dict:
    return {
        "site_name": settings.NEWSROOM_NAME,
        "site_url": settings.SITE_URL,
        "postal_address": settings.NEWSROOM_POSTAL_ADDRESS,
        "view_url": view.url(),
    }


def _finish(template: str, context: dict, *, list_key: str, story_ids: tuple[int, ...],
            preheader: str) -> Content:
    context["preheader"] = preheader
    subject = " ".join(render_to_string(f"{template}.subject.txt", context).split())
    context["subject"] = subject
    html = _inliner.inline(render_to_string(f"{template}.html", context))
    if len(html.encode()) > MAX_HTML_BYTES:
        raise ValueError(f"{template} HTML is {len(html.encode())} bytes, over {MAX_HTML_BYTES}")
    text = render_to_string(f"{template}.txt", context)
    return Content(subject=subject, preheader=preheader, text=text, html=html,
                   list_key=list_key, story_ids=story_ids)


def _preheader(text: str) -> str:
    return Truncator(" ".join(text.split())).chars(100)


@lru_cache(maxsize=64)
def alert_content(edition_id: int, story_id: int, updated_at: datetime) -> Content:
    """The alert for one story (cached per story version)."""
    story = Story.objects.select_related("category").get(pk=story_id)
    context = _base_context(ViewKey(edition_id))
    context.update(
        story=story,
        story_url=settings.SITE_URL + story.get_absolute_url(),
        body_html=story.body_html,
        body_text=story.body_text,
    )
    return _finish(
        "subscriptions/editions/alert", context, list_key=f"alerts.{story.category.slug}",
        story_ids=(story.pk,), preheader=_preheader(story.dek or story.body_text),
    )


def story_summary(story: Story) -> str:
    if story.dek:
        return story.dek
    return Truncator(" ".join(html_to_text(story.body_html).split())).words(40)


def digest_content(
    edition_id: int, window_start: datetime | None, frequency: str, stories: Sequence[Story],
    categories: Sequence[Category],
) -> Content:
    """One digest content: the stories grouped by category in category order."""
    by_category: dict[int, list[Story]] = {}
    for story in sorted(stories, key=lambda s: s.published_at, reverse=True):
        by_category.setdefault(story.category_id, []).append(story)
    sections = []
    for category in sorted(categories, key=lambda c: (c.order, c.name)):
        picked = by_category.get(category.pk, [])[:MAX_DIGEST_STORIES_PER_CATEGORY]
        if picked:
            sections.append((category, [
                {"headline": s.headline, "summary": story_summary(s),
                 "url": settings.SITE_URL + s.get_absolute_url()}
                for s in picked
            ]))
    included = tuple(s.pk for s in stories if s.category_id in {c.pk for c, _ in sections})
    lead = sections[0][1][0]
    view = ViewKey(edition_id, window_start, tuple(sorted(c.pk for c in categories)))
    context = _base_context(view)
    context.update(
        sections=sections, lead=lead, story_count=sum(len(items) for _, items in sections),
        frequency_label="Weekly" if frequency == "weekly" else "Daily",
    )
    return _finish(
        "subscriptions/editions/digest", context, list_key=f"digest.{frequency}",
        story_ids=included,
        preheader=_preheader(" · ".join(item["headline"] for _, items in sections
                                          for item in items)),
    )

