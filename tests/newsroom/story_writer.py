"""Writes story files, for the parser's round-trip tests: `parse_story(dump_story(s)) == s`.

Test support only: nothing in the product writes story files.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

import yaml

from newsroom.importer import StoryFile, StoryFileError, body_to_markdown

_MARKDOWN_QUOTE = re.compile(r"> (?P<quote>.+)\n>\n> — (?P<who>.+)")
_ESCAPED_FIRST = re.compile(r"\\(?=[\\#>*+\-_`\[])")
_ESCAPED_NUMBER = re.compile(r"(\d+)\\([.)])")


def _unescape_paragraph(block: str) -> str:
    if _ESCAPED_FIRST.match(block):
        return block[1:]
    return _ESCAPED_NUMBER.sub(r"\1\2", block, count=1) if _ESCAPED_NUMBER.match(block) else block


def _unescape_heading(text: str) -> str:
    return text[:-2] + "#" if text.endswith("\\#") else text


def _markdown_to_line_layout(markdown: str) -> str:
    blocks = markdown.split("\n\n")
    lines = []
    for index, block in enumerate(blocks):
        quote = _MARKDOWN_QUOTE.fullmatch(block)
        if index == len(blocks) - 1 and quote:
            lines.append(f"{quote['quote']}— {quote['who']}")
        elif block.startswith("## "):
            lines.append(_unescape_heading(block[3:]))
        else:
            lines.append(_unescape_paragraph(block))
    text = "\n".join(lines)
    if body_to_markdown(text) != markdown:
        raise StoryFileError(
            "this body cannot be written in the folded layout, which holds only "
            "paragraphs, '## ' headings and a closing quote; use the multiline layout"
        )
    return text


def dump_story(story: StoryFile, *, layout: Literal["folded", "multiline"]) -> str:
    """A story file that `parse_story` reads back to `story`.

    `folded` writes the seed files' layout (one-line front matter, one
    paragraph per line); `multiline` writes ordinary YAML and the Markdown body.
    Raises `StoryFileError` for a body the chosen layout cannot hold.
    """
    fields: dict[str, Any] = {
        "headline": story.headline,
        "slug": story.slug,
        "category": story.category,
        "story_number": story.story_number,
        "date": story.date,
        "status": "draft" if story.status == "draft" else None,
        "breaking": True if story.breaking else None,
        "dek": story.dek or None,
    }
    fields = {key: value for key, value in fields.items() if value is not None}
    sources = [
        {"name": source.name, "url": source.url, "domain": source.domain}
        for source in story.sources
    ]
    if layout == "folded":
        parts = [f"{key}: {_folded_scalar(value)}" for key, value in fields.items()]
        if sources:
            parts.append("sources:")
            for source in sources:
                parts.append("- " + " ".join(
                    f"{key}: {_folded_scalar(value)}" for key, value in source.items()
                ))
        return f"--- {' '.join(parts)} ---\n{_markdown_to_line_layout(story.body_markdown)}\n"
    if layout == "multiline":
        if sources:
            fields["sources"] = sources
        if body_to_markdown(story.body_markdown) != story.body_markdown:
            raise StoryFileError("this body would not read back as the same Markdown")
        front = yaml.safe_dump(
            fields, sort_keys=False, allow_unicode=True, width=1_000_000,
            default_flow_style=False,
        )
        return f"---\n{front}---\n{story.body_markdown}\n"
    raise ValueError(f"layout must be 'folded' or 'multiline', not {layout!r}")


_PLAIN_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 .,;!?/&=+%~()'_@$*:#-]*")


def _folded_scalar(value: object) -> str:
    """One value as YAML on a single line: plain when that reads back the same."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.date):  # datetimes too; PyYAML reads both back
        return value.isoformat()
    text = str(value)
    if (
        _PLAIN_SAFE.fullmatch(text)
        and not re.search(r":(?:\s|$)|\s#|\s$", text)
        and _reads_back(text)
    ):
        return text
    return yaml.dump(
        text, Dumper=yaml.SafeDumper, default_style='"', allow_unicode=True, width=1_000_000
    ).rstrip("\n")


def _reads_back(text: str) -> bool:
    try:
        return yaml.safe_load(f"key: {text}") == {"key": text}
    except yaml.YAMLError:
        return False
