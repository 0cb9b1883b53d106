"""What an edition says: rendered once per distinct content, never per reader.

An alert has one content. A digest has one per distinct (window, categories)
combination among its recipients: a few hundred at most, however many
subscribers. Each content is rendered from the stories' cached HTML into
subject, text and CSS-inlined HTML with holes (see `mime.hole`) for the few
per-recipient values. Callers cache contents under `alert_key`/`digest_key`,
which name everything a content is made of (each story's revision among it),
so a correction saved mid-send reaches the next batch. A digest's sections (a
category's stories, each rendered by its own template) recur across its
contents: each is rendered once per process, kept in `_cache` under a key that
names all it is made of, and joined into the frames of the contents that show it.

Links to stories (and in an alert's story body) go through the edition's click
redirect when NEWSROOM_CLICK_TRACKING is on (sending.links): the same for every
reader, so they count per edition, story and link, never per person; the
setting is in every key (`_look_key`), and a section's key names the edition
its links count for.

What cannot be sent (HTML over the size limit, a template that fails) raises
`ContentError` with the reason in words: the confirm page shows it, and a send
that meets it stops and says so (sending.steering.edition_fail).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from html import unescape
from operator import attrgetter
from typing import TypeVar, cast
from zoneinfo import ZoneInfo

import css_inline
from django.conf import settings
from django.core import signing
from django.template.backends.django import Template as EngineTemplate
from django.template.base import Template as DjangoTemplate
from django.template.loader import get_template, render_to_string
from django.urls import reverse
from django.utils.html import strip_tags
from django.utils.safestring import mark_safe
from django.utils.text import Truncator

from newsroom.models import Category, Story
from newsroom.rendering import mail_html
from subscriptions.mail_look import look, strip_bidi
from subscriptions.sending.links import tracked, tracked_html
from subscriptions.sending.mime import hole

# Gmail clips messages whose HTML passes ~102 KB and hides the footer with the
# unsubscribe link; keep well below.
MAX_HTML_BYTES = 100_000
_VIEW_SALT = "newsroom.subscriptions.view-edition"
_inliner = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)
# A content error becomes an edition's note (TEXT_LIMIT) with a prefix: leave it room.
NOTE_ROOM = 480

# The per-recipient values every edition template may use, as `{{ hole.<name> }}`.
PERSONAL_VALUES = ("email", "unsubscribe_url", "manage_url")
_HOLES = {name: hole(name) for name in PERSONAL_VALUES}


class ContentError(ValueError):
    """This content cannot be sent as it is; the message says why, for an editor."""


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
    return {**look(), "view_url": view.url(), "hole": _HOLES}


def _look_key() -> tuple:
    """The settings that shape every content (masthead, colours, mail images, and
    whether its links go through the click redirect)."""
    return (*look().values(), tuple(settings.NEWSROOM_MAIL_IMAGE_HOSTS),
            settings.NEWSROOM_CLICK_TRACKING)


def _finish(template: str, context: dict, *, list_key: str, story_ids: tuple[int, ...],
            preheader: str) -> Content:
    context["preheader"] = preheader
    try:
        subject = _subject(render_to_string(f"{template}.subject.txt", context))
        context["subject"] = subject
        html = _inliner.inline(render_to_string(f"{template}.html", context))
        text = render_to_string(f"{template}.txt", context)
    except Exception as exc:  # a template or inliner failure: no retry will cure it
        raise ContentError(f"the message could not be built: {exc!r}"[:NOTE_ROOM]) from exc
    _check_size(html)
    return Content(subject=subject, preheader=preheader, text=text, html=html,
                   list_key=list_key, story_ids=story_ids)


def _check_size(html: str) -> None:
    size = len(html.encode())
    if size > MAX_HTML_BYTES:
        raise ContentError(
            f"the message's HTML is {size / 1000:.0f} KB, over the {MAX_HTML_BYTES // 1000} KB "
            "that mail programs show before clipping it (and its unsubscribe link): "
            "shorten the story"
        )


def _preheader(text: str) -> str:
    return Truncator(" ".join(strip_bidi(text).split())).chars(100)


def _subject(rendered: str) -> str:
    """One line, and no bidi control that could reorder it in an inbox."""
    return " ".join(strip_bidi(rendered).split())


# What a shared copy (the browser view, an editor's preview) shows for a reader's values.
_GENERIC = {"email": "a reader", "manage_url": "/subscribe/", "unsubscribe_url": "/subscribe/"}


def fill_generic(text: str) -> str:
    """`text` with its holes filled by values that belong to no reader."""
    for name, value in _GENERIC.items():
        text = text.replace(hole(name), value)
    return text


def alert_key(story: Story) -> tuple:
    """Everything an alert's content is made of: equal keys, equal contents."""
    return ("alert", story.pk, story.revision, story.updated_at, story.category.name,
            story.category.slug, _look_key())


