"""What an edition says: rendered once per distinct content, never per reader.

An alert has one content. A digest has one per distinct (window, categories)
combination among its recipients: a few hundred at most, however many
subscribers. Each content is rendered from the stories' cached HTML into
subject, text and CSS-inlined HTML with holes (see `mime.hole`) for the few
per-recipient values. Callers cache contents under `alert_key`/`digest_key`,
which name everything a content is made of (each story's revision among it),
so a correction saved mid-send reaches the next batch. A digest's sections (a
category's stories) recur across its contents: each is rendered once per
process and spliced into the frames of the contents that show it.

What cannot be sent (HTML over the size limit, a template that fails) raises
`ContentError` with the reason in words: the confirm page shows it, and a send
that meets it stops and says so (services.editions.edition_fail).
"""

from __future__ import annotations

import hashlib
import types
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from html import unescape
from operator import attrgetter
from zoneinfo import ZoneInfo

import css_inline
from django.conf import settings
from django.core import signing
from django.template import Context
from django.template.backends.django import Template as DjangoTemplate
from django.template.defaulttags import ForNode
from django.template.loader import get_template, render_to_string
from django.urls import reverse
from django.utils.html import strip_tags
from django.utils.text import Truncator

from newsroom.models import Category, Story
from newsroom.rendering import mail_html
from subscriptions.mail_look import look, strip_bidi
from subscriptions.mime import hole

# Gmail clips messages whose HTML passes ~102 KB and hides the footer with the
# unsubscribe link; keep well below.
MAX_HTML_BYTES = 100_000
_VIEW_SALT = "newsroom.subscriptions.view-edition"
_inliner = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)
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
    """The settings that shape every content (masthead, colours, mail images)."""
    return (*look().values(), tuple(settings.NEWSROOM_MAIL_IMAGE_HOSTS))


def _finish(template: str, context: dict, *, list_key: str, story_ids: tuple[int, ...],
            preheader: str) -> Content:
    context["preheader"] = preheader
    try:
        subject = _subject(render_to_string(f"{template}.subject.txt", context))
        context["subject"] = subject
        html = _inliner.inline(render_to_string(f"{template}.html", context))
        text = render_to_string(f"{template}.txt", context)
    except Exception as exc:  # a template or inliner failure: no retry will cure it
        raise ContentError(f"the message could not be built: {exc!r}"[:480]) from exc
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
        story_url=settings.SITE_URL + story.get_absolute_url(),
        headline=strip_bidi(story.headline),
        body_html=mail_html(story.body_html),
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
    `_DigestLayout`); the same text as rendering the templates whole. A
    category with more stories than NEWSROOM_DIGEST_MAX_PER_CATEGORY shows the
    newest and says how many more there are, linking to its page: nothing in
    the reader's window is left out without a word.
    """
    by_category: dict[int, list[Story]] = {}
    for story in sorted(stories, key=attrgetter("published_at"), reverse=True):  # all dated
        by_category.setdefault(story.category_id, []).append(story)
    layout = _digest_layout()
    shown = [(category, layout.section(category, by_category[category.pk]))
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
        html_head, html_tail = _inline_apart(*layout.html.cut(context))
        text_head, text_tail = layout.text.cut(context)
    except Exception as exc:  # a template or inliner failure: no retry will cure it
        raise ContentError(f"the digest could not be built: {exc!r}"[:480]) from exc
    html = html_head + "".join(section.html for _c, section in shown) + html_tail
    _check_size(html)
    shown_ids = {category.pk for category, _section in shown}
    return Content(
        subject=context["subject"], preheader=context["preheader"], html=html,
        text=text_head + "".join(section.text for _c, section in shown) + text_tail,
        list_key=f"digest.{frequency}",
        story_ids=tuple(s.pk for s in stories if s.category_id in shown_ids),
    )


# --- Digest sections ----------------------------------------------------------------------

_DIGEST = "subscriptions/editions/digest"
_SECTIONS_CACHED = 512
# Where a page is cut while its CSS is inlined: a comment, which the inliner keeps
# as it is and which no rendered text can contain (text has its "<" escaped).
_CUT = "<!--newsroom:cut-->"


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
    """What a section's loop pass knows of its category (`{{ category.… }}`)."""

    name: str
    anchor: str  # the id "in this issue" links to
    url: str  # the category's page
    more: int = 0  # stories in the reader's window past the per-category cap


