"""Story bodies: Markdown in, sanitised HTML and plain text out.

The same output goes into web pages and into email, so the HTML allow-list is
deliberately small: no scripts, styles, frames, forms, event handlers or
`style` attributes (email clients strip or choke on them), and only
http(s)/mailto URLs, made absolute against SITE_URL so they still work when
read in a mail client. Editors write Markdown, but imported bodies and raw
HTML inside Markdown are untrusted: nh3 is the security boundary, not Markdown.

Rendering depends only on the Markdown text, the rules (RENDERER_VERSION) and
SITE_URL, so results are memoised per process instead of redone per reader.
Mail gets one more pass (`mail_html`): remote images only from allowed https
hosts (a tracking pixel must not report who opened an alert), each with alt text.
"""

from __future__ import annotations

import html as htmllib
import re
import textwrap
from functools import lru_cache, partial
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit
from xml.etree.ElementTree import Element

import markdown
import nh3
from django.conf import settings
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

# Bump whenever the Markdown extensions, the allow-list or the text layout
# change: it is part of every cache key, so stale renderings are never served.
RENDERER_VERSION = 2

TEXT_WIDTH = 72

ALLOWED_TAGS = frozenset({
    "p", "br", "hr", "h2", "h3", "h4", "ul", "ol", "li", "blockquote",
    "em", "strong", "b", "i", "a", "code", "pre", "img",
    "table", "thead", "tbody", "tr", "th", "td",
})
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "ol": {"start"},
}
# Table alignment as an attribute, not a style: email clients keep `align`.
_ALIGN = {"align": {"left", "center", "right"}}
ALLOWED_ATTRIBUTE_VALUES = {"th": _ALIGN, "td": _ALIGN}
# Dropped together with everything inside them: their content is code or
# widgets, never prose, and would otherwise leak into the page as text.
DROPPED_WITH_CONTENT = frozenset({
    "script", "style", "iframe", "object", "svg", "math", "template",
    "noscript", "noembed", "noframes", "textarea", "select", "title", "xmp",
})
LINK_SCHEMES = frozenset({"http", "https", "mailto"})
IMAGE_SCHEMES = frozenset({"http", "https"})
LINK_REL = "noopener noreferrer"

_MARKDOWN_EXTENSIONS = ["fenced_code", "tables", "sane_lists", "smarty"]
_MARKDOWN_CONFIG = {"tables": {"use_align_attribute": True}}
_EMPTY_PARAGRAPH = re.compile(r"<p>\s*</p>\n?")
# A link whose URL was refused (javascript:, a bad scheme) keeps its text but must
# not look like a link that goes nowhere. nh3's output has no nested or bare-">" tags.
_LINK_WITHOUT_HREF = re.compile(r"<a(?![^>]*\shref=)[^>]*>(.*?)</a>", re.DOTALL)
_IMG = re.compile(r"<img\b([^>]*)>")
_ATTRIBUTE = re.compile(r'([a-z-]+)="([^"]*)"')


def render_html(markdown_text: str) -> str:
    """Sanitised HTML for a story body, safe in a web page and in an email."""
    return _render_html(markdown_text, RENDERER_VERSION, settings.SITE_URL)


def render_text(markdown_text: str) -> str:
    """Plain text for the text/plain part of an email, wrapped at 72 columns."""
    return _render_text(markdown_text, RENDERER_VERSION, settings.SITE_URL)


@lru_cache(maxsize=256)
def _render_html(markdown_text: str, version: int, site_url: str) -> str:
    # A fresh Markdown instance per call: instances are stateful, not thread-safe.
    md = markdown.Markdown(
        extensions=[*_MARKDOWN_EXTENSIONS, _HeadingLevelsExtension()],
        extension_configs=_MARKDOWN_CONFIG,
        output_format="html",
    )
    html = nh3.clean(
        md.convert(markdown_text),
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes=ALLOWED_ATTRIBUTES,
        tag_attribute_values=ALLOWED_ATTRIBUTE_VALUES,
        url_schemes=set(LINK_SCHEMES),
        attribute_filter=partial(_filter_attribute, site_url=site_url),
        link_rel=LINK_REL,
        strip_comments=True,
    )
    html = _LINK_WITHOUT_HREF.sub(r"\1", html)
    # Paragraphs that held only dropped content (an iframe, say) are left empty.
    return _EMPTY_PARAGRAPH.sub("", html).strip()


