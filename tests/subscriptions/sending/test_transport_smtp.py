"""The pipelined SMTP client against a real server (aiosmtpd, tests/smtp_sink.py).

Every test runs twice: against a server advertising PIPELINING and against one
that doesn't (the client must then go in lock-step). What matters in both:
each reply is matched to its own message, a failed transaction is reset
before the next, data is dot-stuffed, and a connection lost mid-batch says
exactly which messages are known, which are ambiguous and which never went.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from subscriptions.sending.transports.base import Batch, Recipient
from subscriptions.sending.transports.smtp import (
    Envelope,
    Outcome,
    PipeliningConnection,
    SMTPBackend,
    SMTPTransport,
    TransactionInterrupted,
)
from tests.settings_helpers import free_port
from tests.smtp_sink import SinkHandler, SMTPSink

SENDER = "news@example.com"


@dataclass
class RecordingHandler(SinkHandler):
    """The sink, recording each command in the order the server handled it.

    It can refuse a sender, refuse a message at the end of data, or hang up
    instead of answering the end of data (after taking the message).
    """

    pipelining: bool = True
    commands: list[str] = field(default_factory=list)
    refuse_sender: dict[str, str] = field(default_factory=dict)
    refuse_data: dict[str, str] = field(default_factory=dict)
    hang_up_on: set[str] = field(default_factory=set)

    def reset(self) -> None:
        with self.lock:
            self.messages.clear()
        for collection in (self.commands, self.reject, self.refuse_sender,
                           self.refuse_data, self.hang_up_on):
            collection.clear()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        if self.pipelining:
            return await super().handle_EHLO(server, session, envelope, hostname, responses)
        session.host_name = hostname
        return responses  # aiosmtpd itself advertises no PIPELINING

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.commands.append(f"MAIL {address}")
        if address in self.refuse_sender:
            return self.refuse_sender[address]
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.commands.append(f"RCPT {address}")
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_RSET(self, server, session, envelope):
        self.commands.append("RSET")
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        [rcpt] = envelope.rcpt_tos
        self.commands.append(f"DATA {rcpt}")
        if rcpt in self.refuse_data:
            return self.refuse_data[rcpt]
        await super().handle_DATA(server, session, envelope)
        if rcpt in self.hang_up_on:  # taken, but the answer never leaves
            server.transport.close()
        # A queue id naming the recipient: shows which message a reply belongs to.
        return f"250 2.0.0 Ok: queued as Q-{rcpt}"


@pytest.fixture(scope="module", params=[True, False], ids=["pipelining", "lock-step"])
def server(request: pytest.FixtureRequest) -> Iterator[SMTPSink]:
    sink = SMTPSink(free_port())
    sink.handler = RecordingHandler(pipelining=request.param)
    sink.controller.handler = sink.handler
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def handler(server: SMTPSink) -> RecordingHandler:
    server.handler.reset()
    return server.handler


class CountingSocket:
    """Counts the client's writes: one per round trip when pipelining."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.writes = 0

    def sendall(self, data: bytes, *args: Any) -> None:
        self.writes += 1
        self._sock.sendall(data, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@pytest.fixture
def connection(server: SMTPSink, handler: RecordingHandler) -> Iterator[PipeliningConnection]:
    conn = PipeliningConnection("127.0.0.1", server.port, timeout=5)
    conn.open()
    assert conn.smtp is not None and conn.pipelining is handler.pipelining
    conn.smtp.sock = CountingSocket(conn.smtp.sock)
    yield conn
    conn.close()


def envelope(key: int, recipient: str, *, sender: str = SENDER, body: str = "") -> Envelope:
    data = f"Subject: message {key}\r\nTo: {recipient}\r\n\r\n{body or f'Body {key}.'}\r\n"
    return Envelope(key, sender, recipient, data.encode())


def summary(outcomes: list[Outcome]) -> list[tuple[int, int, str]]:
    return [(o.key, o.code, o.stage) for o in outcomes]


def test_each_message_gets_its_own_outcome(connection, handler):
    handler.reject.update({"gone@example.com": "550 5.1.1 No such user",
                           "busy@example.com": "451 4.2.0 Mailbox busy"})
    handler.refuse_sender["blocked@example.com"] = "553 5.7.1 Sender refused"
    handler.refuse_data["spam@example.com"] = "554 5.7.1 Content refused"
    batch = [
        envelope(1, "ok1@example.com"), envelope(2, "gone@example.com"),
        envelope(3, "ok2@example.com"), envelope(4, "busy@example.com"),
        envelope(5, "ok3@example.com", sender="blocked@example.com"),
        envelope(6, "spam@example.com"), envelope(7, "ok4@example.com"),
    ]
    outcomes = connection.send(batch)

    assert summary(outcomes) == [
        (1, 250, "end"), (2, 550, "rcpt"), (3, 250, "end"), (4, 451, "rcpt"),
        (5, 553, "mail"), (6, 554, "end"), (7, 250, "end"),
    ]
    by_key = {o.key: o for o in outcomes}
    for key, rcpt in [(1, "ok1"), (3, "ok2"), (7, "ok4")]:
        assert by_key[key].accepted and by_key[key].reply.endswith(f"Q-{rcpt}@example.com")
    assert by_key[2].permanent and not by_key[4].permanent and by_key[6].permanent
    assert not any(by_key[k].accepted for k in (2, 4, 5, 6))
    sent = {e.recipient: e.data for e in batch}
    assert [(m.rcpt_to, m.data) for m in handler.messages] == [
        (r, sent[r]) for r in ("ok1@example.com", "ok2@example.com", "ok4@example.com")
    ]


def test_a_failed_transaction_is_reset_before_the_next(connection, handler):
    handler.reject["gone@example.com"] = "550 5.1.1 No such user"
    outcomes = connection.send([envelope(1, "gone@example.com"), envelope(2, "ok@example.com"),
                                envelope(3, "ok2@example.com")])
    assert summary(outcomes) == [(1, 550, "rcpt"), (2, 250, "end"), (3, 250, "end")]
    assert handler.commands == [
        f"MAIL {SENDER}", "RCPT gone@example.com",
        "RSET", f"MAIL {SENDER}", "RCPT ok@example.com", "DATA ok@example.com",
        f"MAIL {SENDER}", "RCPT ok2@example.com", "DATA ok2@example.com",  # no RSET needed
    ]


def test_pipelining_takes_one_round_trip_per_message(connection, handler):
    batch = [envelope(i, f"r{i}@example.com") for i in range(5)]
    writes_before = connection.smtp.sock.writes
    outcomes = connection.send(batch)
    writes = connection.smtp.sock.writes - writes_before

    assert all(o.accepted for o in outcomes) and [o.key for o in outcomes] == list(range(5))
    # Pipelined: each write carries the previous message's data and the next
    # MAIL, RCPT, DATA; plus the last data. Lock-step: four writes a message.
    assert writes == (len(batch) + 1 if handler.pipelining else 4 * len(batch))
    assert handler.commands == [
        c for i in range(5) for c in (f"MAIL {SENDER}", f"RCPT r{i}@example.com",
                                      f"DATA r{i}@example.com")
    ]


def test_data_is_dot_stuffed(connection, handler):
    """Data not made by mime.py may have lines starting with a dot, even a lone one."""
    tricky = [
        b".starts with a dot\r\n\r\n.\r\n..two dots\r\nend",  # no final CRLF either
        b"Subject: x\r\n\r\n.\r\n.\r\n",
    ]
    batch = [Envelope(i, SENDER, f"d{i}@example.com", data) for i, data in enumerate(tricky)]
    assert all(o.accepted for o in connection.send(batch))
    assert [m.data for m in handler.messages] == [
        b".starts with a dot\r\n\r\n.\r\n..two dots\r\nend\r\n", tricky[1],
    ]


def test_a_connection_lost_mid_batch_says_what_is_known(connection, handler):
    handler.hang_up_on.add("lost@example.com")
    batch = [envelope(1, "ok@example.com"), envelope(2, "lost@example.com"),
             envelope(3, "never1@example.com"), envelope(4, "never2@example.com")]
    with pytest.raises(TransactionInterrupted) as caught:
        connection.send(batch)

    assert summary(caught.value.outcomes) == [(1, 250, "end")]
    assert caught.value.ambiguous == [2]  # data sent, answer lost: it was in fact taken
    assert [m.rcpt_to for m in handler.messages] == ["ok@example.com", "lost@example.com"]
    assert connection.smtp is None  # closed; the next send opens a new session
    assert summary(connection.send([envelope(3, "never1@example.com")])) == [(3, 250, "end")]


def test_the_backend_retries_what_a_lost_connection_left_unknown(server, handler, settings):
    """Through the transport: known outcomes kept, ambiguous and unreached ones retried."""
    handler.hang_up_on.add("lost@example.com")
    backend = SMTPBackend(host="127.0.0.1", port=server.port, username="", password="",
                          use_tls=False, use_ssl=False, timeout=5)
    addresses = ["ok@example.com", "lost@example.com", "never@example.com"]
    recipients = [Recipient(i, a, {}, {}, "") for i, a in enumerate(addresses)]
    results = SMTPTransport(backend).send(Batch(
        from_email=f"News <{SENDER}>", recipients=recipients,
        render=lambda r: envelope(r.delivery_id, r.email).data,
    ))
    assert [(r.delivery_id, r.status) for r in results] == [(0, "sent"), (1, "retry"),
                                                            (2, "retry")]
    assert all("connection lost" in r.detail for r in results[1:])
