"""Importing story files into the database.

Each file is its own transaction: a bad file is reported and leaves nothing
behind, and the files around it still import. Re-importing updates the story
with the same slug. Importing only writes rows: it never publishes through a
service and never sends an alert, however `breaking` is set.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from django.db import DatabaseError, transaction
from django.utils import timezone
from django.utils.text import slugify

from newsroom.importer import MAX_FILE_BYTES, StoryFile, StoryFileError, parse_story
from newsroom.models import Category, Source, Story

STORY_SUFFIXES = (".txt", ".md")

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failures: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def imported(self) -> int:
        return self.created + self.updated + self.unchanged


def stories_import(
    paths: Iterable[Path],
    *,
    progress: Callable[[list[Path]], Iterable[Path]] | None = None,
) -> ImportReport:
    """Import story files and folders of them; report what happened to each.

    `progress` wraps the list of files about to be imported (the command passes
    a tqdm bar), so the service stays free of terminal concerns.
    """
    report = ImportReport()
    files, missing = story_files(paths)
    report.failures.extend((path, "no such file or folder") for path in missing)
    slugs: dict[str, Path] = {}
    for path in progress(files) if progress else files:
        try:
            data = story_read(path)
            if data.slug in slugs:
                # Two files claiming one slug would silently overwrite each other.
                raise StoryFileError(
                    f"slug {data.slug!r} was already imported from {slugs[data.slug]}"
                )
            outcome = story_import(data)
        except StoryFileError as exc:
            report.failures.append((path, exc.reason))
            continue
        except DatabaseError as exc:
            report.failures.append((path, f"the database refused it: {exc}"))
            continue
        except Exception as exc:
            # A bug met by one file must not stop the files after it (issue 12:
            # a RecursionError did). Its transaction has rolled back; the
            # traceback goes to the log, the reason to the report.
            logger.exception("importing %s failed", path)
            report.failures.append((path, f"unexpected error: {type(exc).__name__}: {exc}"))
            continue
        slugs[data.slug] = path
        if outcome is Outcome.CREATED:
            report.created += 1
        elif outcome is Outcome.UPDATED:
            report.updated += 1
        else:
            report.unchanged += 1
    return report


def story_files(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """(files to import, paths that do not exist), in a deterministic order.

    Files named directly are taken whatever their suffix; folders are walked
    recursively for `*.txt` and `*.md`, sorted by path, skipping hidden files and
    folders (editor swap files, `.git`). Symlinked folders are not followed.
    """
    files: list[Path] = []
    missing: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            files.append(path)

    for path in map(Path, paths):
        try:
            is_dir, exists = path.is_dir(), path.exists()
        except OSError:  # a name too long for the file system, say
            is_dir = exists = False
        if is_dir:
            found = []
            for root, dirs, names in os.walk(path):
                dirs[:] = [name for name in dirs if not name.startswith(".")]
                found += [
                    Path(root) / name
                    for name in names
                    if not name.startswith(".")
                    and name.lower().endswith(STORY_SUFFIXES)
                    and (Path(root) / name).is_file()
                ]
            for file in sorted(found):
                add(file)
        elif exists:
            add(path)
        else:
            missing.append(path)
    return files, missing


def story_read(path: Path) -> StoryFile:
    """Read and parse one story file; every problem is a `StoryFileError`."""
    path = Path(path)
    if path.is_dir():
        raise StoryFileError("is a folder, not a story file")
    if not path.exists():
        raise StoryFileError("no such file or folder")
    if not path.is_file():  # a FIFO or device would block or never end
        raise StoryFileError("not a regular file")
    try:
        with path.open("rb") as file:
            # Read one byte past the limit rather than trust the size reported
            # before opening: a file may grow, and /proc files report 0.
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise StoryFileError(f"cannot read the file: {exc.strerror or exc}") from None
    return parse_story(raw, name=str(path))


@transaction.atomic
def story_import(data: StoryFile) -> Outcome:
    """Create or update the story with `data.slug`, and replace its sources.

    An import that changes nothing saves nothing, so `updated_at` keeps telling
    when an editor (or a changed file) last touched the story.
    """
    values = {
        "headline": data.headline,
        "category": category_for_import(data.category),
        "story_number": data.story_number,
        "dek": data.dek,
        "body": data.body_markdown,
        "status": Story.Status.DRAFT if data.status == "draft" else Story.Status.PUBLISHED,
        "breaking": data.breaking,
        # A draft keeps its date too, so publishing it later needs no edit.
        "published_at": _aware(data.date),
    }
    sources = [(source.name, source.url, source.domain) for source in data.sources]
    story = Story.objects.select_for_update().filter(slug=data.slug).first()
    if values["status"] == Story.Status.PUBLISHED and values["published_at"] and (
            story is None or story.status != Story.Status.PUBLISHED):
        # Goes live now (or at its scheduled time), whatever date it carries: a story
        # dated before digests already sent is in the next ones.
        values["live_since"] = max(values["published_at"], timezone.now())
    if story is None:
        story = Story.objects.create(slug=data.slug, **values)
        _sources_replace(story, sources)
        return Outcome.CREATED

    changed = [name for name, value in values.items() if getattr(story, name) != value]
    sources_changed = (
        list(story.sources.order_by("order", "id").values_list("name", "url", "domain"))
        != sources
    )
    if not changed and not sources_changed:
        return Outcome.UNCHANGED
    for name in changed:
        setattr(story, name, values[name])
    story.save(update_fields=[*changed, "updated_at"])
    if sources_changed:
        _sources_replace(story, sources)
    return Outcome.UPDATED


def category_for_import(value: str) -> Category:
    """The category a file names by slug or by name, created if there is none.

    A new category gets the slug of the value, and a name made from it:
    `policy` becomes "Policy", `Science & Tech` keeps its spelling.
    """
    slug = slugify(value)[:100].strip("-_")
    if value == slug:
        words = value.replace("-", " ").replace("_", " ")
        name = words[:1].upper() + words[1:]
    else:
        name = value
    found = (
        Category.objects.filter(slug=value).first()
        or Category.objects.filter(name__iexact=value).first()
        or Category.objects.filter(slug=slug).first()
        or Category.objects.filter(name__iexact=name).first()
    )
    return found or Category.objects.create(slug=slug, name=name)


def _sources_replace(story: Story, sources: list[tuple[str, str, str]]) -> None:
    story.sources.all().delete()
    Source.objects.bulk_create(
        Source(story=story, name=name, url=url, domain=domain, order=order)
        for order, (name, url, domain) in enumerate(sources)
    )


def _aware(value: dt.date | dt.datetime) -> dt.datetime:
    """A file's date as a moment: a bare date is midnight in settings.TIME_ZONE."""
    moment = value if isinstance(value, dt.datetime) else dt.datetime.combine(value, dt.time())
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, timezone.get_default_timezone())
    return moment