def mail_html(html: str) -> str:
    """`render_html` output as mail shows it: images only from the https hosts in
    NEWSROOM_MAIL_IMAGE_HOSTS (others are left out: the site still shows them),
    each with alt text (its title, else a plain description)."""
    return _mail_html(html, frozenset(h.lower() for h in settings.NEWSROOM_MAIL_IMAGE_HOSTS))


@lru_cache(maxsize=256)
def _mail_html(html: str, hosts: frozenset[str]) -> str:
    def image(match: re.Match) -> str:
        attrs = dict(_ATTRIBUTE.findall(match.group(1)))
        try:
            src = urlsplit(htmllib.unescape(attrs.get("src", "")))
        except ValueError:
            return ""
        if src.scheme != "https" or (src.hostname or "").lower() not in hosts:
            return ""
        alt = attrs.get("alt", "").strip() or attrs.get("title", "").strip() or "Image"
        return f'<img src="{attrs["src"]}" alt="{alt}">'

    return _EMPTY_PARAGRAPH.sub("", _IMG.sub(image, html)).strip()


@lru_cache(maxsize=256)
def _render_text(markdown_text: str, version: int, site_url: str) -> str:
    return html_to_text(_render_html(markdown_text, version, site_url))


class _HeadingLevels(Treeprocessor):
    """Keep body headings within h2 to h4: the headline is the page's only h1.

    Levels are clamped rather than shifted, because writers who know the
    headline is the h1 start at `##`; shifting would skip h2 for them.
    """

    def run(self, root: Element) -> None:
        for element in root.iter():
            if element.tag == "h1":
                element.tag = "h2"
            elif element.tag in {"h5", "h6"}:
                element.tag = "h4"


class _HeadingLevelsExtension(Extension):
    def extendMarkdown(self, md: markdown.Markdown) -> None:
        md.treeprocessors.register(_HeadingLevels(md), "newsroom_heading_levels", 0)


def _filter_attribute(tag: str, attribute: str, value: str, *, site_url: str) -> str | None:
    """Second check on what nh3 kept: absolute http(s) URLs and a numeric list start.

    nh3 has already dropped disallowed schemes, but it passes relative URLs
    through, and those break in email; they are resolved against SITE_URL here,
    and the result is checked again because this filter has the last word.
    """
    if attribute in {"href", "src"}:
        return _absolute_url(
            value, site_url=site_url, schemes=LINK_SCHEMES if tag == "a" else IMAGE_SCHEMES
        )
    if attribute == "start":
        return value if re.fullmatch(r"[0-9]{1,6}", value) else None
    return value


def _absolute_url(value: str, *, site_url: str, schemes: frozenset[str]) -> str | None:
    try:
        url = urljoin(f"{site_url}/", value.strip())
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return None
    if parts.scheme.lower() not in schemes:
        return None
    if parts.scheme.lower() != "mailto" and not parts.netloc:
        return None
    return url


# --- HTML to plain text ---------------------------------------------------------
#
# Written against the stdlib parser on purpose: html2text, the usual choice, is
# GPL-licensed. The input is our own sanitised HTML, so only the allow-listed
# tags above need handling; anything else is treated as an inline container.

_VOID_TAGS = frozenset({"br", "hr", "img"})
_BLOCK_TAGS = frozenset({
    "p", "h2", "h3", "h4", "ul", "ol", "li", "blockquote", "pre", "hr",
    "table", "thead", "tbody", "tr", "th", "td",
})
_HEADING_UNDERLINES = {"h2": "=", "h3": "-", "h4": "-"}
# HTML collapses ASCII whitespace only; a non-breaking space must survive.
_COLLAPSIBLE = re.compile(r"[ \t\n\r\f]+")
_MIN_WIDTH = 20


class _Node:
    __slots__ = ("attrs", "children", "tag")

    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag = tag
        self.attrs = attrs
        self.children: list[_Node | str] = []


class _TreeBuilder(HTMLParser):
    """Turns HTML into a small tree; entities are decoded by the parser."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _Node("root", {})
        self._stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = _Node(tag, {name: value or "" for name, value in attrs})
        self._stack[-1].children.append(node)
        if tag not in _VOID_TAGS:
            self._stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._stack[-1].children.append(_Node(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self._stack) - 1, 0, -1):
            if self._stack[depth].tag == tag:
                del self._stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self._stack[-1].children.append(data)


def html_to_text(html: str, width: int = TEXT_WIDTH) -> str:
    """Lay sanitised HTML out as plain text with no markup left."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return "\n\n".join(_blocks(builder.root.children, width)).rstrip()


