"""Importing story files into the database: the service and the command."""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
import sys
import zoneinfo
from io import StringIO
from pathlib import Path

import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from django.db import IntegrityError
from django.test import override_settings

from newsroom import imports
from newsroom.importer import MAX_FILE_BYTES
from newsroom.imports import (
    Outcome,
    category_for_import,
    stories_import,
    story_files,
    story_import,
    story_read,
)
from newsroom.models import Category, Source, Story

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "seeds" / "000_cbcaa344d8bbce5f.txt"

pytestmark = pytest.mark.django_db


def story_text(slug: str = "a-story", *, extra: str = "", body: str = "A paragraph.") -> str:
    return (
        f"---\nheadline: Story {slug}\nslug: {slug}\ncategory: policy\n"
        f"date: 2026-05-08\n{extra}---\n{body}\n"
    )


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("import_stories", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


# --- The service ------------------------------------------------------------------


def test_seed_imports():
    assert story_import(story_read(SEED)) is Outcome.CREATED
    story = Story.objects.get()
    assert story.slug == "us-china-ai-talks-trump-xi-summit"
    assert story.headline.startswith("US and China Weigh First Official AI Risk Talks")
    assert (story.category.slug, story.category.name) == ("policy", "Policy")
    assert story.story_number == 14
    assert story.status == Story.Status.PUBLISHED
    assert story.published_at == dt.datetime(2026, 5, 8, tzinfo=dt.UTC)
    assert story.breaking is False
    assert [(s.name, s.domain, s.order) for s in story.sources.all()] == [
        ("The Wall Street Journal", "wsj.com", 0),
        ("Benzinga", "benzinga.com", 1),
        ("Digital Watch Observatory", "dig.watch", 2),
        ("Invezz", "invezz.com", 3),
        ("CommonWealth Magazine", "english.cw.com.tw", 4),
        ("Fox Business", "foxbusiness.com", 5),
    ]
    assert "\n\n## A Troubled Precedent\n\n" in story.body
    assert "\n\n## What to Watch\n\n" in story.body
    assert story.body.endswith(
        '\n\n> "The US should have pushed harder for deeper technical engagement."\n'
        ">\n> — Rush Doshi, Georgetown scholar"
    )
    assert story.body.count("\n\n") == 18  # 19 blocks: paragraphs stay apart


def test_import_neither_publishes_nor_alerts(tmp_path):
    write(tmp_path, "a.md", story_text(extra="breaking: true\n"))
    assert stories_import([tmp_path]).created == 1
    assert Story.objects.get().breaking is True
    assert mail.outbox == []


def test_reimport_updates_by_slug_and_replaces_sources(tmp_path):
    sources = (
        "sources:\n  - name: A\n    url: https://a.example/1\n"
        "  - name: B\n    url: https://www.b.example/2\n"
    )
    path = write(tmp_path, "s.md", story_text(extra=sources))
    assert story_import(story_read(path)) is Outcome.CREATED
    story = Story.objects.get()
    stamp = story.updated_at

    assert story_import(story_read(path)) is Outcome.UNCHANGED
    story.refresh_from_db()
    assert story.updated_at == stamp
    assert list(story.sources.values_list("name", "domain")) == [("A", "a.example"),
                                                                 ("B", "b.example")]

    write(tmp_path, "s.md", story_text(extra="sources:\n  - name: C\n    url: https://c.example/\n",
                                       body="New text."))
    assert story_import(story_read(path)) is Outcome.UPDATED
    story.refresh_from_db()
    assert story.body == "New text."
    assert story.updated_at > stamp
    assert Story.objects.count() == 1
    assert list(Source.objects.values_list("name", "order")) == [("C", 0)]


def test_reimport_counts(tmp_path):
    write(tmp_path, "a.txt", story_text("a"))
    write(tmp_path, "b.txt", story_text("b"))
    first = stories_import([tmp_path])
    assert (first.created, first.updated, first.unchanged, first.failed) == (2, 0, 0, 0)
    write(tmp_path, "b.txt", story_text("b", body="Changed."))
    write(tmp_path, "c.txt", story_text("c"))
    second = stories_import([tmp_path])
    assert (second.created, second.updated, second.unchanged, second.failed) == (1, 1, 1, 0)
    assert Story.objects.count() == 3


def test_missing_slug_unknown_category_and_draft(tmp_path):
    path = write(tmp_path, "d.md", (
        "---\nheadline: 'Budget: what changes in 2027'\ncategory: Science & Tech\n"
        "date: 2026-05-08 14:30:00\nstatus: draft\nsummary: Two lines.\n---\nBody.\n"
    ))
    with override_settings(TIME_ZONE="Europe/Paris"):
        story_import(story_read(path))
    story = Story.objects.get()
    assert story.slug == "budget-what-changes-in-2027"
    assert (story.category.slug, story.category.name) == ("science-tech", "Science & Tech")
    assert story.status == Story.Status.DRAFT
    assert story.published_at == dt.datetime(
        2026, 5, 8, 14, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")
    )
    assert story.dek == "Two lines."


def test_category_found_by_slug_or_name():
    Category.objects.create(name="World News", slug="world")
    assert category_for_import("world").slug == "world"
    assert category_for_import("world news").slug == "world"
    assert category_for_import("world-news").slug == "world"  # its name, made from the slug
    created = category_for_import("ai-safety")
    assert (created.slug, created.name) == ("ai-safety", "Ai safety")
    assert Category.objects.count() == 2


def test_folders_are_walked_sorted_skipping_hidden_files(tmp_path):
    write(tmp_path, "b/2.md", "x")
    write(tmp_path, "b/1.TXT", "x")
    write(tmp_path, "a.txt", "x")
    write(tmp_path, "notes.rst", "x")
    write(tmp_path, ".hidden.txt", "x")
    write(tmp_path, ".git/x.md", "x")
    files, missing = story_files([tmp_path, tmp_path / "a.txt", tmp_path / "nope"])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a.txt", "b/1.TXT", "b/2.md"]
    assert missing == [tmp_path / "nope"]


BAD_FILES = {
    "empty.txt": (b"", "the file is empty"),
    "binary.txt": (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "not a text file (it contains NUL bytes)"),
    "latin1.txt": (story_text("l", body="Caf\xe9.").encode("latin-1"), "not UTF-8 text"),
    "plain.md": (b"Just a paragraph.\n", "no front matter"),
    "unclosed.md": (b"---\nheadline: H\ncategory: c\n", "the front matter is never closed"),
    "yaml.md": (b"---\nheadline: [unclosed\n---\nBody.\n", "invalid YAML in the front matter"),
    "noheadline.md": (b"---\ncategory: c\ndate: 2026-05-08\n---\nB.\n",
                      "the front matter has no headline"),
    "nocategory.md": (b"---\nheadline: H\ndate: 2026-05-08\n---\nB.\n",
                      "the front matter has no category"),
    "baddate.md": (story_text("d").replace("2026-05-08", "2026-02-30").encode(), "invalid date"),
    "number.md": (story_text("n", extra="story_number: twelve\n").encode(),
                  "story_number must be a whole number"),
    "status.md": (story_text("s", extra="status: live\n").encode(),
                  "status must be 'published' or 'draft'"),
    "source.md": (story_text("u", extra="sources:\n  - name: Reuters\n").encode(),
                  "source 1 (Reuters) has no url"),
}


def test_bad_files_are_reported_and_leave_nothing(tmp_path):
    for name, (content, _) in BAD_FILES.items():
        write(tmp_path, f"bad/{name}", content)
    write(tmp_path, "good/1.md", story_text("good-one"))
    write(tmp_path, "good/2.txt", SEED.read_text())
    report = stories_import([tmp_path / "good", tmp_path / "bad", tmp_path / "missing.md"])

    assert (report.created, report.failed) == (2, len(BAD_FILES) + 1)
    reasons = {path.name: reason for path, reason in report.failures}
    for name, (_, reason) in BAD_FILES.items():
        assert reasons[name].startswith(reason), (name, reasons[name])
    assert reasons["missing.md"] == "no such file or folder"
    assert set(Story.objects.values_list("slug", flat=True)) == {
        "good-one", "us-china-ai-talks-trump-xi-summit",
    }
    assert list(Category.objects.values_list("slug", flat=True)) == ["policy"]


def test_unreadable_file(tmp_path, monkeypatch):
    locked = write(tmp_path, "locked.md", story_text("locked"))
    write(tmp_path, "open.md", story_text("open"))
    open_ = Path.open

    def guarded(path: Path, *args, **kwargs):
        if path.name == "locked.md":  # chmod 000 means nothing to root, who runs CI
            raise PermissionError(13, "Permission denied", str(path))
        return open_(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", guarded)
    report = stories_import([tmp_path])
    assert report.failures == [(locked, "cannot read the file: Permission denied")]
    assert report.created == 1


def test_database_failure_rolls_back_the_whole_file(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise IntegrityError("refused")

    path = write(tmp_path, "a.md", story_text(extra="sources:\n  - name: A\n    url: https://a.example/\n")
                 .replace("policy", "brand-new"))
    monkeypatch.setattr(Source.objects, "bulk_create", refuse)
    report = stories_import([path])
    assert report.failures == [(path, "the database refused it: refused")]
    assert not Story.objects.exists()
    assert not Category.objects.exists()


def test_two_files_with_one_slug(tmp_path):
    write(tmp_path, "a.md", story_text("same"))
    write(tmp_path, "b.md", story_text("same", body="Other."))
    report = stories_import([tmp_path])
    assert report.created == 1
    assert report.failures == [
        (tmp_path / "b.md", f"slug 'same' was already imported from {tmp_path / 'a.md'}")
    ]
    assert Story.objects.get().body == "A paragraph."


def test_bom_crlf_and_both_layouts(tmp_path):
    folded = (
        '--- headline: "Folded: one line" category: world date: 2026-05-08 ---\r\n'
        "First.\r\nA Heading\r\nSecond.\r\n"
    )
    write(tmp_path, "f.txt", b"\xef\xbb\xbf" + folded.encode())
    write(tmp_path, "m.md", "\ufeff" + story_text("m", body="First.\n\n## Heading\n\n> Quote."))
    assert stories_import([tmp_path]).created == 2
    assert Story.objects.get(slug="folded-one-line").body == "First.\n\n## A Heading\n\nSecond."
    assert Story.objects.get(slug="m").body == "First.\n\n## Heading\n\n> Quote."


def test_whatever_one_file_raises_the_import_goes_on(tmp_path, monkeypatch):
    """Issue 12: a RecursionError or a urlsplit ValueError stopped the whole run."""
    write(tmp_path, "1-nested.md", story_text("n", extra="dek: " + "[" * 5000 + "]" * 5000 + "\n"))
    write(tmp_path, "2-bracket.md", story_text(
        "b", extra="sources:\n  - name: A\n    url: http://[oops.example/\n"))
    write(tmp_path, "3-bug.md", story_text("bug"))
    write(tmp_path, "4-big.md", story_text("big", body="x" * MAX_FILE_BYTES))
    write(tmp_path, "5-good.md", story_text("good"))
    real_import = imports.story_import

    def buggy(data):
        if data.slug == "bug":
            raise RecursionError("maximum recursion depth exceeded")
        return real_import(data)

    monkeypatch.setattr(imports, "story_import", buggy)
    report = stories_import([tmp_path])
    reasons = {path.name: reason for path, reason in report.failures}
    assert reasons == {
        "1-nested.md": "the front matter is nested more than 5 levels deep",
        "2-bracket.md": "source 1 (A) url 'http://[oops.example/' is not an http(s) address",
        "3-bug.md": "unexpected error: RecursionError: maximum recursion depth exceeded",
        "4-big.md": "the file is larger than 1,000,000 bytes",
    }
    assert list(Story.objects.values_list("slug", flat=True)) == ["good"]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """One hostile variant of a story file: bytes flipped, cut, doubled or spliced."""
    out = bytearray(data)
    snippets = [b"[" * 4000, b"http://[", b"]", b"&a ", b"*a ", b"\x00", b"\xff", b"---",
                b": ", b"- ", b"'", b'"', b"date: 0001-01-01 ", b"sources: - name: x "]
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out) + 1) if rng.random() < 0.3 else rng.randrange(1200)
        choice = rng.randrange(4)
        if choice == 0:
            out[at:at] = rng.choice(snippets)
        elif choice == 1:
            del out[at:at + rng.randint(1, 40)]
        elif choice == 2:
            out[at:at + 1] = bytes([rng.randrange(256)])
        else:
            out[at:at] = out[at:at + rng.randint(1, 100)] * rng.randint(2, 30)
    return bytes(out)


def test_a_folder_of_mutated_files_is_imported_or_reported(tmp_path):
    """Every one of 300 hostile variants of the seed is imported or reported by name."""
    rng = random.Random(12)  # fixed: the same 300 files on every run
    seed = SEED.read_bytes()
    for number in range(300):
        own_slug = seed.replace(b"us-china-ai-talks-trump-xi-summit", b"s%03d" % number)
        write(tmp_path, f"{number:03}.txt", _mutate(rng, own_slug))
    report = stories_import([tmp_path])
    assert report.imported + report.failed == 300
    assert all(reason for _, reason in report.failures)
    assert not [reason for _, reason in report.failures if reason.startswith("unexpected")]
    assert report.failed > 100 and report.imported > 10  # both roads were taken


def test_command_writes_odd_file_names_on_one_line(tmp_path):
    write(tmp_path, "new\nline.md", "no front matter")
    write(tmp_path, os.fsdecode(b"caf\xe9.md"), "no front matter")
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="2 of 2 files failed"):
        call_command("import_stories", str(tmp_path), stdout=out, stderr=err)
    lines = err.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("'") and "caf\\udce9.md" in lines[0]
    assert "new\\nline.md" in lines[1]


