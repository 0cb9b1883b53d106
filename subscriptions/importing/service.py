"""Bring a list in, take it out: `subscribers_import` and `subscribers_export`.

An import reads the rows, decides for each what it means here, and writes the
decisions a chunk at a time (one transaction each, set-based: bulk inserts and
one look-up of the chunk's known addresses). The decisions are the report, so a
dry run, which decides and writes nothing, prints the same report. The rules:

- Every address goes through `normalise_email`; a line it refuses is reported
  with the reason and nothing of it is saved (nor is a line that repeats an
  address, or whose dates cannot be read).
- Subscribed at the source → active here, with the source's consent time and a
  consent record marked as imported (method "import"): they consented there,
  and a second opt-in mail to a whole list looks like spam and loses readers.
  `require_confirmation` makes them pending and mails the double opt-in instead.
- Unsubscribed, cleaned, bounced, complained → a suppressed row (never active),
  so a later sign-up form or import cannot mail them by mistake.
- Never confirmed at the source → skipped (reported), or pending and asked with
  `require_confirmation`.
- An address we know keeps what it chose here: an import never re-activates a
  suppressed reader, never changes an active reader's topics, and suppresses an
  active one only if they left the source after they confirmed here. A pending
  one is activated (they had consented there).
- Writing only what changes makes a re-import change nothing and add no
  consent records; an interrupted import is finished by running it again.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from celery import current_app
from django.db import IntegrityError, transaction
from django.utils import timezone

from newsroom.models import Category
from subscriptions.addresses import AddressError, normalise_email
from subscriptions.importing import formats
from subscriptions.importing.bulk import insert_rows
from subscriptions.importing.formats import ExportRow, Source, SourceRow
from subscriptions.models import TEXT_LIMIT, ConsentRecord, Subscriber

logger = logging.getLogger(__name__)

CHUNK_SIZE = 5000  # rows per transaction: large enough for bulk inserts, small for locks
PREVIEW_ROWS = 10
MAX_LISTED = 500  # bad and skipped lines listed in a report; all are counted
IMPORT_METHOD = "import"  # ConsentRecord.method of every record an import writes


class ImportRefused(ValueError):
    """The import cannot start (unknown topic in a mapping, unreadable file)."""


@dataclass
class ImportOptions:
    format: str
    mapping: dict[str, str] = field(default_factory=dict)  # their tag -> our topic slug
    source_list: str = ""  # a tag every row has (a per-list export)
    require_confirmation: bool = False
    dry_run: bool = False
    chunk_size: int = CHUNK_SIZE


@dataclass
class ImportReport:
    format: str = ""
    dry_run: bool = False
    rows: int = 0
    new: int = 0  # new active (or pending, asked to confirm) subscribers
    suppressed: int = 0  # new suppressed rows, and known readers suppressed now
    updated: int = 0  # known pending readers activated
    unchanged: int = 0
    kept_suppressed: int = 0  # of unchanged: left here, subscribed there; stay out
    skipped: int = 0  # never confirmed at the source
    bad: int = 0
    bad_lines: list[tuple[str, str]] = field(default_factory=list)
    skipped_lines: list[tuple[str, str]] = field(default_factory=list)
    unmapped_tags: dict[str, int] = field(default_factory=dict)
    preview: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImportReport:
        report = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        report.bad_lines = [(str(line), str(why)) for line, why in report.bad_lines]
        report.skipped_lines = [(str(line), str(why)) for line, why in report.skipped_lines]
        return report

    def lines(self) -> Iterator[str]:
        """The report as text (the command prints it; the admin shows the same)."""
        verb = "would be" if self.dry_run else "were"
        dry = " — dry run, nothing saved" if self.dry_run else ""
        yield f"{self.rows} rows read ({self.format}){dry}:"
        yield f"  {self.new} new subscribers {verb} added"
        yield f"  {self.suppressed} {verb} suppressed (unsubscribed, cleaned, bounced)"
        yield f"  {self.updated} known pending subscribers {verb} activated"
        yield (f"  {self.unchanged} known subscribers unchanged "
               f"({self.kept_suppressed} of them unsubscribed here and kept out)")
        yield f"  {self.skipped} skipped (never confirmed at the source)"
        yield f"  {self.bad} bad lines, nothing of them saved"
        for line, reason in self.bad_lines:
            yield f"    line {line}: {reason}"
        if self.bad > len(self.bad_lines):
            yield f"    … and {self.bad - len(self.bad_lines)} more"
        for line, reason in self.skipped_lines:
            yield f"    line {line} skipped: {reason}"
        if self.unmapped_tags:
            yield ("  Tags with no topic (add --map \"Tag=topic\"; the readers were imported "
                   "without them):")
            for tag, count in sorted(self.unmapped_tags.items(), key=lambda kv: (-kv[1], kv[0])):
                yield f"    {tag!r}: {count} rows"


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """`["Tag A=policy", …]` as a dict; ImportRefused for a pair without `=`."""
    mapping = {}
    for pair in pairs:
        tag, eq, slug = pair.rpartition("=")
        if not eq or not tag.strip() or not slug.strip():
            raise ImportRefused(f"--map {pair!r}: write it as \"Their tag=topic-slug\".")
        mapping[tag.strip()] = slug.strip()
    return mapping


def topic_lookup(mapping: dict[str, str]) -> dict[str, int]:
    """Lower-cased tag -> Category id: the mapping first, then our own slugs as they are
    (so Newsroom's exports come back without a mapping)."""
    by_slug = {slug.lower(): pk for pk, slug in Category.objects.values_list("pk", "slug")}
    lookup = dict(by_slug)
    unknown = sorted(slug for slug in mapping.values() if slug.lower() not in by_slug)
    if unknown:
        raise ImportRefused(f"No topic with the slug {', '.join(map(repr, unknown))}; "
                            f"topics are: {', '.join(sorted(by_slug)) or '(none yet)'}.")
    for tag, slug in mapping.items():
        lookup[tag.lower()] = by_slug[slug.lower()]
    return lookup


@dataclass
class _Planned:
    order: int
    row: SourceRow
    email: str
    category_ids: list[int]


@dataclass
class _Writes:
    # (plan, status, confirmed_at, unsubscribed_at, suppression_reason) of new rows
    new: list[tuple[_Planned, str, datetime | None, datetime | None, str]] = field(
        default_factory=list)
    changed: list[Subscriber] = field(default_factory=list)
    changed_fields: set[str] = field(default_factory=set)
    # (subscriber id, or the address of a new one; action; at; IP; details)
    consents: list[tuple[int | str, str, datetime, str | None, dict[str, Any]]] = field(
        default_factory=list)
    to_confirm: list[str] = field(default_factory=list)  # addresses of new pending rows


class _Run:
    """One import: the report it builds and the chunks it writes."""

    def __init__(self, options: ImportOptions, topics: dict[str, int]) -> None:
        self.options, self.topics = options, topics
        self.report = ImportReport(format=options.format, dry_run=options.dry_run)
        self.seen: set[int] = set()  # hashes of the addresses read: repeats are refused
        self.unmapped: Counter[str] = Counter()
        self.preview: list[tuple[int, dict[str, str]]] = []
        self.now = timezone.now()

    # --- reading ---------------------------------------------------------------------

    def _show(self, order: int, row: SourceRow, email: str, outcome: str,
              topics: list[str] | None = None) -> None:
        if order < PREVIEW_ROWS:
            self.preview.append((order, {
                "line": row.line, "email": email or row.email, "name": row.name,
                "status": row.status,
                "topics": ", ".join(topics if topics is not None else row.tags),
                "consented_at": row.consented_at.isoformat() if row.consented_at else "",
                "outcome": outcome,
            }))

    def _bad(self, order: int, row: SourceRow, reason: str) -> None:
        self.report.bad += 1
        if len(self.report.bad_lines) < MAX_LISTED:
            self.report.bad_lines.append((row.line, reason))
        self._show(order, row, "", f"bad: {reason}")

    def prepare(self, order: int, row: SourceRow) -> _Planned | None:
        self.report.rows += 1
        if row.problem:
            self._bad(order, row, row.problem)
            return None
        if not row.email:
            self._bad(order, row, "no email address")
            return None
        try:
            email = normalise_email(row.email)
        except AddressError as exc:
            self._bad(order, row, f"{row.email!r}: {exc}")
            return None
        key = hash(email)
        if key in self.seen:
            self._bad(order, row, f"{email} appears on an earlier line")
            return None
        self.seen.add(key)
        if row.status == formats.PENDING and not self.options.require_confirmation:
            self.report.skipped += 1
            if len(self.report.skipped_lines) < MAX_LISTED:
                self.report.skipped_lines.append(
                    (row.line, "never confirmed at the source (--require-confirmation asks them)"))
            self._show(order, row, email, "skipped: never confirmed")
            return None
        tags = [*row.tags, self.options.source_list] if self.options.source_list else row.tags
        category_ids = []
        for tag in tags:
            pk = self.topics.get(tag.lower())
            if pk is None:
                self.unmapped[tag] += 1
            elif pk not in category_ids:
                category_ids.append(pk)
        row.tags = tags
        return _Planned(order, row, email, category_ids)

    # --- deciding ----------------------------------------------------------------------

    def _consent(self, who: int | str, action: str, at: datetime | None,
                 row: SourceRow, **details: Any
                 ) -> tuple[int | str, str, datetime, str | None, dict[str, Any]]:
        return (who, action, at or self.now, row.ip_address, {
            "source": self.options.format, "line": row.line, "source_status": row.status,
            "imported_at": self.now.isoformat(), **details,
        })

    def _new(self, plan: _Planned, writes: _Writes) -> str:
        row = plan.row
        pending = self.options.require_confirmation and row.status not in formats.SUPPRESSED
        left_at, reason = None, ""
        if row.status in formats.SUPPRESSED:
            status, confirmed_at = row.status, row.consented_at
            left_at = row.left_at or self.now
            reason = (row.reason or f"{row.status} (imported)")[:TEXT_LIMIT]
            outcome, self.report.suppressed = "new, suppressed", self.report.suppressed + 1
        elif pending:
            status, confirmed_at = Subscriber.Status.PENDING, None
            writes.to_confirm.append(plan.email)
            outcome, self.report.new = "new, asked to confirm", self.report.new + 1
        else:
            status, confirmed_at = Subscriber.Status.ACTIVE, row.consented_at or self.now
            outcome, self.report.new = "new", self.report.new + 1
        writes.new.append((plan, status, confirmed_at, left_at, reason))
        topics = [tag for tag in row.tags if self.topics.get(tag.lower()) in plan.category_ids]
        if row.consented_at or row.status not in formats.SUPPRESSED:
            writes.consents.append(self._consent(
                plan.email, ConsentRecord.Action.SIGNUP, row.consented_at, row,
                topics=sorted(set(topics)), **({"require_confirmation": True} if pending else {})))
        if row.status in (formats.UNSUBSCRIBED, formats.COMPLAINED):
            writes.consents.append(self._consent(
                plan.email, ConsentRecord.Action.WITHDRAW, left_at, row, reason=reason))
        return outcome

    def _known(self, plan: _Planned, subscriber: Subscriber, writes: _Writes) -> str:
        row = plan.row
        if subscriber.status in Subscriber.SUPPRESSED:
            self.report.unchanged += 1
            if row.status not in formats.SUPPRESSED:
                self.report.kept_suppressed += 1
                return "known, unsubscribed here: kept out"
            return "known, already suppressed"
        if row.status in formats.SUPPRESSED:
            since = subscriber.confirmed_at or subscriber.created_at
            if row.left_at is not None and since is not None and row.left_at <= since:
                self.report.unchanged += 1
                return "known, subscribed here after leaving there: unchanged"
            subscriber.status = row.status
            subscriber.unsubscribed_at = row.left_at or self.now
            subscriber.suppression_reason = (row.reason or f"{row.status} (imported)")[:TEXT_LIMIT]
            writes.changed.append(subscriber)
            writes.changed_fields |= {"status", "unsubscribed_at", "suppression_reason"}
            if row.status != formats.BOUNCED:
                writes.consents.append(self._consent(
                    subscriber.pk, ConsentRecord.Action.WITHDRAW, subscriber.unsubscribed_at, row,
                    reason=subscriber.suppression_reason))
            self.report.suppressed += 1
            return "known, suppressed now"
        if subscriber.status == Subscriber.Status.PENDING and not self.options.require_confirmation:
            subscriber.status = Subscriber.Status.ACTIVE
            subscriber.confirmed_at = row.consented_at or self.now
            writes.changed.append(subscriber)
            writes.changed_fields |= {"status", "confirmed_at"}
            writes.consents.append(self._consent(
                subscriber.pk, ConsentRecord.Action.CONFIRM, row.consented_at, row))
            self.report.updated += 1
            return "known, pending: activated"
        self.report.unchanged += 1
        return "known, unchanged"

    def chunk(self, plans: list[_Planned]) -> None:
        """Decide and (unless a dry run) write one chunk; a lost race is retried once."""
        for attempt in range(2):
            saved = (self.report.new, self.report.suppressed, self.report.updated,
                     self.report.unchanged, self.report.kept_suppressed, len(self.preview))
            try:
                with transaction.atomic():
                    self._chunk(plans)
                return
            except IntegrityError:  # a sign-up of one of these addresses won the insert
                if attempt:
                    raise
                (self.report.new, self.report.suppressed, self.report.updated,
                 self.report.unchanged, self.report.kept_suppressed) = saved[:5]
                del self.preview[saved[5]:]

    def _chunk(self, plans: list[_Planned]) -> None:
        emails = [plan.email for plan in plans]
        known_rows = Subscriber.objects.filter(email__in=emails)
        if not self.options.dry_run:
            known_rows = known_rows.select_for_update()
        # Tuples, not model instances: most chunks of a re-import change nothing.
        known = {email: Subscriber(pk=pk, email=email, status=status, confirmed_at=confirmed_at,
                                   created_at=created_at)
                 for pk, email, status, confirmed_at, created_at in known_rows.values_list(
                     "pk", "email", "status", "confirmed_at", "created_at")}
        writes = _Writes()
        for plan in plans:
            subscriber = known.get(plan.email)
            outcome = (self._known(plan, subscriber, writes) if subscriber is not None
                       else self._new(plan, writes))
            self._show(plan.order, plan.row, plan.email, outcome,
                       [tag for tag in plan.row.tags if self.topics.get(tag.lower())])
        if not self.options.dry_run:
            self._write(writes)

    def _write(self, writes: _Writes) -> None:
        ids: dict[str, int] = {}
        if writes.new:
            insert_rows(Subscriber, ["email", "status", "confirmed_at", "unsubscribed_at",
                                     "suppression_reason"],
                        ((plan.email, *values) for plan, *values in writes.new))
            ids = dict(Subscriber.objects.filter(email__in=[plan.email for plan, *_ in writes.new])
                       .values_list("email", "pk"))
            insert_rows(Subscriber.categories.through, ["subscriber_id", "category_id"],
                        ((ids[plan.email], category_id) for plan, *_ in writes.new
                         for category_id in plan.category_ids))
        if writes.changed:
            Subscriber.objects.bulk_update(writes.changed, sorted(writes.changed_fields))
        insert_rows(ConsentRecord, ["subscriber_id", "action", "method", "at", "ip_address",
                                    "details"],
                    ((ids[who] if isinstance(who, str) else who, action, IMPORT_METHOD, at, ip,
                      details) for who, action, at, ip, details in writes.consents))
        if writes.to_confirm:
            confirm = [ids[email] for email in writes.to_confirm]
            transaction.on_commit(lambda: _ask_to_confirm(confirm))

    def finish(self) -> ImportReport:
        self.report.unmapped_tags = dict(self.unmapped)
        self.report.preview = [row for _order, row in sorted(self.preview, key=lambda p: p[0])]
        return self.report


def _ask_to_confirm(ids: list[int]) -> None:
    # By name: the task module imports the services, and this is one of them.
    for pk in ids:
        current_app.send_task("subscriptions.subscriber_email_send", args=[pk, "confirm"])


Progress = Callable[[ImportReport, int, int], None]  # report so far, bytes read, bytes in all


def subscribers_import(*, source: Source, options: ImportOptions,
                       progress: Progress | None = None) -> ImportReport:
    """Import `source` as `options` say; the report, also for a dry run (which saves
    nothing). ImportRefused before any row if the mapping names an unknown topic or
    the file lacks the format's address column."""
    run = _Run(options, topic_lookup(options.mapping))
    total = source.total_bytes
    plans: list[_Planned] = []
    try:
        for order, row in enumerate(source.rows()):
            plan = run.prepare(order, row)
            if plan is not None:
                plans.append(plan)
            if len(plans) >= options.chunk_size:
                run.chunk(plans)
                plans = []
                if progress:
                    progress(run.report, source.read_bytes[0], total)
    except formats.RowError as exc:  # raised for the file (a missing column), not a line
        raise ImportRefused(str(exc)) from None
    if plans:
        run.chunk(plans)
    report = run.finish()
    if progress:
        progress(report, total, total)
    logger.info("subscribers imported", extra={
        "format": options.format, "dry_run": options.dry_run, "rows": report.rows,
        "new": report.new, "suppressed": report.suppressed, "bad": report.bad})
    return report


def _export_rows() -> Iterator[ExportRow]:
    slugs = dict(Category.objects.values_list("pk", "slug"))
    Through = Subscriber.categories.through
    rows = (Subscriber.objects.filter(erased_at__isnull=True).order_by("pk")
            .values_list("pk", "email", "status", "confirmed_at", "created_at",
                         "unsubscribed_at", "suppression_reason"))
    last = 0
    while True:
        chunk = list(rows.filter(pk__gt=last)[:CHUNK_SIZE])
        if not chunk:
            return
        last = chunk[-1][0]
        topics: dict[int, list[str]] = {}
        for subscriber_id, category_id in Through.objects.filter(
                subscriber_id__gte=chunk[0][0], subscriber_id__lte=last
        ).values_list("subscriber_id", "category_id"):
            topics.setdefault(subscriber_id, []).append(slugs[category_id])
        for pk, email, status, confirmed_at, created_at, left_at, reason in chunk:
            yield ExportRow(email=email, status=status, topics=tuple(sorted(topics.get(pk, []))),
                            consented_at=confirmed_at or created_at, left_at=left_at,
                            reason=reason)


def subscribers_export(*, format: str, path: Path) -> int:
    """Every subscriber but the erased, written to `path` in `format`; how many rows.
    Formats with no place for a never-confirmed reader (all but csv) leave them out."""
    if format not in formats.WRITERS:
        raise ImportRefused(f"unknown format {format!r}: one of {', '.join(formats.FORMATS)}")
    return formats.WRITERS[format](_export_rows(), path)
