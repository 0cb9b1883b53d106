"""A real SMTP server on loopback for the tests (aiosmtpd), advertising PIPELINING.

Every accepted message is kept in memory and also written to a folder as an
.eml file, so tests read mail the same way whether it went through SMTP or the
outbox backend. Recipients can be made to fail, permanently or for a while.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller


@dataclass
class Received:
    mail_from: str
    rcpt_to: str
    data: bytes


@dataclass
class SinkHandler:
    folder: Path | None = None
    messages: list[Received] = field(default_factory=list)
    reject: dict[str, str] = field(default_factory=dict)  # address -> SMTP reply
    refused: list[str] = field(default_factory=list)  # each RCPT answered from `reject`
    reject_data: str = ""  # an SMTP reply to every DATA, if set
    lock: threading.Lock = field(default_factory=threading.Lock)
    delay: float = 0.0  # seconds to take over each message (to make a send last)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.reject.get(address.lower())
        if reply:
            self.refused.append(address)
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.reject_data:
            return self.reject_data
        data = envelope.original_content or envelope.content
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.messages.append(Received(envelope.mail_from, rcpt, data))
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            name = f"smtp-{time.time_ns()}-{uuid.uuid4().hex[:8]}"  # sorts by arrival
            (self.folder / f"{name}.part").write_bytes(data)
            (self.folder / f"{name}.part").rename(self.folder / f"{name}.eml")
        return f"250 2.0.0 Ok: queued as {uuid.uuid4().hex[:10].upper()}"

    def counts(self) -> dict[str, int]:
        """How many messages each recipient got."""
        with self.lock:
            tally: dict[str, int] = {}
            for m in self.messages:
                tally[m.rcpt_to.lower()] = tally.get(m.rcpt_to.lower(), 0) + 1
            return tally

    def to(self, address: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if m.rcpt_to.lower() == address.lower()]


class SMTPSink:
    def __init__(self, port: int, folder: Path | None = None) -> None:
        self.handler = SinkHandler(folder=folder)
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=port,
                                     data_size_limit=10_000_000)
        self.port = port

    def start(self) -> SMTPSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