@dataclass(frozen=True)
class _Section:
    """One category's stories as a digest shows them, the same in every digest."""

    heading: Heading
    items: list[dict[str, str]]  # headline, summary, url per story
    html: str  # its pass of the HTML template's sections loop, CSS inlined
    text: str  # its pass of the text template's sections loop


# Stands in for a section to find where the sections go: its pass holds a text
# no real section has, which autoescaping changes.
_PROBE: tuple[object, list[dict[str, str]]] = (
    types.SimpleNamespace(name="\x00&probe\x00", anchor="", url="", more=0), [])


class _Loop:
    """A digest template cut at its `{% for category, stories in sections %}` loop.

    A pass of that loop depends on its section alone, so a whole render is the
    head, one pass per section, the tail. The head and tail are rendered with
    the probe as the only section and cut at the probe's pass; the loop node
    renders a section's pass by itself, as the whole render would (with the
    autoescaping in force at the loop, learnt from the probe).
    """

    def __init__(self, template: DjangoTemplate) -> None:
        self.template = template
        [self.node] = [node for node in template.template.nodelist.get_nodes_by_type(ForNode)
                       if isinstance(node, ForNode) and str(node.sequence) == "sections"]
        rendered = template.render({"sections": [_PROBE]})
        for autoescape in (True, False):
            self.autoescape = autoescape
            self.probe = self.render_pass(_PROBE)
            if rendered.count(self.probe) == 1:
                break
        else:
            raise ValueError(f"{template.origin.name}: cannot find where its sections go")

    def render_pass(self, section: tuple[object, list[dict[str, str]]]) -> str:
        return self.node.render(Context({"sections": [section]}, autoescape=self.autoescape))

    def cut(self, context: dict) -> tuple[str, str]:
        """(head, tail): the template rendered with `context`, without sections."""
        head, probe, tail = self.template.render({**context, "sections": [_PROBE]}).partition(
            self.probe)
        if not probe:
            raise ValueError(f"{self.template.origin.name}: the probe section went missing")
        return head, tail


class _DigestLayout:
    """The digest templates cut at their sections loop, and the sections rendered
    so far (bounded: the least recently used go first)."""

    def __init__(self, html: DjangoTemplate, text: DjangoTemplate) -> None:
        self.compiled = (html.template, text.template)
        self.html, self.text = _Loop(html), _Loop(text)
        self.blanks: dict[tuple, tuple[str, str]] = {}  # pages to inline a new section in
        self.sections: OrderedDict[tuple, _Section] = OrderedDict()

    def section(self, category: Category, stories: Sequence[Story]) -> _Section:
        """The section of `category` holding (the first few of) `stories`, newest first,
        and how many more the reader's window holds."""
        cap = settings.NEWSROOM_DIGEST_MAX_PER_CATEGORY
        more = max(0, len(stories) - cap)
        stories = stories[:cap]
        # Everything its rendering reads, so that a cached section is never stale:
        # the count of stories past the cap differs from one reader's window to another's.
        key = (_look_key(), category.pk, category.name, category.slug, more, tuple(
            (s.pk, s.slug, s.headline, s.dek, "" if s.dek else s.body) for s in stories))
        section = self.sections.get(key)
        if section is not None:
            self.sections.move_to_end(key)
            return section
        heading = Heading(name=category.name, anchor=f"section-{category.slug}",
                          url=settings.SITE_URL + category.get_absolute_url(), more=more)
        items = [{"headline": strip_bidi(s.headline), "summary": story_summary(s),
                  "url": settings.SITE_URL + s.get_absolute_url()} for s in stories]
        # A page of the current look (its CSS holds the brand colour) to inline it in.
        blank = self.blanks.get(key[0]) or self.blanks.setdefault(key[0], self.html.cut(look()))
        html = _inline_apart(blank[0], self.html.render_pass((heading, items)), blank[1])[1]
        section = self.sections[key] = _Section(
            heading, items, html, self.text.render_pass((heading, items)))
        while len(self.sections) > _SECTIONS_CACHED:
            self.sections.popitem(last=False)
        return section


_layout: _DigestLayout | None = None


def _digest_layout() -> _DigestLayout:
    """The layout of the digest templates as they are now (a template reloaded in
    development starts a new one)."""
    global _layout
    html, text = get_template(f"{_DIGEST}.html"), get_template(f"{_DIGEST}.txt")
    assert isinstance(html, DjangoTemplate) and isinstance(text, DjangoTemplate)
    if _layout is None or _layout.compiled != (html.template, text.template):
        _layout = _DigestLayout(html, text)
    return _layout
