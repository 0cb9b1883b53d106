"""Story files: parse them into plain data.

Pure text in, dataclasses out: no database, so every rule here is testable
without one (`newsroom.imports` writes the rows).

A story file is YAML front matter between `---` lines, then the body. Two
layouts arrive:

* **folded**, as the seed files come: the whole front matter on the first line,
  `--- headline: "…" slug: … sources: - name: … url: … ---`, then a body with
  one paragraph per line. That line is not valid YAML, so `_unfold` rebuilds
  ordinary YAML from it before loading it.
* **multiline**: ordinary YAML front matter, then a Markdown body.

The body's layout is decided by the body, not the front matter; see
`body_to_markdown`.
"""

from __future__ import annotations

import codecs
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from django.utils.text import slugify

__all__ = [
    "SourceData",
    "StoryFile",
    "StoryFileError",
    "body_to_markdown",
    "line_layout_to_markdown",
    "parse_story",
]

Status = Literal["published", "draft"]

# Keys of the schema.
STORY_KEYS = (
    "headline", "slug", "category", "story_number", "date", "status", "breaking",
    "dek", "summary", "sources",
)
# Common front matter keys we accept and ignore, so such files still import.
IGNORED_KEYS = ("author", "byline", "tags", "updated")
SOURCE_KEYS = ("name", "url", "domain")

# Column sizes of newsroom.models, checked here so that every database rejects
# the same files (SQLite would store an over-long value silently).
MAX_HEADLINE = 300
MAX_SLUG = 200
MAX_CATEGORY = 100
MAX_SOURCE_NAME = 200
MAX_URL = 1000
MAX_DOMAIN = 253
MAX_STORY_NUMBER = 2_147_483_647

# Limits for files from anywhere: each keeps one hostile file from crashing the
# parser (PyYAML composes nested collections recursively) or from taking more
# than a fraction of a second, and names itself in the message.
MAX_FILE_BYTES = 1_000_000  # about 130 times the seed story
MAX_FRONT_MATTER_CHARS = 64_000  # 100 sources of ordinary length fit in a quarter
MAX_DEPTH = 5  # the schema needs 3: front matter > sources > a source
MAX_SOURCES = 100
MAX_ITEMS = MAX_SOURCES  # entries of any other list or mapping in the front matter
MIN_YEAR, MAX_YEAR = 1900, 2999  # outside this a date is a typo, or overflows a time zone

# A line-layout line this short without closing punctuation is a heading.
MAX_HEADING = 80
_TERMINAL = ".!?…:;,"
_CLOSERS = "\"'\N{RIGHT DOUBLE QUOTATION MARK}\N{RIGHT SINGLE QUOTATION MARK}»)]"


class StoryFileError(ValueError):
    """A story file that cannot be imported; `reason` says why, for a person."""

    def __init__(self, reason: str, *, name: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.name = name

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}" if self.name else self.reason


@dataclass(frozen=True)
class SourceData:
    name: str
    url: str
    domain: str


@dataclass(frozen=True)
class StoryFile:
    """One story as its file says it, validated against the model's rules.

    `date` stays a naive or aware value as written: which time zone a bare date
    means is a setting, and this module does not read settings.
    """

    headline: str
    slug: str
    category: str  # a category slug or name, as written
    date: dt.date | dt.datetime
    body_markdown: str
    story_number: int | None = None
    status: Status = "published"
    breaking: bool = False
    dek: str = ""
    sources: tuple[SourceData, ...] = ()


# --- Reading -----------------------------------------------------------------


def parse_story(text: str | bytes, *, name: str = "<string>") -> StoryFile:
    """Parse a story file in either layout; raise `StoryFileError` if it is unusable."""
    try:
        front, body, folded = _split(_decode(text))
        return _story(_load_front_matter(front, folded=folded), body)
    except StoryFileError as exc:
        raise StoryFileError(exc.reason, name=name) from None


