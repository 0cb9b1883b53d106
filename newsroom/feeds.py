"""RSS 2.0 and Atom feeds of live stories: all of them, and per category.

Django's syndication framework writes the XML (escaping, dates in RFC 822 and
RFC 3339, `<atom:link rel="self">`), so this module only says what goes in.
Links are absolute on SITE_URL, not on the request's Host header, so a feed
fetched through a proxy or a cache names the public site. Only live stories
appear, exactly as on the pages; drafts and scheduled stories never leak.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.contrib.syndication.views import Feed
from django.http import Http404, HttpRequest
from django.urls import reverse
from django.utils.feedgenerator import Atom1Feed, Rss201rev2Feed, SyndicationFeed

from newsroom import selectors
from newsroom.models import Category, Story

FEED_ITEMS = 30  # a feed reader polls often; a month of back issues is what the site is for


class _StoryFeed(Feed):
    """The latest live stories; subclasses narrow them to a category."""

    feed_type: type[SyndicationFeed] = Rss201rev2Feed

    def get_object(self, request: HttpRequest, *args: object, **kwargs: object) -> Category | None:
        return None

    def title(self, obj: Category | None) -> str:
        if obj is None:
            return settings.NEWSROOM_NAME
        return f"{obj.name} \N{EN DASH} {settings.NEWSROOM_NAME}"

    def link(self, obj: Category | None) -> str:
        path = reverse("newsroom:index") if obj is None else obj.get_absolute_url()
        return settings.SITE_URL + path

    def description(self, obj: Category | None) -> str:
        if obj is not None and obj.description:
            return obj.description
        what = "stories" if obj is None else f"{obj.name} stories"
        return f"The latest {what} from {settings.NEWSROOM_NAME}."

    def feed_url(self, obj: Category | None) -> str:
        return settings.SITE_URL + self._self_path(obj)

    def _self_path(self, obj: Category | None) -> str:
        atom = self.feed_type is Atom1Feed
        if obj is None:
            return reverse("newsroom:feed_atom" if atom else "newsroom:feed")
        name = "newsroom:category_feed_atom" if atom else "newsroom:category_feed"
        return reverse(name, args=[obj.slug])

    def items(self, obj: Category | None) -> list[Story]:
        return list(selectors.story_list_live(category=obj)[:FEED_ITEMS])

    def item_title(self, item: Story) -> str:
        return item.headline

    def item_description(self, item: Story) -> str:
        return item.dek

    def item_link(self, item: Story) -> str:
        return settings.SITE_URL + item.get_absolute_url()

    def item_guid(self, item: Story) -> str:
        return self.item_link(item)

    item_guid_is_permalink = True

    def item_pubdate(self, item: Story) -> datetime | None:
        return item.published_at

    def item_updateddate(self, item: Story) -> datetime:
        return item.updated_at

    def item_categories(self, item: Story) -> list[str]:
        return [item.category.name]


class _CategoryMixin:
    def get_object(self, request: HttpRequest, *args: object, **kwargs: object) -> Category:
        try:
            return selectors.category_get(slug=str(kwargs["slug"]))
        except Category.DoesNotExist:
            raise Http404("No such category.") from None


class _Atom:
    feed_type: type[SyndicationFeed] = Atom1Feed

    def subtitle(self, obj: Category | None) -> str:
        return _StoryFeed.description(self, obj)  # type: ignore[arg-type]


class LatestStoriesFeed(_StoryFeed):
    """/feed/: every live story, newest first (RSS 2.0)."""


class LatestStoriesAtomFeed(_Atom, _StoryFeed):
    """/feed/atom/: the same as Atom."""


class CategoryFeed(_CategoryMixin, _StoryFeed):
    """/categories/<slug>/feed/: one category's live stories (RSS 2.0)."""


class CategoryAtomFeed(_CategoryMixin, _Atom, _StoryFeed):
    """/categories/<slug>/feed/atom/: the same as Atom."""