def alert_content(edition_id: int, story: Story) -> Content:
    """The alert for one story (with its category loaded), as it is now."""
    context = _base_context(ViewKey(edition_id))
    context.update(
        story=story,
        story_url=tracked(edition_id, story.pk, settings.SITE_URL + story.get_absolute_url()),
        headline=strip_bidi(story.headline),
        body_html=tracked_html(edition_id, story.pk, mail_html(story.body_html)),
        body_text=story.body_text,
    )
    return _finish(
        "subscriptions/editions/alert", context, list_key=f"alerts.{story.category.slug}",
        story_ids=(story.pk,), preheader=_preheader(story_summary(story)),
    )


def digest_key(window_start: datetime | None, stories: Sequence[Story],
               categories: Sequence[Category], issue_date: date | None = None) -> tuple:
    """Everything one digest content is made of (the stories' revisions among it)."""
    return ("digest", window_start, tuple(sorted(c.pk for c in categories)),
            tuple(sorted((s.pk, s.revision, s.updated_at) for s in stories)),
            tuple(sorted((c.pk, c.name, c.slug, c.order) for c in categories if c.name)),
            issue_date, settings.NEWSROOM_DIGEST_MAX_PER_CATEGORY, _look_key())


def issue_date(due: datetime, slots: Sequence[Sequence]) -> date:
    """The date a digest shows: its due day in the time zone of its first slot
    (the readers of one edition share a due instant, nearly always a day)."""
    zone = ZoneInfo(slots[0][0]) if slots else ZoneInfo("UTC")
    return due.astimezone(zone).date()


def _date_label(day: date) -> str:
    return f"{day:%A} {day.day} {day:%B %Y}"


def story_summary(story: Story) -> str:
    """The summary, else the body's first 40 words as prose (the text layout's heading
    rules and bullets would read as "What we know ====== - Two…" in a preheader)."""
    if story.dek:
        return story.dek
    words = unescape(strip_tags(story.body_html)).split()
    return Truncator(" ".join(words)).words(40)


