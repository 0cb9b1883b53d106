"""The contract every transport keeps: one batch in, one outcome per delivery out.

A Transport is one road to the readers' inboxes (pipelined SMTP, an ESP's
batch API with merge data, one message per reader through any Django backend,
the outbox folder). The batch code (`sending/batches.py`) knows only this
class: it asks a transport how many recipients one call may carry
(`batch_limit`), whether it merges one content per call (`merges`,
`can_merge`) or takes each reader's prebuilt bytes, holds a `session()` open
across a batch's calls, and hands each call to `send()`.

`send()` never raises for a delivery's fate: every recipient comes back as
sent, failed (permanent: the same message would fail again, so it is recorded
and not retried) or retry (transient: the next attempt may pass). Which
exceptions are permanent is the transport's to say (`is_permanent`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Literal

Status = Literal["sent", "failed", "retry"]
# Longest error detail kept per delivery (Delivery.last_error).
DETAIL_LIMIT = 500


@dataclass(frozen=True)
class Recipient:
    delivery_id: int
    email: str
    values: dict[str, str]  # hole name -> value (email, manage_url, unsubscribe_url)
    headers: dict[str, str]  # per-recipient headers (List-Unsubscribe)
    message_id: str
    # The envelope sender when it is this reader's own (VERP, sending/verp.py);
    # "" = the batch's from_email. Only the SMTP road sets an envelope.
    return_path: str = ""


@dataclass(frozen=True)
class Result:
    delivery_id: int
    status: Status
    detail: str = ""
    esp_message_id: str = ""


# (subject, text, html), each reader's values spelt in a merge syntax ("%recipient.{}%").
MergeContent = Callable[[str], tuple[str, str, str]]


@dataclass(frozen=True)
class Batch:
    """One transport call's worth of recipients.

    `render` builds one reader's complete message (CRLF bytes), for the roads
    that take prebuilt messages; `merge` spells the call's one content in a
    merge syntax, for a transport that merges (None: the content can't be
    merged, or the call mixes contents).
    """

    from_email: str
    recipients: Sequence[Recipient]
    render: Callable[[Recipient], bytes]
    merge: MergeContent | None = None


class Transport:
    """One road to the readers; subclasses fill in `send` and their capabilities."""

    #: A short name, as in EMAIL_TRANSPORT ("smtp", "outbox", "mailgun", ...).
    name: ClassVar[str] = "transport"
    #: Recipients one `send()` may carry.
    batch_limit: ClassVar[int] = 1
    #: True when a call carries one content that the provider personalises per
    #: reader (merge data); False when each reader's message is prebuilt here,
    #: and a call may mix contents.
    merges: ClassVar[bool] = False

    def can_merge(self, subject: str, text: str, html: str) -> bool:
        """Whether this content can go through the merge road unchanged."""
        return False

    def is_permanent(self, exc: BaseException) -> bool:
        """Whether `exc`, raised for a delivery, would be raised again by a retry."""
        return False

    def status_of(self, exc: BaseException) -> Status:
        return "failed" if self.is_permanent(exc) else "retry"

    @contextmanager
    def session(self) -> Iterator[None]:
        """Hold one connection (SMTP session, HTTP session) across the calls made inside."""
        yield

    def send(self, batch: Batch) -> list[Result]:
        """Hand `batch` over; one Result per recipient, in any order."""
        raise NotImplementedError


def failed_all(recipients: Sequence[Recipient], status: Status, detail: str) -> list[Result]:
    """The same outcome for every recipient of a call (nothing of it was accepted)."""
    detail = detail[:DETAIL_LIMIT]
    return [Result(r.delivery_id, status, detail) for r in recipients]
