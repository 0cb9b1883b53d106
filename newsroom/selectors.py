"""Read queries for the public pages.

Each selector fetches what its page shows in a fixed number of queries
(select_related / prefetch_related), so page cost does not grow with content.
"""

from __future__ import annotations

from django.db.models import QuerySet

from newsroom.models import Category, Story


def story_list_live(*, category: Category | None = None) -> QuerySet[Story]:
    """Live stories, newest first, optionally of one category."""
    stories = Story.objects.live().select_related("category")
    if category is not None:
        stories = stories.filter(category=category)
    return stories


def story_get_live(*, slug: str) -> Story:
    """A live story with its category and sources; raises Story.DoesNotExist
    for drafts and scheduled stories as for unknown slugs, so they stay unseen."""
    return (
        Story.objects.live()
        .select_related("category")
        .prefetch_related("sources")
        .get(slug=slug)
    )


def category_get(*, slug: str) -> Category:
    """A category by slug; raises Category.DoesNotExist."""
    return Category.objects.get(slug=slug)


def category_list() -> QuerySet[Category]:
    """All categories in editorial order, for navigation."""
    return Category.objects.only("name", "slug", "order")
