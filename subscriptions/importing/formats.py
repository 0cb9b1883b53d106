"""The list formats of other newsletter tools, read and written.

Each format turns its file into `SourceRow`s (one per subscriber line, with the
line it came from) and writes `ExportRow`s back in the same layout, so a list
can leave Newsroom the way it came in. The layouts, as their tools write them:

- **Mailchimp** audience export: a zip of three CSVs, subscribed, unsubscribed
  and cleaned members, headed `Email Address,First Name,Last Name,…,
  MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,…,LEID,EUID,NOTES,TAGS`;
  the unsubscribed file adds `UNSUB_TIME,UNSUB_CAMPAIGN_TITLE,UNSUB_CAMPAIGN_ID,
  UNSUB_REASON,UNSUB_REASON_OTHER`, the cleaned one `CLEAN_TIME,
  CLEAN_CAMPAIGN_TITLE,CLEAN_CAMPAIGN_ID`. TAGS is one cell of quoted,
  comma-separated names (`"Tag A","Tag B"`); times are UTC, `YYYY-MM-DD HH:MM:SS`.
  Seen in Ghost's migrator fixtures (github.com/TryGhost/migrate,
  packages/mg-mailchimp-members/src/test/fixtures/{subscribed,unsubscribed,
  cleaned}.csv) and described at ginkgo.st "Notes on MailChimp data exports".
  Which file a row is in is read from its columns (UNSUB_TIME, CLEAN_TIME), so
  the zip or any one of its files can be given.
- **listmonk** subscriber export: `uuid,email,name,attributes,status,
  created_at,updated_at` (knadh/listmonk cmd/subscribers.go, the CSV export
  handler), `attributes` a JSON object, `status` enabled|disabled|blocklisted,
  times in Go's `time.String()` form (`2024-01-02 03:04:05.123456 +0000 UTC`).
  The export has no list column: it is made per list (`--list NAME` says which),
  an optional `lists` column is read if present, and Newsroom writes a reader's
  topics and exact status into `attributes` (`newsroom_topics`,
  `newsroom_status`) so that its own exports come back whole.
- **Ghost** members export: `id,email,name,note,subscribed_to_emails,
  complimentary_plan,stripe_customer_id,created_at,deleted_at,labels,tiers`
  (TryGhost/Ghost ghost/members-csv, `unparse`, and its e2e export test);
  `labels` one cell of comma-separated names, times ISO 8601.
- **Substack** `email_list.<publication>.csv`: `email,active_subscription,expiry,
  plan,email_disabled,created_at,first_payment_at` (as read by TryGhost/migrate's
  mg-substack and by other importers); `active_subscription` is about payment,
  not mail; `email_disabled` true means the reader gets no email.
- **Plain CSV**: `email[,name][,topics][,status][,consented_at]` with topics
  separated by spaces, commas or `|`, status one of ours (or subscribed/cleaned),
  times ISO 8601.

Names are read and shown in the preview but not kept: Newsroom addresses no
reader by name, and data it does not hold cannot leak. Exports leave them empty.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

# Our statuses, as the importer understands a row (subscriptions.models.Subscriber.Status
# values, plus "pending": never confirmed at the source).
ACTIVE, PENDING = "active", "pending"
UNSUBSCRIBED, BOUNCED, COMPLAINED = "unsubscribed", "bounced", "complained"
SUPPRESSED = (UNSUBSCRIBED, BOUNCED, COMPLAINED)


class RowError(ValueError):
    """A line that cannot be imported; the message says why."""


@dataclass
class SourceRow:
    """One subscriber as another tool exported them."""

    line: str  # "12", or "cleaned_members_export.csv:12" inside a zip
    email: str
    status: str = ACTIVE
    name: str = ""
    tags: list[str] = field(default_factory=list)
    consented_at: datetime | None = None
    left_at: datetime | None = None  # unsubscribed or cleaned at the source
    ip_address: str | None = None
    reason: str = ""  # why they left, as the source put it
    problem: str = ""  # set when the line could not be read


@dataclass(frozen=True)
class ExportRow:
    email: str
    status: str
    topics: tuple[str, ...]
    consented_at: datetime | None
    left_at: datetime | None
    reason: str = ""


# --- Cells ------------------------------------------------------------------------

_GO_TIME = re.compile(r"^(\S+ \S+?)(?:\.(\d+))? ([+-]\d{4})(?: \S+)?$")


def parse_time(text: str) -> datetime | None:
    """ISO 8601, Mailchimp's `YYYY-MM-DD HH:MM:SS` or Go's time.String(); naive is UTC."""
    text = text.strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        match = _GO_TIME.match(text)
        if not match:
            raise RowError(f"{text!r} is not a date and time I can read") from None
        stamp, fraction, offset = match.groups()
        micro = (fraction or "0")[:6].ljust(6, "0")
        try:
            value = datetime.strptime(f"{stamp}.{micro} {offset}", "%Y-%m-%d %H:%M:%S.%f %z")
        except ValueError:
            raise RowError(f"{text!r} is not a date and time I can read") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _truthy(text: str) -> bool:
    return text.strip().lower() in {"true", "t", "1", "yes", "y"}


def split_tags(text: str, *, spaces: bool = False) -> list[str]:
    """Mailchimp's `"Tag A","Tag B"`, Ghost's `Tag A,Tag B`, or (`spaces`, our plain
    CSV's topic slugs) `a b|c`: the names, in order."""
    text = text.strip()
    if not text:
        return []
    if '"' in text:
        names = next(csv.reader([text], skipinitialspace=True))
    else:
        names = re.split(r"[\s,|]+" if spaces else r"[,|]", text)
    return [name.strip() for name in names if name.strip()]


def _quoted_tags(tags: Iterable[str]) -> str:
    return ",".join('"{}"'.format(tag.replace('"', "")) for tag in tags)


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else ""


def _plain(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _go(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC") if value else ""


# --- Reading ------------------------------------------------------------------------


class _Header:
    """Column positions by name, found case- and space-insensitively."""

    def __init__(self, names: list[str]) -> None:
        self.index = {name.strip().lower(): i for i, name in enumerate(names)}

    def has(self, name: str) -> bool:
        return name.lower() in self.index

    def getter(self, *names: str) -> Callable[[list[str]], str]:
        for name in names:
            i = self.index.get(name.lower())
            if i is not None:
                return functools.partial(_cell, i)
        return _no_cell


def _rows(text: IO[str], label: str) -> Iterator[tuple[str, _Header, list[str]]]:
    """(line label, header, cells) per non-empty line after the header."""
    reader = csv.reader(text)
    try:
        header = _Header(next(reader))
    except StopIteration:
        return
    prefix = f"{label}:" if label else ""
    for cells in reader:
        if cells and any(cell.strip() for cell in cells):
            yield f"{prefix}{reader.line_num}", header, cells


def _read_each(text: IO[str], label: str, required: str,
               build: Callable[[_Header], Callable[[str, list[str]], SourceRow]]
               ) -> Iterator[SourceRow]:
    make = None
    for line, header, cells in _rows(text, label):
        if make is None:
            if not header.has(required):
                raise RowError(f"{label or 'the file'} has no {required!r} column: "
                               "is it the right format?")
            make = build(header)
        try:
            yield make(line, cells)
        except RowError as exc:
            yield SourceRow(line=line, email="", problem=str(exc))


def read_mailchimp(text: IO[str], label: str = "") -> Iterator[SourceRow]:
    def build(h: _Header) -> Callable[[str, list[str]], SourceRow]:
        email = h.getter("Email Address")
        first, last = h.getter("First Name"), h.getter("Last Name")
        optin, confirm = h.getter("OPTIN_TIME"), h.getter("CONFIRM_TIME")
        ip = h.getter("CONFIRM_IP", "OPTIN_IP")
        tags = h.getter("TAGS")
        if h.has("CLEAN_TIME"):
            status, left = BOUNCED, h.getter("CLEAN_TIME")
            why: Callable[[list[str]], str] = lambda row: "cleaned in Mailchimp"  # noqa: E731
        elif h.has("UNSUB_TIME"):
            status, left = UNSUBSCRIBED, h.getter("UNSUB_TIME")
            reason, other = h.getter("UNSUB_REASON"), h.getter("UNSUB_REASON_OTHER")
            why = lambda row: " ".join(filter(None, [reason(row), other(row)]))  # noqa: E731
        else:
            status, left, why = ACTIVE, (lambda row: ""), (lambda row: "")

        def make(line: str, row: list[str]) -> SourceRow:
            row_status, row_reason = status, why(row)
            if status == UNSUBSCRIBED and re.search(r"abuse|complain", row_reason, re.I):
                row_status = COMPLAINED
            return SourceRow(
                line=line, email=email(row), status=row_status,
                name=" ".join(filter(None, [first(row), last(row)])), tags=split_tags(tags(row)),
                consented_at=parse_time(confirm(row) or optin(row)), left_at=parse_time(left(row)),
                ip_address=ip(row) or None, reason=row_reason or ("" if status == ACTIVE else
                                                                  f"{status} in Mailchimp"))
        return make

    yield from _read_each(text, label, "Email Address", build)


_LISTMONK_STATUS = {"enabled": ACTIVE, "blocklisted": UNSUBSCRIBED, "disabled": UNSUBSCRIBED}


def read_listmonk(text: IO[str], label: str = "") -> Iterator[SourceRow]:
    def build(h: _Header) -> Callable[[str, list[str]], SourceRow]:
        email, name, attrs = h.getter("email"), h.getter("name"), h.getter("attributes")
        status, created, lists = h.getter("status"), h.getter("created_at"), h.getter("lists")
        sub_status, updated = h.getter("subscription_status"), h.getter("updated_at")

        def make(line: str, row: list[str]) -> SourceRow:
            try:
                attributes: Any = json.loads(attrs(row) or "{}")
            except ValueError:
                raise RowError("the attributes are not valid JSON") from None
            attributes = attributes if isinstance(attributes, dict) else {}
            raw = status(row).lower() or "enabled"
            if raw not in _LISTMONK_STATUS:
                raise RowError(f"unknown listmonk status {raw!r}")
            ours = _LISTMONK_STATUS[raw]
            if sub_status(row).lower() == "unsubscribed":
                ours = UNSUBSCRIBED
            elif sub_status(row).lower() == "unconfirmed" and ours == ACTIVE:
                ours = PENDING
            kept = attributes.get("newsroom_status")
            if ours in SUPPRESSED and kept in SUPPRESSED:
                ours = kept
            topics = attributes.get("newsroom_topics")
            tags = split_tags(lists(row)) + (
                [str(t) for t in topics] if isinstance(topics, list) else [])
            suppressed = ours in SUPPRESSED
            return SourceRow(
                line=line, email=email(row), status=ours, name=name(row), tags=tags,
                consented_at=parse_time(created(row)),
                left_at=parse_time(updated(row)) if suppressed else None,
                reason=f"{raw} in listmonk" if suppressed else "")
        return make

    yield from _read_each(text, label, "email", build)


def read_ghost(text: IO[str], label: str = "") -> Iterator[SourceRow]:
    def build(h: _Header) -> Callable[[str, list[str]], SourceRow]:
        email, name, labels = h.getter("email"), h.getter("name"), h.getter("labels")
        subscribed, created = h.getter("subscribed_to_emails"), h.getter("created_at")
        deleted, note = h.getter("deleted_at"), h.getter("note")

        def make(line: str, row: list[str]) -> SourceRow:
            gone = parse_time(deleted(row))
            # An empty cell is Ghost's default on import: subscribed.
            active = not gone and (subscribed(row) == "" or _truthy(subscribed(row)))
            kept = note(row).removeprefix("newsroom:") if note(row).startswith("newsroom:") else ""
            status = ACTIVE if active else (kept if kept in SUPPRESSED else UNSUBSCRIBED)
            return SourceRow(
                line=line, email=email(row), status=status, name=name(row),
                tags=split_tags(labels(row)), consented_at=parse_time(created(row)),
                left_at=gone, reason="" if active else "not subscribed to emails in Ghost")
        return make

    yield from _read_each(text, label, "email", build)


def read_substack(text: IO[str], label: str = "") -> Iterator[SourceRow]:
    def build(h: _Header) -> Callable[[str, list[str]], SourceRow]:
        email, disabled = h.getter("email"), h.getter("email_disabled")
        created = h.getter("created_at")

        def make(line: str, row: list[str]) -> SourceRow:
            off = _truthy(disabled(row))
            return SourceRow(
                line=line, email=email(row), status=UNSUBSCRIBED if off else ACTIVE,
                consented_at=parse_time(created(row)),
                reason="email disabled in Substack" if off else "")
        return make

    yield from _read_each(text, label, "email", build)


_CSV_STATUS = {
    "": ACTIVE, "active": ACTIVE, "subscribed": ACTIVE, "confirmed": ACTIVE,
    "pending": PENDING, "unconfirmed": PENDING,
    "unsubscribed": UNSUBSCRIBED, "bounced": BOUNCED, "cleaned": BOUNCED,
    "complained": COMPLAINED,
}


def read_csv(text: IO[str], label: str = "") -> Iterator[SourceRow]:
    def build(h: _Header) -> Callable[[str, list[str]], SourceRow]:
        email, name, topics = h.getter("email"), h.getter("name"), h.getter("topics")
        status, consented = h.getter("status"), h.getter("consented_at")
        left, reason = h.getter("left_at"), h.getter("reason")

        def make(line: str, row: list[str]) -> SourceRow:
            raw = status(row).lower()
            if raw not in _CSV_STATUS:
                raise RowError(f"unknown status {raw!r} (active, pending, unsubscribed, "
                               "bounced or complained)")
            ours = _CSV_STATUS[raw]
            return SourceRow(line=line, email=email(row), status=ours, name=name(row),
                             tags=split_tags(topics(row), spaces=True),
                             consented_at=parse_time(consented(row)),
                             left_at=parse_time(left(row)),
                             reason=reason(row) or (f"{ours} (imported)" if ours in SUPPRESSED
                                                    else ""))
        return make

    yield from _read_each(text, label, "email", build)


READERS: dict[str, Callable[[IO[str], str], Iterator[SourceRow]]] = {
    "mailchimp": read_mailchimp, "listmonk": read_listmonk, "ghost": read_ghost,
    "substack": read_substack, "csv": read_csv,
}
FORMATS = tuple(READERS)


class CountingReader(io.RawIOBase):
    """A binary stream that counts the bytes read from it (for a progress bar)."""

    def __init__(self, raw: IO[bytes], counter: list[int]) -> None:
        self.raw, self.counter = raw, counter

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.counter[0] += len(data)
        return len(data)


@dataclass
class Source:
    """An uploaded or given file: its rows, and how far reading has got."""

    path: Path
    format: str
    read_bytes: list[int] = field(default_factory=lambda: [0])

    @property
    def total_bytes(self) -> int:
        if zipfile.is_zipfile(self.path):
            with zipfile.ZipFile(self.path) as archive:
                return sum(info.file_size for info in archive.infolist()) or 1
        return self.path.stat().st_size or 1

    def rows(self) -> Iterator[SourceRow]:
        if self.format not in READERS:
            raise RowError(f"unknown format {self.format!r}: one of {', '.join(FORMATS)}")
        reader = READERS[self.format]
        self.read_bytes[0] = 0
        if zipfile.is_zipfile(self.path):
            with zipfile.ZipFile(self.path) as archive:
                for info in archive.infolist():
                    if info.is_dir() or not info.filename.lower().endswith(".csv"):
                        continue
                    with archive.open(info) as member:
                        yield from reader(self._text(member), Path(info.filename).name)
            return
        with self.path.open("rb") as raw:
            yield from reader(self._text(raw), "")

    def _text(self, raw: IO[bytes]) -> IO[str]:
        counted = io.BufferedReader(CountingReader(raw, self.read_bytes), 1 << 16)
        return io.TextIOWrapper(counted, encoding="utf-8-sig", errors="replace", newline="")


# --- Writing ------------------------------------------------------------------------

_MAILCHIMP_COMMON = ["Email Address", "First Name", "Last Name", "MEMBER_RATING", "OPTIN_TIME",
                     "OPTIN_IP", "CONFIRM_TIME", "CONFIRM_IP", "LATITUDE", "LONGITUDE", "GMTOFF",
                     "DSTOFF", "TIMEZONE", "CC", "REGION"]
_MAILCHIMP_TAIL = ["LEID", "EUID", "NOTES", "TAGS"]
MAILCHIMP_FILES = {
    ACTIVE: ("subscribed_members_export.csv", ["LAST_CHANGED"]),
    UNSUBSCRIBED: ("unsubscribed_members_export.csv",
                   ["UNSUB_TIME", "UNSUB_CAMPAIGN_TITLE", "UNSUB_CAMPAIGN_ID", "UNSUB_REASON",
                    "UNSUB_REASON_OTHER"]),
    BOUNCED: ("cleaned_members_export.csv",
              ["CLEAN_TIME", "CLEAN_CAMPAIGN_TITLE", "CLEAN_CAMPAIGN_ID"]),
}


def _mailchimp_line(row: ExportRow, part: str) -> list[str]:
    common = [row.email, "", "", "2", _plain(row.consented_at), "", _plain(row.consented_at), "",
              "", "", "", "", "", "", ""]
    if part == ACTIVE:
        middle = [_plain(row.consented_at)]
    elif part == UNSUBSCRIBED:
        reason = "abuse complaint" if row.status == COMPLAINED else ""
        middle = [_plain(row.left_at), "", "", reason, ""]
    else:
        middle = [_plain(row.left_at), "", ""]
    return [*common, *middle, "", "", "", _quoted_tags(row.topics)]


def write_mailchimp(rows: Iterable[ExportRow], path: Path) -> int:
    """A zip of the three files, as Mailchimp's "Export Audience" gives."""
    buffers = {part: io.StringIO() for part in MAILCHIMP_FILES}
    writers = {part: csv.writer(buffers[part]) for part in MAILCHIMP_FILES}
    for part, (_name, extra) in MAILCHIMP_FILES.items():
        writers[part].writerow([*_MAILCHIMP_COMMON, *extra, *_MAILCHIMP_TAIL])
    count = 0
    for row in rows:
        part = {COMPLAINED: UNSUBSCRIBED}.get(row.status, row.status)
        if part not in writers:
            continue  # pending: Mailchimp's audience export has no such file
        writers[part].writerow(_mailchimp_line(row, part))
        count += 1
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for part, (name, _extra) in MAILCHIMP_FILES.items():
            archive.writestr(name, buffers[part].getvalue())
    return count


def _write_csv(path: Path, header: list[str], lines: Iterable[list[str]]) -> int:
    count = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        for line in lines:
            writer.writerow(line)
            count += 1
    return count


def write_listmonk(rows: Iterable[ExportRow], path: Path) -> int:
    def lines() -> Iterator[list[str]]:
        for row in rows:
            if row.status == PENDING:
                continue
            attributes = {"newsroom_topics": list(row.topics), "newsroom_status": row.status}
            status = "enabled" if row.status == ACTIVE else "blocklisted"
            yield ["", row.email, "", json.dumps(attributes), status, _go(row.consented_at),
                   _go(row.left_at or row.consented_at)]
    return _write_csv(path, ["uuid", "email", "name", "attributes", "status", "created_at",
                             "updated_at"], lines())


def write_ghost(rows: Iterable[ExportRow], path: Path) -> int:
    def lines() -> Iterator[list[str]]:
        for row in rows:
            if row.status == PENDING:
                continue
            note = "" if row.status == ACTIVE else f"newsroom:{row.status}"
            yield ["", row.email, "", note, "true" if row.status == ACTIVE else "false", "false",
                   "", _iso(row.consented_at), "", ",".join(row.topics), ""]
    return _write_csv(path, ["id", "email", "name", "note", "subscribed_to_emails",
                             "complimentary_plan", "stripe_customer_id", "created_at",
                             "deleted_at", "labels", "tiers"], lines())


def write_substack(rows: Iterable[ExportRow], path: Path) -> int:
    def lines() -> Iterator[list[str]]:
        for row in rows:
            if row.status == PENDING:
                continue
            yield [row.email, "false", "", "", "false" if row.status == ACTIVE else "true",
                   _iso(row.consented_at), ""]
    return _write_csv(path, ["email", "active_subscription", "expiry", "plan", "email_disabled",
                             "created_at", "first_payment_at"], lines())


def write_csv(rows: Iterable[ExportRow], path: Path) -> int:
    def lines() -> Iterator[list[str]]:
        for row in rows:
            yield [row.email, "", " ".join(row.topics), row.status, _iso(row.consented_at),
                   _iso(row.left_at), row.reason]
    return _write_csv(path, ["email", "name", "topics", "status", "consented_at", "left_at",
                             "reason"], lines())


WRITERS: dict[str, Callable[[Iterable[ExportRow], Path], int]] = {
    "mailchimp": write_mailchimp, "listmonk": write_listmonk, "ghost": write_ghost,
    "substack": write_substack, "csv": write_csv,
}


def _cell(i: int, row: list[str]) -> str:
    return row[i].strip() if i < len(row) else ""


def _no_cell(row: list[str]) -> str:
    return ""
