"""An email backend that keeps prebuilt messages in memory, for model-based tests
that send thousands of digests in one run (the SMTP listener is the real edge
everywhere else)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from django.core.mail.backends.base import BaseEmailBackend

from newsroom.smtp_pipelining import Envelope, Outcome

SENT: list[Envelope] = []


class RecordingBackend(BaseEmailBackend):
    def send_messages(self, email_messages) -> int:
        return len(email_messages)

    def send_prebuilt(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        SENT.extend(envelopes)
        return [Outcome(e.key, 250, "kept", "end") for e in envelopes]

    @contextmanager
    def prebuilt_session(self) -> Iterator[None]:
        yield
