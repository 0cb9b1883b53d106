"""Digest contents composed from cached sections equal a whole-template render.

`reference_digest` renders a digest the plain way: each section by its
template, the digest templates around them, CSS inlined over the whole page.
The composed digest must be byte-identical to it, for any mix of categories,
windows and awkward text (markup characters, non-ASCII, no dek, long lists).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import pytest
from django.conf import settings
from django.core import signing
from django.template.loader import render_to_string
from django.test.signals import template_rendered
from django.utils.safestring import mark_safe

from newsroom.models import Category, Story
from subscriptions.mail_look import look, strip_bidi
from subscriptions.sending import content
from subscriptions.sending.content import (
    Content,
    Heading,
    ViewKey,
    digest_content,
    story_summary,
)
from subscriptions.sending.links import tracked
from tests.subscriptions.factories import category

pytestmark = pytest.mark.django_db

END = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


def reference_digest(
    edition_id: int, window_start: datetime | None, frequency: str, stories: Sequence[Story],
    categories: Sequence[Category], issue_date: date | None = None,
) -> Content:
    """The whole-template rendering, with nothing cached."""
    cap = settings.NEWSROOM_DIGEST_MAX_PER_CATEGORY
    by_category: dict[int, list[Story]] = {}
    for story in sorted(stories, key=lambda s: s.published_at, reverse=True):
        by_category.setdefault(story.category_id, []).append(story)
    sections = []
    for cat in sorted(categories, key=lambda c: (c.order, c.name)):
        found = by_category.get(cat.pk, [])
        if found:
            heading = Heading(cat.name, f"section-{cat.slug}",
                              settings.SITE_URL + cat.get_absolute_url(), max(0, len(found) - cap))
            sections.append((heading, [
                {"headline": strip_bidi(s.headline), "summary": story_summary(s),
                 "url": tracked(edition_id, s.pk, settings.SITE_URL + s.get_absolute_url())}
                for s in found[:cap]
            ]))
    included = tuple(s.pk for s in stories if s.category_id in {c.pk for c in categories
                                                                if c.pk in by_category})
    view = ViewKey(edition_id, window_start, tuple(sorted(c.pk for c in categories)))
    context = {
        **look(), "view_url": view.url(),
        "hole": content._HOLES, "lead": sections[0][1][0],
        "story_count": sum(len(items) + h.more for h, items in sections),
        "frequency_label": "Weekly" if frequency == "weekly" else "Daily",
        "issue_date": f"{issue_date:%A} {issue_date.day} {issue_date:%B %Y}" if issue_date else "",
        "contents": [{"name": h.name, "anchor": h.anchor, "count": len(items) + h.more}
                     for h, items in sections],
    }
    template = "subscriptions/editions/digest"
    section = "subscriptions/editions/_digest_section"
    preheader = content._preheader(
        " · ".join(item["headline"] for _, items in sections for item in items))
    context["preheader"] = preheader
    subject = " ".join(render_to_string(f"{template}.subject.txt", context).split())
    context["subject"] = subject
    html_sections, text_sections = zip(*(
        (render_to_string(f"{section}.html", {"category": heading, "stories": items}),
         render_to_string(f"{section}.txt", {"category": heading, "stories": items}))
        for heading, items in sections), strict=True)
    html = content._inliner.inline(render_to_string(
        f"{template}.html", {**context, "sections": mark_safe("".join(html_sections))}))  # noqa: S308
    text = render_to_string(f"{template}.txt", {**context, "sections": "\n".join(text_sections)})
    return Content(subject=subject, preheader=preheader, text=text, html=html,
                   list_key=f"digest.{frequency}", story_ids=included)


def publish(cat: Category, headline: str, hours_ago: float, **fields) -> Story:
    fields.setdefault("dek", f"What {headline.lower()} means.")
    return Story.objects.create(
        headline=headline, slug=f"s-{Story.objects.count() + 1}", category=cat,
        body=fields.pop("body", f"{headline} in *detail*.\n\nA second paragraph & more."),
        status=Story.Status.PUBLISHED, published_at=END - timedelta(hours=hours_ago), **fields,
    )


@pytest.fixture
def newsdesk() -> list[Category]:
    """Categories with awkward names and stories: markup characters, quotes, non-ASCII,
    no dek, more stories than a section holds, and one category with no stories."""
    world = category("world", name="World & Europe", order=1)
    tech = category("tech", name="Tech <AI>", order=2)
    sport = category("sport", name="Sport", order=2)  # same order: then by name
    culture = category("culture", name='Culture "Kultur" — Ünïcödé', order=3)
    quiet = category("quiet", name="Quiet", order=4)
    publish(world, "Summit ends without a deal", 2)
    publish(world, "Ministers' talks & the <veto>", 5, dek="")
    publish(world, "Élection: résultats", 30)
    for i in range(settings.NEWSROOM_DIGEST_MAX_PER_CATEGORY + 3):
        publish(tech, f"Chip story {i}: 5 > 3 \"quoted\"", 1 + i)
    publish(sport, "Final score", 3, dek="Late goal settles it — 2:1.")
    publish(culture, "Museum reopens", 4, body="", dek="")
    return [world, tech, sport, culture, quiet]


def windows() -> list[datetime | None]:
    return [END - timedelta(days=1), END - timedelta(hours=4), END - timedelta(days=7)]


@pytest.fixture
def frozen_signing(monkeypatch: pytest.MonkeyPatch) -> None:
    """"View in browser" tokens carry a timestamp: the same second for both renders."""
    monkeypatch.setattr(signing.time, "time", lambda: 1_790_000_000.0)


def test_composed_digests_equal_whole_renders(newsdesk, frozen_signing):
    stories = list(Story.objects.select_related("category"))
    combos = [c for n in (1, 2, 3, 5) for c in itertools.combinations(newsdesk, n)]
    checked = 0
    for window_start, combo in itertools.product(windows(), combos):
        picked = [s for s in stories
                  if s.category in combo and s.published_at > window_start]
        if not picked:
            continue
        for frequency, day in (("daily", None), ("weekly", END.date())):
            expected = reference_digest(7, window_start, frequency, picked, combo, day)
            assert digest_content(7, window_start, frequency, picked, combo, day) == expected
            checked += 1
    assert checked > 100


def test_each_section_is_rendered_once_however_many_digests_show_it(newsdesk):
    passes: list[str] = []

    def counted(sender, template, context, **kwargs):
        if template.name.startswith("subscriptions/editions/_digest_section."):
            passes.append(context["category"].name)

    content._cache.clear()  # nothing rendered yet
    template_rendered.connect(counted)
    try:
        stories = list(Story.objects.select_related("category"))
        with_news = [c for c in newsdesk if any(s.category == c for s in stories)]
        window_start = END - timedelta(days=7)
        for combo in itertools.chain.from_iterable(
                itertools.combinations(newsdesk, n) for n in range(1, len(newsdesk) + 1)):
            if set(combo) & set(with_news):
                digest_content(7, window_start, "daily", stories, combo)
    finally:
        template_rendered.disconnect(counted)
    assert sorted(passes) == sorted(c.name for c in with_news for _template in ("html", "txt"))


def test_a_story_edited_after_its_section_was_rendered_shows_the_edit(newsdesk, frozen_signing):
    world = newsdesk[0]
    window_start = END - timedelta(days=1)

    def render() -> Content:
        stories = list(Story.objects.filter(category=world).select_related("category"))
        digest = digest_content(7, window_start, "daily", stories, [world])
        assert digest == reference_digest(7, window_start, "daily", stories, [world])
        return digest

    assert "Summit ends without a deal" in render().html
    # A queryset update leaves updated_at alone: the cache must not rely on it.
    Story.objects.filter(headline="Summit ends without a deal").update(headline="Summit: a deal")
    digest = render()
    assert "Summit: a deal" in digest.text and "Summit ends" not in digest.html
    Category.objects.filter(pk=world.pk).update(name="World")
    world.refresh_from_db()
    assert "WORLD\n" in render().text


def test_a_long_section_says_how_many_more_in_each_readers_window(settings, frozen_signing):
    """Past NEWSROOM_DIGEST_MAX_PER_CATEGORY a section ends with "And N more in <category>",
    N counted in the reader's own window: two windows showing the same newest stories
    must not share a cached section."""
    settings.NEWSROOM_DIGEST_MAX_PER_CATEGORY = 2
    policy = category("policy", name="Policy", order=1)
    for hours in (1, 2, 3, 4, 5):
        publish(policy, f"Vote {hours}", hours)
    stories = list(Story.objects.select_related("category"))
    long_window = digest_content(7, END - timedelta(hours=6), "daily", stories, [policy])
    short = [s for s in stories if s.published_at > END - timedelta(hours=3, minutes=30)]
    short_window = digest_content(7, END - timedelta(hours=3, minutes=30), "daily", short,
                                  [policy])
    for digest, more in ((long_window, 3), (short_window, 1)):
        assert f"And {more} more in Policy" in digest.text
        assert f"And {more} more in Policy" in digest.html
        assert digest.text.count("* Vote") == 2  # the newest two, then the count
        assert "http://testserver/categories/policy/" in digest.text
    assert "Policy</a> · 5 stories" in long_window.html
    assert "Policy</a> · 3 stories" in short_window.html
    assert long_window.subject == "Your daily Newsroom: Vote 1 and 4 more"
    # Every story of the window is named or counted: nothing is dropped silently.
    assert long_window.story_ids == tuple(s.pk for s in stories)
    settings.NEWSROOM_DIGEST_MAX_PER_CATEGORY = 12
    assert "more in Policy" not in digest_content(7, END - timedelta(hours=6), "daily", stories,
                                                  [policy]).text


@pytest.mark.django_db
def test_a_summary_from_the_body_reads_as_prose():
    """No text-layout heading rules or bullets in a preheader or a digest summary."""
    cat = category("weather", name="Weather")
    story = Story.objects.create(
        headline="Flood", slug="flood", category=cat, dek="",
        body="The barrier gave way.\n\n## What we know\n\n- Two districts & more\n- Roads closed\n")
    assert story_summary(story) == ("The barrier gave way. What we know Two districts & more "
                                    "Roads closed")


def test_every_edition_links_the_sites_feed(newsdesk, settings):
    settings.SITE_URL = "https://news.example"
    stories = list(Story.objects.select_related("category")[:2])
    made = [content.alert_content(1, stories[0]),
            digest_content(2, END - timedelta(days=1), "daily", stories,
                           [s.category for s in stories])]
    for built in made:
        assert 'href="https://news.example/feed/"' in built.html
        assert 'href="https://news.example/feed/atom/"' in built.html
        assert "In your feed reader: https://news.example/feed/" in built.text
