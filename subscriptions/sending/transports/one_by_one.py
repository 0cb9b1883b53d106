"""Any other Django email backend: one EmailMessage per reader, its MIME prebuilt.

The road of last resort (Django's own SMTP backend, an ESP without a merge
road here: Postmark, SES, Resend, ...). Each message succeeds or fails on its
own, and each failure is classified: a refusal of the reader or the message
is permanent, a connection, a timeout, a throttle (429) or a server error is
transient.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage as StdlibEmailMessage
from email.policy import Policy
from typing import Any

from anymail.exceptions import AnymailError, AnymailInvalidAddress, AnymailRecipientsRefused
from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.base import BaseEmailBackend

from subscriptions.sending.transports.base import (
    DETAIL_LIMIT,
    Batch,
    Recipient,
    Result,
    Transport,
    failed_all,
)

logger = logging.getLogger(__name__)

TOO_MANY_REQUESTS = 429


def _smtp_code_permanent(code: int) -> bool:
    return 500 <= code < 600


def error_is_permanent(exc: BaseException) -> bool:
    """Whether a Django backend's exception for one message would recur on a retry.

    Permanent: the reader's address or the message is refused (SMTP 5xx,
    anymail's refused or invalid recipients, an API's 4xx other than 429).
    Transient: everything else (connections, timeouts, 429, 5xx server errors).
    """
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _reply in exc.recipients.values()]
        return bool(codes) and all(_smtp_code_permanent(code) for code in codes)
    if isinstance(exc, smtplib.SMTPResponseException):  # sender refused, data refused, ...
        return _smtp_code_permanent(exc.smtp_code)
    if isinstance(exc, AnymailRecipientsRefused | AnymailInvalidAddress):
        return True
    if isinstance(exc, AnymailError):
        status = exc.status_code
        return status is not None and 400 <= status < 500 and status != TOO_MANY_REQUESTS
    return False


class _PrebuiltMIME(StdlibEmailMessage):
    """The parsed prebuilt message. Django's SMTP backend calls
    `as_bytes(linesep="\r\n")`, as its own MIME classes allow; the stdlib's don't."""

    def as_bytes(self, unixfrom: bool = False, policy: Policy | None = None,
                 linesep: str | None = None) -> bytes:
        if linesep is not None:
            policy = (policy or self.policy).clone(linesep=linesep)
        return super().as_bytes(unixfrom, policy=policy)

    def as_string(self, unixfrom: bool = False, maxheaderlen: int | None = 0,
                  policy: Policy | None = None, linesep: str | None = None) -> str:
        if linesep is not None:
            policy = (policy or self.policy).clone(linesep=linesep)
        return super().as_string(unixfrom, maxheaderlen, policy=policy)


# Headers a backend writes from an EmailMessage's fields.
_FROM_FIELDS = frozenset({
    "from", "to", "cc", "bcc", "subject", "reply-to",
    "mime-version", "content-type", "content-transfer-encoding",
})


class PrebuiltEmail(EmailMultiAlternatives):
    """An EmailMessage whose MIME was built elsewhere (by `mime.MessageTemplate`).

    Backends that serialise `message()` (SMTP, files, SES) send that MIME;
    backends that read the fields instead (anymail's Postmark, Resend, ...)
    get the same content from them: both bodies, Reply-To, the list headers.
    """

    def __init__(self, raw: bytes, *, from_email: str, to: str, **kwargs: Any) -> None:
        parsed = message_from_bytes(raw, _class=_PrebuiltMIME, policy=policy.SMTP)
        super().__init__(from_email=from_email, to=[to], **kwargs)
        self.raw = raw
        self.subject = str(parsed["Subject"] or "")
        self._parsed = parsed
        text, html = parsed.get_body(("plain",)), parsed.get_body(("html",))
        if text is not None:
            self.body = text.get_content().replace("\r\n", "\n")
        if html is not None:
            self.attach_alternative(html.get_content().replace("\r\n", "\n"), "text/html")
        reply_to = parsed["Reply-To"]
        self.reply_to = [str(a) for a in reply_to.addresses] if reply_to else []
        self.extra_headers = {name: str(value) for name, value in parsed.items()
                              if name.lower() not in _FROM_FIELDS}

    def message(self, *, policy: Policy | None = None) -> Any:
        return self._parsed


@contextmanager
def held_open(backend: BaseEmailBackend) -> Iterator[None]:
    """The backend's connection open for the block, unless the caller already holds
    it (Django's `open()` returns False then, and that caller closes it)."""
    opened = backend.open()
    try:
        yield
    finally:
        if opened:
            backend.close()


class OneByOneTransport(Transport):
    """One prebuilt message per call, through the configured Django backend."""

    name = "one-by-one"
    batch_limit = 1

    def __init__(self, backend: BaseEmailBackend) -> None:
        self.backend = backend

    def is_permanent(self, exc: BaseException) -> bool:
        return error_is_permanent(exc)

    @contextmanager
    def session(self) -> Iterator[None]:
        with held_open(self.backend):
            yield

    def send(self, batch: Batch) -> list[Result]:
        try:
            opened = self.backend.open()  # False inside the batch's session: already open
        except Exception as exc:  # nothing handed over; a session problem, not the reader's
            return failed_all(batch.recipients, "retry", f"cannot connect: {exc}")
        try:
            return [self._send_one(batch, r) for r in batch.recipients]
        finally:
            if opened:
                self.backend.close()

    def _send_one(self, batch: Batch, r: Recipient) -> Result:
        message = PrebuiltEmail(batch.render(r), from_email=batch.from_email, to=r.email,
                                connection=self.backend)
        try:
            self.backend.send_messages([message])
        except Exception as exc:  # any backend: classified, never lost
            logger.warning("send failed", extra={"delivery_id": r.delivery_id})
            return Result(r.delivery_id, self.status_of(exc), str(exc)[:DETAIL_LIMIT])
        return Result(r.delivery_id, "sent")