def _decode(text: str | bytes) -> str:
    if len(text) > MAX_FILE_BYTES:  # characters for text, close enough
        raise StoryFileError(f"the file is larger than {MAX_FILE_BYTES:,} bytes")
    if isinstance(text, str) and "\0" in text:
        raise StoryFileError("not a text file (it contains NUL characters)")
    if isinstance(text, bytes):
        if b"\0" in text:
            raise StoryFileError("not a text file (it contains NUL bytes)")
        bom = len(codecs.BOM_UTF8) if text.startswith(codecs.BOM_UTF8) else 0
        try:
            text = text[bom:].decode("utf-8")
        except UnicodeDecodeError as exc:
            offset = bom + exc.start
            raise StoryFileError(
                f"not UTF-8 text (byte 0x{text[offset]:02x} at offset {offset})"
            ) from None
    text = text.removeprefix("\ufeff")
    # CRs before a LF are Windows line ends; a lone CR is an old Mac one.
    return re.sub(r"\r*\n", "\n", text).replace("\r", "\n")


def _split(text: str) -> tuple[str, str, bool]:
    """(front matter, body, folded?) of a whole file."""
    if not text.strip():
        raise StoryFileError("the file is empty")
    lines = text.lstrip("\n").split("\n")
    first = lines[0].rstrip()
    if first == "---":
        for index, line in enumerate(lines[1:], start=1):
            if line.rstrip() == "---":
                return "\n".join(lines[1:index]), "\n".join(lines[index + 1:]), False
        raise StoryFileError("the front matter is never closed: no '---' line after it")
    if re.match(r"---\s", first):
        if len(first) < 7 or not re.search(r"\s---$", first):
            raise StoryFileError(
                "the one-line front matter is never closed: the first line must end in ' ---'"
            )
        return first[3:-3].strip(), "\n".join(lines[1:]), True
    raise StoryFileError("no front matter: the file must start with a '---' line")


# --- Unfolding the one-line front matter ---------------------------------------


def _alternatives(keys: tuple[str, ...]) -> str:
    return "(?:" + "|".join(keys) + ")"


_TOP_KEYS = _alternatives(STORY_KEYS + IGNORED_KEYS)
_ITEM_KEYS = _alternatives(SOURCE_KEYS)
_TOP_KEY = rf"{_TOP_KEYS}:(?=\s|$)"
_ITEM_KEY = rf"{_ITEM_KEYS}:(?=\s|$)"
_AT_TOP_KEY = re.compile(rf"({_TOP_KEYS}):(?:\s+|$)")
_AT_ITEM_KEY = re.compile(rf"({_ITEM_KEYS}):(?:\s+|$)")
_AT_ITEM = re.compile(r"-(?:\s+|$)")
# Where a plain (unquoted) value ends, in each context.
_END_TOP = re.compile(rf"\s+(?={_TOP_KEY})|$")
_END_MAPPING_ITEM = re.compile(rf"\s+(?={_TOP_KEY}|{_ITEM_KEY}|-\s+{_ITEM_KEY})|$")
_END_SCALAR_ITEM = re.compile(rf"\s+(?={_TOP_KEY}|-(?:\s|$))|$")


def _unfold(folded: str) -> str:
    """Rebuild ordinary YAML from front matter folded onto one line.

    The line is split only where a known key follows whitespace (`slug: `, and
    `name: `/`url: `/`domain: ` inside `sources`) and where a list item `- `
    starts; never inside a quoted or bracketed value, and never at a colon
    without a space after it, as in `https://`. Each value is copied as written,
    so YAML still decides its quoting and type. An unquoted value that itself
    contains ` slug: ` and the like is ambiguous in this layout: quote it.
    """
    out: list[str] = []
    pos = _skip_space(folded, 0)
    while pos < len(folded):
        match = _AT_TOP_KEY.match(folded, pos)
        if match is None:
            raise StoryFileError(
                f"cannot read the one-line front matter at {folded[pos:pos + 40]!r}: "
                f"expected one of the keys {', '.join(STORY_KEYS)}"
            )
        key, pos = match[1], match.end()
        if _AT_ITEM.match(folded, pos):
            out.append(f"{key}:")
            pos = _unfold_sequence(folded, pos, out)
        else:
            value, pos = _value(folded, pos, _END_TOP)
            out.append(f"{key}: {value}".rstrip())
        pos = _skip_space(folded, pos)
    return "\n".join(out) + "\n"


