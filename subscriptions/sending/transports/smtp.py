"""Pipelined SMTP: the client, Django's SMTP backend that opens it, and the transport.

The client pipelines each transaction (RFC 2920, ESMTP PIPELINING).

smtplib waits for the server's reply to every command: MAIL, RCPT, DATA and
the end of data, four round trips per message, and most of a sender's time is
spent waiting. With PIPELINING a client may send the end of one message and
MAIL, RCPT and DATA of the next in one write, and read the four replies
together: one round trip per message. Every reply is still read and checked,
so each recipient's outcome is known exactly.

smtplib still does the connection work (EHLO, STARTTLS, AUTH); this module
takes over only the transactions. Servers that don't advertise PIPELINING get
the same commands in lock-step.

`SMTPBackend` is the EMAIL_BACKEND for `smtp://` URLs: ordinary messages
(confirmations, admin mail) go through Django's code, and `SMTPTransport`
sends editions over `PipeliningConnection`s with the backend's settings, a
batch's calls within one session (reopened if it breaks).
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parseaddr

from django.core.mail.backends.smtp import EmailBackend as DjangoSMTPBackend

from subscriptions.sending.transports.base import (
    DETAIL_LIMIT,
    Batch,
    Recipient,
    Result,
    Transport,
    failed_all,
)


@dataclass(frozen=True)
class Envelope:
    key: int  # the caller's id for this message (a delivery id)
    sender: str
    recipient: str
    data: bytes  # the whole message, CRLF line endings, no line starting with "."


@dataclass(frozen=True)
class Outcome:
    key: int
    code: int
    reply: str
    stage: str  # which command decided: "mail", "rcpt", "data" or "end"

    @property
    def accepted(self) -> bool:
        return self.stage == "end" and 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        """A 5xx: retrying will not help (unknown user, policy rejection)."""
        return 500 <= self.code < 600


class TransactionInterrupted(smtplib.SMTPException):
    """The connection failed mid-batch.

    `outcomes` holds every message whose fate is known; `ambiguous` the keys of
    messages whose data was sent but whose final reply never came (the server
    may have accepted them).
    """

    def __init__(self, message: str, outcomes: list[Outcome], ambiguous: list[int]) -> None:
        super().__init__(message)
        self.outcomes = outcomes
        self.ambiguous = ambiguous


def _address(addr: str) -> str:
    local, _, domain = addr.rpartition("@")
    return f"{local}@{domain.encode('idna').decode('ascii')}" if not domain.isascii() else addr


def _terminated(data: bytes) -> bytes:
    """The DATA payload: dot-stuffed (mime.py output never needs it) and ended."""
    if data.startswith(b".") or b"\n." in data:
        data = data.replace(b"\n.", b"\n..")
        if data.startswith(b"."):
            data = b"." + data
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class PipeliningConnection:
    """One SMTP session; `send()` may be called many times while it is open."""

    def __init__(
        self, host: str, port: int, *, username: str = "", password: str = "",
        use_tls: bool = False, use_ssl: bool = False, timeout: float | None = 30,
        ssl_context: ssl.SSLContext | None = None, local_hostname: str | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.use_tls, self.use_ssl = use_tls, use_ssl
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.local_hostname = local_hostname
        self.smtp: smtplib.SMTP | None = None
        self.pipelining = False

    def open(self) -> None:
        if self.smtp is not None:
            return
        context = None
        if self.use_ssl or self.use_tls:  # loading CA certificates costs ~10 ms: only for TLS
            context = self.ssl_context or ssl.create_default_context()
        if self.use_ssl:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                self.host, self.port, local_hostname=self.local_hostname,
                timeout=self.timeout, context=context,  # type: ignore[arg-type]  # None: blocking
            )
        else:
            smtp = smtplib.SMTP(
                self.host, self.port, local_hostname=self.local_hostname,
                timeout=self.timeout,  # type: ignore[arg-type]  # None: blocking, as sockets allow
            )
        try:
            smtp.ehlo_or_helo_if_needed()
            if self.use_tls:
                smtp.starttls(context=context)
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self.password)
        except BaseException:
            smtp.close()
            raise
        self.smtp = smtp
        self.pipelining = smtp.has_extn("pipelining")
        self._dirty = False  # a transaction is open after a failed message: RSET first

    def close(self) -> None:
        if self.smtp is None:
            return
        try:
            self.smtp.quit()
        except (smtplib.SMTPException, OSError):
            self.smtp.close()
        finally:
            self.smtp = None

    def __enter__(self) -> PipeliningConnection:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, envelopes: Iterable[Envelope]) -> list[Outcome]:
        """Send each envelope; one Outcome per envelope, in order.

        Raises TransactionInterrupted (with what is known) if the connection
        fails; the connection is closed then.
        """
        self.open()
        outcomes: list[Outcome] = []
        ambiguous: list[int] = []
        try:
            for outcome in self._transactions(envelopes, ambiguous):
                outcomes.append(outcome)
        except (smtplib.SMTPException, OSError) as exc:
            if self.smtp is not None:
                self.smtp.close()
                self.smtp = None
            raise TransactionInterrupted(str(exc) or type(exc).__name__, outcomes,
                                         ambiguous) from exc
        return outcomes

    def _transactions(
        self, envelopes: Iterable[Envelope], ambiguous: list[int]
    ) -> Iterator[Outcome]:
        smtp = self.smtp
        assert smtp is not None and smtp.sock is not None
        write = smtp.sock.sendall
        pending: Envelope | None = None  # its data is in `unsent`, its reply not read yet
        unsent = b""
        for envelope in envelopes:
            group = []
            if self._dirty:
                group.append(b"RSET\r\n")
            group.append(f"MAIL FROM:<{_address(envelope.sender)}>\r\n".encode())
            group.append(f"RCPT TO:<{_address(envelope.recipient)}>\r\n".encode())
            group.append(b"DATA\r\n")
            if self.pipelining:
                # The previous message's data and this one's commands in one write.
                write(unsent + b"".join(group))
                unsent = b""
                if pending is not None:
                    yield self._end_of_data(pending, ambiguous)
                    pending = None
                replies = [smtp.getreply() for _ in group]
            else:
                replies = []
                for command in group:
                    write(command)
                    replies.append(smtp.getreply())
            if self._dirty:
                replies.pop(0)  # RSET's own reply: nothing to decide
                self._dirty = False
            (mail_code, mail_msg), (rcpt_code, rcpt_msg), (data_code, data_msg) = replies
            if mail_code >= 400:
                yield Outcome(envelope.key, mail_code, mail_msg.decode(errors="replace"), "mail")
            elif rcpt_code >= 400:
                self._dirty = True
                yield Outcome(envelope.key, rcpt_code, rcpt_msg.decode(errors="replace"), "rcpt")
            elif data_code != 354:
                self._dirty = True
                yield Outcome(envelope.key, data_code, data_msg.decode(errors="replace"), "data")
            else:
                ambiguous.append(envelope.key)
                if self.pipelining:
                    unsent, pending = _terminated(envelope.data), envelope
                else:
                    write(_terminated(envelope.data))
                    yield self._end_of_data(envelope, ambiguous)
        if pending is not None:
            write(unsent)
            yield self._end_of_data(pending, ambiguous)

    def _end_of_data(self, envelope: Envelope, ambiguous: list[int]) -> Outcome:
        assert self.smtp is not None
        code, msg = self.smtp.getreply()
        ambiguous.remove(envelope.key)
        return Outcome(envelope.key, code, msg.decode(errors="replace"), "end")


class SMTPBackend(DjangoSMTPBackend):
    """Django's SMTP backend, which also opens pipelined sessions with its settings."""

    def pipe(self) -> PipeliningConnection:
        return PipeliningConnection(
            self.host, self.port, username=self.username or "", password=self.password or "",
            use_tls=self.use_tls, use_ssl=self.use_ssl, timeout=self.timeout,
            # ssl_context is Django's (a cached property), missing from django-stubs
            ssl_context=(self.ssl_context  # type: ignore[attr-defined]
                         if (self.use_tls or self.use_ssl) else None),
        )