def digest_content(
    edition_id: int, window_start: datetime | None, frequency: str, stories: Sequence[Story],
    categories: Sequence[Category], issue_date: date | None = None,
) -> Content:
    """One digest content: the stories grouped by category in category order.

    Composed of its frame (subject, preheader, date, "in this issue", links:
    rendered per content) and its sections (rendered once per process, see
    `_section`); the same text as rendering the templates whole. A
    category with more stories than NEWSROOM_DIGEST_MAX_PER_CATEGORY shows the
    newest and says how many more there are, linking to its page: nothing in
    the reader's window is left out without a word.
    """
    by_category: dict[int, list[Story]] = {}
    for story in sorted(stories, key=attrgetter("published_at"), reverse=True):  # all dated
        by_category.setdefault(story.category_id, []).append(story)
    shown = [(category, _section(edition_id, category, by_category[category.pk]))
             for category in sorted(categories, key=lambda c: (c.order, c.name))
             if category.pk in by_category]
    headlines = [item["headline"] for _category, section in shown for item in section.items]
    view = ViewKey(edition_id, window_start, tuple(sorted(c.pk for c in categories)))
    context = _base_context(view)
    context.update(
        lead=shown[0][1].items[0],
        story_count=sum(len(section.items) + section.heading.more for _c, section in shown),
        frequency_label="Weekly" if frequency == "weekly" else "Daily",
        preheader=_preheader(" · ".join(headlines)),
        issue_date=_date_label(issue_date) if issue_date else "",
        contents=[{"name": section.heading.name, "anchor": section.heading.anchor,
                   "count": len(section.items) + section.heading.more}
                  for _category, section in shown],
    )
    try:
        context["subject"] = _subject(render_to_string(f"{_DIGEST}.subject.txt", context))
        html_head, html_tail = _inline_apart(*_page_apart(context))
        text = render_to_string(f"{_DIGEST}.txt", {
            **context, "sections": "\n".join(section.text for _c, section in shown)})
    except Exception as exc:  # a template or inliner failure: no retry will cure it
        raise ContentError(f"the digest could not be built: {exc!r}"[:NOTE_ROOM]) from exc
    html = html_head + "".join(section.html for _c, section in shown) + html_tail
    _check_size(html)
    shown_ids = {category.pk for category, _section in shown}
    return Content(
        subject=context["subject"], preheader=context["preheader"], html=html, text=text,
        list_key=f"digest.{frequency}",
        story_ids=tuple(s.pk for s in stories if s.category_id in shown_ids),
    )


# --- Digest sections ----------------------------------------------------------------------
#
# A digest is its frame (digest.html/.txt, per content) around its sections
# (_digest_section.html/.txt, one per category shown), which the frame prints
# as `{{ sections }}`. A section is the same in every digest that shows it, so
# it is rendered once per process and kept in `_cache`.

_DIGEST = "subscriptions/editions/digest"
_SECTION = "subscriptions/editions/_digest_section"
# Where a page is cut while its CSS is inlined: a comment, which the inliner keeps
# as it is and which no rendered text can contain (text has its "<" escaped).
_CUT = "<!--newsroom:cut-->"
_CUT_SAFE = mark_safe(_CUT)  # noqa: S308 - a constant comment


def _page_apart(context: dict) -> tuple[str, str]:
    """The digest page rendered with `context`, before and after its sections."""
    head, *tail = render_to_string(f"{_DIGEST}.html", {**context, "sections": _CUT_SAFE}
                                   ).split(_CUT)
    if len(tail) != 1:
        raise ValueError(f"{_DIGEST}.html must show {{{{ sections }}}} once")
    return head, tail[0]


def _inline_apart(*pieces: str) -> list[str]:
    """CSS-inline the pieces of one page as that page, and return them apart again.

    Inlining styles each element by the selectors that match it, which the
    comments in between do not change, so the pieces come out as they would
    within the whole page.
    """
    inlined = _inliner.inline(_CUT.join(pieces)).split(_CUT)
    if len(inlined) != len(pieces):
        raise ValueError(f"CSS inlining changed the {_CUT} marks")
    return inlined


@dataclass(frozen=True)
class Heading:
    """What a section template knows of its category (`{{ category.… }}`)."""

    name: str
    anchor: str  # the id "in this issue" links to
    url: str  # the category's page
    more: int = 0  # stories in the reader's window past the per-category cap


@dataclass(frozen=True)
class _Section:
    """One category's stories as a digest shows them, the same in every digest."""

    heading: Heading
    items: list[dict[str, str]]  # headline, summary, url per story
    html: str  # _digest_section.html, CSS inlined as within the digest page
    text: str  # _digest_section.txt


