"""The outbox: every message an `.eml` file in a folder, which any mail program opens.

Django's file backend appends a whole session to one log file; one file per
message is what a person (or a test) wants to open and click through.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

from subscriptions.sending.transports.base import Batch, Result, Transport, failed_all


def _write(folder: Path, name: str, data: bytes) -> None:
    final = folder / f"{name}.eml"
    partial = final.with_suffix(".part")
    partial.write_bytes(data)
    partial.rename(final)  # readers never see half a message


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


class OutboxBackend(BaseEmailBackend):
    """The EMAIL_BACKEND for `outbox:`: ordinary messages, one file each."""

    def __init__(self, *, file_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.folder = Path(file_path or settings.EMAIL_FILE_PATH)

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # addresses inside
        for message in email_messages:
            _write(self.folder, f"{_stamp()}-{uuid.uuid4().hex[:8]}",
                   message.message().as_bytes(linesep="\r\n"))  # type: ignore[call-arg]
        return len(email_messages)


class OutboxTransport(Transport):
    """Editions' prebuilt messages written as they are, into the backend's folder."""

    name = "outbox"
    batch_limit = 250  # as SMTP's: how much a pause or cancel can let through

    def __init__(self, backend: OutboxBackend) -> None:
        self.folder = backend.folder

    def send(self, batch: Batch) -> list[Result]:
        stamp = _stamp()
        results: list[Result] = []
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # addresses inside
            for r in batch.recipients:
                _write(self.folder, f"{stamp}-{r.delivery_id}-{uuid.uuid4().hex[:8]}",
                       batch.render(r))
                results.append(Result(r.delivery_id, "sent"))
        except OSError as exc:  # a full disk, a missing folder: the rest, later
            return results + failed_all(batch.recipients[len(results):], self.status_of(exc),
                                        str(exc))
        return results
