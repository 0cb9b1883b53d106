"""Email backends of our own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.smtp import EmailBackend as DjangoSMTPBackend

from newsroom.smtp_pipelining import Envelope, Outcome, PipeliningConnection


class OutboxBackend(BaseEmailBackend):
    """Write each message to its own `.eml` file, which any mail program opens.

    Django's file backend appends a whole session to one log file; one file per
    message is what a person (or a test) wants to open and click through.
    """

    def __init__(self, *, file_path: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.folder = Path(file_path or settings.EMAIL_FILE_PATH)

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # addresses inside
        for message in email_messages:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
            final = self.folder / f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
            partial = final.with_suffix(".part")
            partial.write_bytes(message.message().as_bytes(linesep="\r\n"))
            partial.rename(final)  # readers never see half a message
        return len(email_messages)

    def send_prebuilt(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        """Write messages built by `subscriptions.mime` as they are."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # addresses inside
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        outcomes = []
        for envelope in envelopes:
            final = self.folder / f"{stamp}-{envelope.key}-{uuid.uuid4().hex[:8]}.eml"
            partial = final.with_suffix(".part")
            partial.write_bytes(envelope.data)
            partial.rename(final)
            outcomes.append(Outcome(envelope.key, 250, "written to the outbox", "end"))
        return outcomes

    @contextmanager
    def prebuilt_session(self) -> Iterator[None]:
        """Nothing to hold open between calls; here for the SMTP backend's sake."""
        yield


class SMTPBackend(DjangoSMTPBackend):
    """Django's SMTP backend, plus a pipelined road for prebuilt list mail.

    Ordinary messages (confirmations, admin mail) go through Django's code;
    editions call `send_prebuilt`, a batch's calls within one `prebuilt_session`
    (one pipelined SMTP session, reopened if it breaks).
    """

    _pipe: PipeliningConnection | None = None

    def _new_pipe(self) -> PipeliningConnection:
        return PipeliningConnection(
            self.host, self.port, username=self.username or "", password=self.password or "",
            use_tls=self.use_tls, use_ssl=self.use_ssl, timeout=self.timeout,
            # Django's cached property, missing from django-stubs.
            ssl_context=(self.ssl_context  # type: ignore[attr-defined]
                         if (self.use_tls or self.use_ssl) else None),
        )

    @contextmanager
    def prebuilt_session(self) -> Iterator[None]:
        """Keep one session for every `send_prebuilt` call made inside."""
        self._pipe = self._new_pipe()
        try:
            yield
        finally:
            pipe, self._pipe = self._pipe, None
            pipe.close()

    def send_prebuilt(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        if self._pipe is not None:
            return self._pipe.send(envelopes)  # opens it first, or again after a failure
        with self._new_pipe() as connection:
            return connection.send(envelopes)