def _blocks(children: list[_Node | str], width: int) -> list[str]:
    """Block-level children become blocks; runs of inline content become paragraphs."""
    blocks: list[str] = []
    inline: list[_Node | str] = []

    def flush() -> None:
        text = _wrap(_inline(inline), width)
        if text:
            blocks.append(text)
        inline.clear()

    for child in children:
        if isinstance(child, str) or child.tag not in _BLOCK_TAGS:
            inline.append(child)
            continue
        flush()
        blocks.extend(_block(child, width))
    flush()
    return blocks


def _block(node: _Node, width: int) -> list[str]:
    tag = node.tag
    if tag in _HEADING_UNDERLINES:
        text = _wrap(_inline(node.children), width)
        if not text:
            return []
        underline = _HEADING_UNDERLINES[tag] * max(len(line) for line in text.splitlines())
        return [f"{text}\n{underline}"]
    if tag in {"ul", "ol"}:
        return _list(node, width)
    if tag == "blockquote":
        inner = "\n\n".join(_blocks(node.children, max(width - 2, _MIN_WIDTH)))
        return [_prefix_lines(inner, "> ", ">")] if inner else []
    if tag == "pre":
        code = _all_text(node).strip("\n")
        return [_prefix_lines(code, "    ", "")] if code.strip() else []
    if tag == "hr":
        return ["* * *"]
    if tag == "table":
        return _table(node)
    return _blocks(node.children, width)  # p, and stray li/tr/td outside their parent


def _list(node: _Node, width: int) -> list[str]:
    ordered = node.tag == "ol"
    start = node.attrs.get("start", "1")
    number = int(start) if ordered and start.isdigit() else 1
    items: list[str] = []
    loose = False
    for child in node.children:
        if isinstance(child, str):
            if child.strip():  # text between items: keep it rather than lose it
                items.append(_wrap(child, width))
            continue
        marker = f"{number}. " if ordered else "- "
        number += 1
        # Markdown wraps the items of a "loose" list (blank lines between) in <p>.
        item_is_loose = any(isinstance(c, _Node) and c.tag == "p" for c in child.children)
        loose = loose or item_is_loose
        blocks = _blocks(child.children, max(width - len(marker), _MIN_WIDTH))
        body = ("\n\n" if item_is_loose else "\n").join(blocks)
        first, _, rest = body.partition("\n")
        if rest:
            first += "\n" + _prefix_lines(rest, " " * len(marker), "")
        items.append(marker + first)
    return ["\n\n".join(items) if loose else "\n".join(items)] if items else []


def _table(node: _Node) -> list[str]:
    """One line per row, cells separated by a bar: readable without fixed widths."""
    rows: list[str] = []
    for row in _descendants(node, "tr"):
        cells = [
            _collapse(_inline(cell.children))
            for cell in row.children
            if isinstance(cell, _Node) and cell.tag in {"th", "td"}
        ]
        if any(cells):
            rows.append(" | ".join(cells))
    return ["\n".join(rows)] if rows else []


def _inline(nodes: list[_Node | str]) -> str:
    """Inline content as text; a newline marks a hard break (<br>)."""
    parts: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            parts.append(node)
        elif node.tag == "br":
            parts.append("\n")
        elif node.tag == "img":
            alt = _collapse(node.attrs.get("alt", ""))
            parts.append(f"[{alt}]" if alt else "")
        elif node.tag == "a":
            parts.append(_link(node))
        else:
            parts.append(_inline(node.children))
    return "".join(parts)


def _link(node: _Node) -> str:
    text = _inline(node.children)
    href = node.attrs.get("href", "")
    label = _collapse(text)
    if not href or href in {label, f"mailto:{label}"}:
        return text
    if not label:
        return href
    return f"{text} ({href})"


def _wrap(text: str, width: int) -> str:
    lines = [_collapse(line) for line in text.split("\n")]
    wrapped = [
        textwrap.fill(line, width=width, break_long_words=False, break_on_hyphens=False)
        for line in lines
        if line
    ]
    return "\n".join(wrapped)


def _collapse(text: str) -> str:
    return _COLLAPSIBLE.sub(" ", text).strip(" ")


def _prefix_lines(text: str, prefix: str, blank_prefix: str) -> str:
    return "\n".join(prefix + line if line else blank_prefix for line in text.split("\n"))


def _all_text(node: _Node) -> str:
    return "".join(c if isinstance(c, str) else _all_text(c) for c in node.children)


def _descendants(node: _Node, tag: str) -> list[_Node]:
    found: list[_Node] = []
    for child in node.children:
        if isinstance(child, _Node):
            if child.tag == tag:
                found.append(child)
            else:
                found.extend(_descendants(child, tag))
    return found