def _unfold_sequence(folded: str, pos: int, out: list[str]) -> int:
    while (item := _AT_ITEM.match(folded, pos)) is not None:
        pos = item.end()
        if _AT_ITEM_KEY.match(folded, pos) is None:
            value, pos = _value(folded, pos, _END_SCALAR_ITEM)
            out.append(f"  - {value}".rstrip())
        else:
            bullet = "  - "
            while (match := _AT_ITEM_KEY.match(folded, pos)) is not None:
                value, pos = _value(folded, match.end(), _END_MAPPING_ITEM)
                out.append(f"{bullet}{match[1]}: {value}".rstrip())
                bullet = "    "
                pos = _skip_space(folded, pos)
        pos = _skip_space(folded, pos)
    return pos


def _value(folded: str, pos: int, end: re.Pattern[str]) -> tuple[str, int]:
    """The raw text of one value starting at `pos`, and where it ends."""
    scan_from = pos
    if pos < len(folded) and folded[pos] in "\"'[{":
        # Skip a quoted or bracketed value whole, so nothing inside it ends it;
        # anything after it up to the next key stays for YAML to judge.
        scan_from = _skip_quoted(folded, pos) if folded[pos] in "\"'" else _skip_flow(folded, pos)
    stop = end.search(folded, scan_from)
    assert stop is not None  # every pattern can match at the end
    return folded[pos:stop.start()].strip(), stop.start()


def _skip_quoted(text: str, pos: int) -> int:
    """The index just past the YAML quoted scalar starting at `pos`."""
    quote, i = text[pos], pos + 1
    while i < len(text):
        if quote == '"' and text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            if quote == "'" and text[i + 1:i + 2] == "'":  # '' is an escaped '
                i += 2
                continue
            return i + 1
        i += 1
    return len(text)


def _skip_flow(text: str, pos: int) -> int:
    """The index just past the YAML flow collection (`[…]`, `{…}`) at `pos`."""
    depth, i, previous = 0, pos, ""
    while i < len(text):
        char = text[i]
        if char in "\"'" and previous in "[{,:":
            i = _skip_quoted(text, i)
            previous = char
            continue
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
        if not char.isspace():
            previous = char
        i += 1
    return len(text)


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


# --- YAML ----------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys and names the bad date it meets."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                if key_node.value in seen:
                    raise StoryFileError(f"the key {key_node.value!r} appears twice")
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> dt.date | dt.datetime:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise StoryFileError(f"invalid date {node.value!r}: {exc}") from None
        except AttributeError:  # an explicit !!timestamp on text that is no date at all
            raise StoryFileError(f"invalid date {node.value!r}: not a date") from None


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


