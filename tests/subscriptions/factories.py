"""Small builders for subscription tests."""

from __future__ import annotations

import itertools
from datetime import timedelta

from django.utils import timezone

from newsroom.models import Category, Story
from subscriptions.models import Subscriber

_seq = itertools.count(1)


def category(slug: str | None = None, **fields) -> Category:
    slug = slug or f"topic-{next(_seq)}"
    defaults = {"name": slug.replace("-", " ").title(), "order": next(_seq)}
    defaults.update(fields)
    return Category.objects.get_or_create(slug=slug, defaults=defaults)[0]


def subscriber(email: str | None = None, *, categories=(), **fields) -> Subscriber:
    fields.setdefault("status", Subscriber.Status.ACTIVE)
    if fields["status"] == Subscriber.Status.ACTIVE:
        fields.setdefault("confirmed_at", timezone.now() - timedelta(days=30))
    sub = Subscriber.objects.create(email=email or f"reader{next(_seq)}@example.com", **fields)
    sub.categories.set(categories)
    return sub


def breaking_story(cat: Category, **fields) -> Story:
    """A published breaking story of `cat`, live a minute ago (an alert may go)."""
    fields.setdefault("headline", "Dam bursts upstream; towns evacuated")
    fields.setdefault("slug", f"story-{Story.objects.count() + 1}")
    fields.setdefault("body", "First paragraph of the story.\n\n## What we know\n\nMore text.")
    fields.setdefault("dek", "Thousands leave their homes as water rises.")
    fields.setdefault("breaking", True)
    fields.setdefault("published_at", timezone.now() - timedelta(minutes=1))
    return Story.objects.create(category=cat, status=Story.Status.PUBLISHED, **fields)