# --- The command ------------------------------------------------------------------


def test_command_reports_counts_on_the_last_line(tmp_path):
    write(tmp_path, "a.md", story_text("a"))
    write(tmp_path, "b.md", story_text("b"))
    out, err = run(str(tmp_path), "--no-progress")
    assert out.splitlines()[-1] == (
        "Imported 2 stories: 2 created, 0 updated, 0 unchanged, 0 failed."
    )
    assert err == ""
    write(tmp_path, "b.md", story_text("b", body="Changed."))
    write(tmp_path, "c.md", "not a story")
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="1 of 3 files failed"):
        call_command("import_stories", str(tmp_path), stdout=out, stderr=err)
    assert out.getvalue().splitlines()[-1] == (
        "Imported 2 stories: 0 created, 1 updated, 1 unchanged, 1 failed."
    )
    assert err.getvalue() == (
        f"{tmp_path / 'c.md'}: no front matter: the file must start with a '---' line\n"
    )


def test_command_in_a_real_process(tmp_path):
    """Exit status and output of `manage.py import_stories`, against its own database."""
    write(tmp_path, "in/good.txt", SEED.read_text())
    write(tmp_path, "in/bad.md", "---\nheadline: H\n")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
        )

    migrated = manage("migrate", "--no-input", "-v0")
    assert migrated.returncode == 0, migrated.stderr
    result = manage("import_stories", str(tmp_path / "in"))
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == (
        "Imported 1 story: 1 created, 0 updated, 0 unchanged, 1 failed."
    )
    assert f"{tmp_path / 'in' / 'bad.md'}: the front matter is never closed" in result.stderr
    again = manage("import_stories", str(tmp_path / "in" / "good.txt"))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == (
        "Imported 1 story: 0 created, 0 updated, 1 unchanged, 0 failed."
    )