def _check_shape(yaml_text: str) -> None:
    """Refuse aliases, deep nesting and long lists from the event stream.

    Events come from PyYAML's iterative parser, before its recursive composer
    builds anything: 5,000 nested brackets would be a RecursionError there, and
    a 20,000-item list would be built whole before `_sources` could count it.
    """
    open_collections: list[list[int]] = []  # [is a mapping, child nodes seen] of each
    top_key: object = None  # the front matter key whose value is being read
    for event in yaml.parse(yaml_text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            # Nothing in a story needs them, and they are how "billion laughs" works.
            raise StoryFileError("YAML aliases (*name) are not allowed in the front matter")
        if isinstance(event, yaml.CollectionEndEvent):
            open_collections.pop()
            continue
        if not isinstance(event, yaml.NodeEvent):
            continue  # stream and document boundaries
        if open_collections:
            parent = open_collections[-1]
            parent[1] += 1
            is_mapping, seen = parent
            if len(open_collections) == 1 and seen % 2 == 1:
                top_key = getattr(event, "value", None)
            if ((seen + 1) // 2 if is_mapping else seen) > MAX_ITEMS:
                raise StoryFileError(_too_many(top_key, depth=len(open_collections)))
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_collections) >= MAX_DEPTH:
                raise StoryFileError(
                    f"the front matter is nested more than {MAX_DEPTH} levels deep"
                )
            open_collections.append([isinstance(event, yaml.MappingStartEvent), 0])


def _too_many(top_key: object, *, depth: int) -> str:
    if depth == 1:
        return f"the front matter has more than {MAX_ITEMS} keys"
    if top_key == "sources" and depth == 2:
        return f"a story may have at most {MAX_SOURCES} sources"
    return f"{str(top_key)[:40]!r} has more than {MAX_ITEMS} items"


def _load_front_matter(front: str, *, folded: bool) -> dict[str, Any]:
    if len(front) > MAX_FRONT_MATTER_CHARS:
        raise StoryFileError(
            f"the front matter is longer than {MAX_FRONT_MATTER_CHARS:,} characters"
        )
    yaml_text = _unfold(front) if folded else front
    try:
        _check_shape(yaml_text)
        data = yaml.load(yaml_text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.context_mark or exc.problem_mark  # context: where a bad value starts
        problem = "; ".join(filter(None, [exc.context, exc.problem])) or "invalid YAML"
        if mark is None:
            where = ""
        elif folded:
            line = yaml_text.split("\n")[mark.line].strip()
            where = f" near {line!r}"
            if "mapping values" in problem:
                problem += " (put a value that contains ': ' in quotes)"
        else:
            where = f" on line {mark.line + 2} of the file"
        raise StoryFileError(f"invalid YAML in the front matter{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise StoryFileError(f"invalid YAML in the front matter: {exc}") from None
    if data is None:
        raise StoryFileError("the front matter is empty")
    if not isinstance(data, dict):
        raise StoryFileError("the front matter must be 'key: value' lines")
    unknown = sorted(str(key) for key in data if key not in STORY_KEYS + IGNORED_KEYS)
    if unknown:
        # Refused rather than ignored: a misspelt `status: draft` would publish.
        raise StoryFileError(
            f"unknown key {unknown[0]!r} in the front matter "
            f"(known keys: {', '.join(STORY_KEYS + IGNORED_KEYS)})"
        )
    return data


# --- Validation ----------------------------------------------------------------


def _story(data: dict[str, Any], body: str) -> StoryFile:
    headline = " ".join(_text(data, "headline", required=True, max_length=MAX_HEADLINE).split())
    slug = _text(data, "slug", max_length=MAX_SLUG)
    if not slug:
        slug = slugify(headline)[:MAX_SLUG].strip("-_")
        if not slug:
            raise StoryFileError("cannot make a slug from the headline; add a 'slug'")
    elif not re.fullmatch(r"[-a-zA-Z0-9_]+", slug):
        raise StoryFileError(
            f"slug {slug!r} may contain only letters, digits, hyphens and underscores"
        )
    category = _text(data, "category", required=True, max_length=MAX_CATEGORY)
    if not slugify(category):
        raise StoryFileError(f"cannot make a category slug from {category!r}")
    dek = _text(data, "dek")
    summary = _text(data, "summary")
    if dek and summary and dek != summary:
        raise StoryFileError("give either 'dek' or 'summary', not both")
    body_markdown = body_to_markdown(body)
    if not body_markdown:
        raise StoryFileError("the story has no body")
    return StoryFile(
        headline=headline,
        slug=slug,
        category=category,
        date=_date(data.get("date")),
        body_markdown=body_markdown,
        story_number=_story_number(data.get("story_number")),
        status=_status(data.get("status")),
        breaking=_breaking(data.get("breaking")),
        dek=dek or summary,
        sources=_sources(data.get("sources")),
    )


def _describe(value: object) -> str:
    if isinstance(value, dt.date):
        return "a date"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return repr(value)


def _text(
    data: dict[str, Any], key: str, *, required: bool = False, max_length: int | None = None,
    label: str | None = None,
) -> str:
    label = label or key
    value = data.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # `story_number`-like values: a headline may be "1984"
    if value is not None and not isinstance(value, str):
        raise StoryFileError(f"{label} must be text, not {_describe(value)}; put it in quotes")
    value = (value or "").strip()
    if required and not value:
        raise StoryFileError(f"the front matter has no {label}")
    if max_length is not None and len(value) > max_length:
        raise StoryFileError(f"{label} is longer than {max_length} characters")
    return value


def _date(value: object) -> dt.date | dt.datetime:
    if value is None or value == "":
        raise StoryFileError("the front matter has no date")
    if isinstance(value, str):
        text = value.strip()
        for parse in (dt.date.fromisoformat, dt.datetime.fromisoformat):
            try:
                value = parse(text)
                break
            except ValueError:
                continue
    if isinstance(value, dt.date):
        if not MIN_YEAR <= value.year <= MAX_YEAR:
            raise StoryFileError(f"the date's year must be between {MIN_YEAR} and {MAX_YEAR}")
        return value
    raise StoryFileError(
        f"invalid date {_describe(value)}: write YYYY-MM-DD or an ISO 8601 date and time"
    )


def _story_number(value: object) -> int | None:
    if value is None or value == "":
        return None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value, re.ASCII):
        number = int(value)
    if number is None or not 0 <= number <= MAX_STORY_NUMBER:
        raise StoryFileError(f"story_number must be a whole number, not {_describe(value)}")
    return number


def _status(value: object) -> Status:
    if value is None:
        return "published"
    if isinstance(value, str) and value.strip().lower() in ("published", "draft"):
        return "draft" if value.strip().lower() == "draft" else "published"
    raise StoryFileError(f"status must be 'published' or 'draft', not {_describe(value)}")


def _breaking(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    raise StoryFileError(f"breaking must be true or false, not {_describe(value)}")


def _sources(value: object) -> tuple[SourceData, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise StoryFileError("sources must be a list of 'name:'/'url:' entries")
    sources = []
    for number, item in enumerate(value, start=1):
        if not isinstance(item, dict):
            raise StoryFileError(f"source {number} must have a name and a url")
        label = f"source {number}"
        name = _text(item, "name", max_length=MAX_SOURCE_NAME, label=f"{label} name")
        if name:
            label = f"source {number} ({name})"
        if not name:
            raise StoryFileError(f"{label} has no name")
        url = _text(item, "url", max_length=MAX_URL, label=f"{label} url")
        if not url:
            raise StoryFileError(f"{label} has no url")
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:  # "Invalid IPv6 URL" for a stray bracket, and the like
            host = None
        else:
            if parts.scheme.lower() not in ("http", "https"):
                host = None
        if not host or re.search(r"[\s\x00-\x1f\x7f]", url):
            raise StoryFileError(f"{label} url {url!r} is not an http(s) address")
        domain = _text(item, "domain", max_length=MAX_DOMAIN, label=f"{label} domain")
        sources.append(SourceData(name=name, url=url, domain=domain or _domain(url)))
    return tuple(sources)


def _domain(url: str) -> str:
    """The host a reader recognises: `https://www.wsj.com/…` is `wsj.com`."""
    return (urlsplit(url).hostname or "").removeprefix("www.")[:MAX_DOMAIN]


# --- Body ----------------------------------------------------------------------

_CLOSING_QUOTE = re.compile(
    r"(?P<quote>[\"“”„«»].*[\"“”„«»])\s*"
    r"(?:\N{EM DASH}|\N{EN DASH}|\N{HORIZONTAL BAR}|--)\s*(?P<who>\S.*)"
)
# Lines Markdown reads as block syntax; a body made of nothing else is Markdown.
_BLOCK_SYNTAX = re.compile(r"#{1,6}(?:\s|$)|>|[-*+](?:\s|$)|\d+[.)](?:\s|$)|```|~~~|\s{4}|\|")
# Paragraph starts that Markdown would read as syntax, and their escaped form.
_ESCAPE_FIRST = re.compile(r"[\\#>*+\-_`]|\[[^\]]*\]:")
_ESCAPE_NUMBER = re.compile(r"(\d+)([.)])(?=\s|$)")


def body_to_markdown(body: str) -> str:
    """The stored Markdown for a body in either layout.

    Which layout a body is in is read from the body itself:

    * It is Markdown if a blank line separates two of its lines (Markdown needs
      blank lines between blocks, and the line layout never has them), or if it
      has several lines and every one is Markdown block syntax (a lone list or
      block quote).
    * Otherwise it is the line layout: one paragraph per line. Reading such a
      body as Markdown would run all its paragraphs into one, the worst misread;
      reading a blank-line-free Markdown body as lines at worst shows a stray
      `#` or `>`.
    """
    lines = body.split("\n")
    while lines and not lines[0].strip():
        del lines[0]
    text = "\n".join(lines).rstrip()
    if not text:
        return ""
    lines = text.split("\n")
    blank_between = any(not line.strip() for line in lines)
    all_syntax = len(lines) > 1 and all(_BLOCK_SYNTAX.match(line) for line in lines)
    return text if blank_between or all_syntax else line_layout_to_markdown(lines)


def line_layout_to_markdown(lines: list[str]) -> str:
    """Markdown for a line-layout body: paragraphs, `##` headings, a closing quote.

    * A line of at most 80 characters that does not end in closing punctuation
      (`. ! ? … : ; ,`, looked for behind any closing quote or bracket) and is
      not the last line is a section heading, like "What to Watch".
    * A last line that is a quotation followed by a dash and a name,
      `"…"— Rush Doshi, Georgetown scholar`, becomes a block quote ending in
      its attribution.
    * Every other line is a paragraph. The line layout is plain text, so a
      paragraph starting with something Markdown reads as block syntax (`#`,
      `>`, `-`, `*`, `+`, `1.`, …) gets that character escaped, and stays a
      paragraph. Inline marks (`*word*`, links) are kept as written.
    """
    lines = [line.strip() for line in lines if line.strip()]
    blocks = []
    for index, line in enumerate(lines):
        last = index == len(lines) - 1
        if last and (quote := _CLOSING_QUOTE.fullmatch(line)):
            blocks.append(f"> {quote['quote']}\n>\n> — {quote['who']}")
        elif not last and _is_heading(line):
            blocks.append(f"## {_escape_heading(line)}")
        else:
            blocks.append(_escape_paragraph(line))
    return "\n\n".join(blocks)


def _is_heading(line: str) -> bool:
    core = line.rstrip(_CLOSERS)
    return (
        len(line) <= MAX_HEADING
        and bool(core)
        and core[-1] not in _TERMINAL
        and any(char.isalnum() for char in line)
    )


def _escape_paragraph(line: str) -> str:
    if _ESCAPE_FIRST.match(line):
        return "\\" + line
    return _ESCAPE_NUMBER.sub(r"\1\\\2", line, count=1) if _ESCAPE_NUMBER.match(line) else line


def _escape_heading(line: str) -> str:
    # Markdown drops a heading's closing #s.
    return line[:-1] + "\\#" if line.endswith("#") else line
