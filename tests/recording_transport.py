"""A transport that keeps each reader's prebuilt message in memory, for model-based
tests that send thousands of digests in one run (the SMTP listener is the real edge
everywhere else). Installed in place of the configured one: `patch_transport`."""

from __future__ import annotations

from dataclasses import dataclass

from subscriptions.sending.transports.base import Batch, Result, Transport


@dataclass(frozen=True)
class Kept:
    recipient: str
    data: bytes


SENT: list[Kept] = []


class RecordingTransport(Transport):
    name = "recording"
    batch_limit = 250

    def send(self, batch: Batch) -> list[Result]:
        SENT.extend(Kept(r.email, batch.render(r)) for r in batch.recipients)
        return [Result(r.delivery_id, "sent") for r in batch.recipients]