class SMTPTransport(Transport):
    """Each reader's prebuilt message, pipelined; any mix of contents in one call."""

    name = "smtp"
    # About 40 ms of sending at the SMTP ceiling: the most a pause or cancel can
    # let through (a call is one state read, so 1,000 messages cost four).
    batch_limit = 250

    def __init__(self, backend: SMTPBackend) -> None:
        self.backend = backend
        self._pipe: PipeliningConnection | None = None

    def is_permanent(self, exc: BaseException) -> bool:
        # Per-message refusals come back as Outcomes; an exception is about the
        # session (connect, TLS, login, a dropped connection): worth retrying.
        return False

    @contextmanager
    def session(self) -> Iterator[None]:
        self._pipe = self.backend.pipe()
        try:
            yield
        finally:
            pipe, self._pipe = self._pipe, None
            pipe.close()

    def send(self, batch: Batch) -> list[Result]:
        sender = parseaddr(batch.from_email)[1]  # the envelope takes the bare address
        envelopes = [Envelope(r.delivery_id, r.return_path or sender, r.email, batch.render(r))
                     for r in batch.recipients]
        try:
            if self._pipe is not None:
                outcomes = self._pipe.send(envelopes)  # opens it first, or again after a failure
            else:
                with self.backend.pipe() as pipe:
                    outcomes = pipe.send(envelopes)
        except TransactionInterrupted as exc:
            return _interrupted(exc, batch.recipients)
        except (smtplib.SMTPException, OSError) as exc:
            # Opening the session failed: nothing was handed over.
            return failed_all(batch.recipients, self.status_of(exc), f"cannot connect: {exc}")
        return [_result(o) for o in outcomes]


def _interrupted(exc: TransactionInterrupted, recipients: Iterable[Recipient]) -> list[Result]:
    """Known outcomes kept; unreached and ambiguous ones (data sent, no reply) are
    retried: an ambiguous one may arrive twice, counted as a possible duplicate."""
    done = {o.key for o in exc.outcomes}
    results = [_result(o) for o in exc.outcomes]
    results += [Result(r.delivery_id, "retry", f"connection lost: {exc}"[:DETAIL_LIMIT])
                for r in recipients if r.delivery_id not in done]
    return results


def _result(outcome: Outcome) -> Result:
    if outcome.accepted:
        # The MTA's queue id is not stored: one UPDATE per batch matters more,
        # and our own Message-ID (stable per delivery) already traces it.
        return Result(outcome.key, "sent")
    return Result(outcome.key, "failed" if outcome.permanent else "retry",
                  f"{outcome.code} {outcome.reply}"[:DETAIL_LIMIT])