@dataclass(frozen=True)
class SectionKey:
    """Everything a section is made of: equal keys, equal sections.

    The stories are named by the fields the section shows, not only by their
    revision: a queryset update changes a story without counting a revision.
    """

    templates: tuple[object, ...]  # section and page templates as loaded now
    look: tuple  # `_look_key()`: site, masthead, colours (in the page's CSS), image hosts
    edition_id: int  # in its story links when they are tracked (0 when not: shared)
    category: tuple[int, str, str]  # pk, name, slug
    stories: tuple[tuple[int, int, str, str, str, str], ...]  # pk, revision, slug, headline,
    # dek, and the body when there is no dek (the summary is taken from it)
    more: int  # stories in the reader's window past the cap


@dataclass(frozen=True)
class PageKey:
    """A digest page with no content of its own, to inline a new section in."""

    template: object
    look: tuple


T = TypeVar("T")


class ContentCache:
    """Rendered pieces that many contents share, each under a key that names all it
    is made of (so a hit is never stale); bounded, least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()  # for the threads pool

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return cast(T, self._entries[key])
        value = build()
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


# A few hundred sections cover every category of a day's digests many times over.
CONTENT_CACHE_SIZE = 512
_cache = ContentCache(CONTENT_CACHE_SIZE)


def _section(edition_id: int, category: Category, stories: Sequence[Story]) -> _Section:
    """The section of `category` holding (the first few of) `stories`, newest first,
    and how many more the reader's window holds; its story links are
    `edition_id`'s redirect links when clicks are tracked."""
    cap = settings.NEWSROOM_DIGEST_MAX_PER_CATEGORY
    more = max(0, len(stories) - cap)
    stories = stories[:cap]
    html, text = get_template(f"{_SECTION}.html"), get_template(f"{_SECTION}.txt")
    page = get_template(f"{_DIGEST}.html")
    look_key = _look_key()
    linked_to = edition_id if settings.NEWSROOM_CLICK_TRACKING else 0
    key = SectionKey(
        templates=(_source(html), _source(text), _source(page)), look=look_key,
        edition_id=linked_to,
        category=(category.pk, category.name, category.slug), more=more,
        stories=tuple((s.pk, s.revision, s.slug, s.headline, s.dek, "" if s.dek else s.body)
                      for s in stories))

    def build() -> _Section:
        heading = Heading(name=category.name, anchor=f"section-{category.slug}",
                          url=settings.SITE_URL + category.get_absolute_url(), more=more)
        items = [{"headline": strip_bidi(s.headline), "summary": story_summary(s),
                  "url": tracked(linked_to, s.pk, settings.SITE_URL + s.get_absolute_url())}
                 for s in stories]
        context = {"category": heading, "stories": items}
        blank = _cache.get(PageKey(_source(page), look_key), lambda: _page_apart(look()))
        inlined = _inline_apart(blank[0], html.render(context), blank[1])[1]
        return _Section(heading, items, inlined, text.render(context))

    return _cache.get(key, build)


# --- Checks and previews before an alert is confirmed -------------------------------


def alert_content_problem(*, story: Story) -> str | None:
    """Why this story's alert cannot be sent as it is (in words), or None."""
    try:
        alert_content(0, Story.objects.select_related("category").get(
            pk=story.pk))
    except ContentError as exc:
        return str(exc)
    return None


def alert_preview(*, story: Story) -> dict[str, str]:
    """What an alert's readers will get (their own links shown as the sign-up
    page's), and how the story reads in a digest; raises ContentError with the
    reason if either cannot be sent."""
    story = Story.objects.select_related("category").get(pk=story.pk)
    alert = alert_content(0, story)
    digest = digest_content(0, None, "daily", [story], [story.category])
    return {"subject": alert.subject, "preheader": alert.preheader,
            "html": fill_generic(alert.html),
            "text": fill_generic(alert.text),
            "digest_html": fill_generic(digest.html)}


def _source(template: object) -> DjangoTemplate:
    """The Django template behind an engine's template object: the key part that
    changes when the file does (the cached loader keeps one per process)."""
    assert isinstance(template, EngineTemplate)  # the DjangoTemplates engine, settings.TEMPLATES
    return template.template
