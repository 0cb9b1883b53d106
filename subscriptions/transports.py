"""Hand a batch of personalised messages to whatever email backend is configured.

Every path goes through Django's configured email backend (EMAIL_BACKEND), so
any backend works; three of them get a faster road:

* a backend with `send_prebuilt()` (our SMTP and outbox backends) takes the
  prebuilt bytes as they are: over SMTP, one pipelined connection per batch;
* an anymail ESP that substitutes per-recipient values in the body gets one
  API call per chunk of recipients (the ESP's batch limit), all of a batch's
  calls in one HTTP session, with `merge_data`, `merge_headers`
  (List-Unsubscribe) and `merge_metadata` (the delivery id, to match webhook
  events); Mailgun, which fills values in literally everywhere, gets only what
  differs between readers (`_merge_fields`);
* any other backend gets one EmailMessage per recipient whose MIME is the
  prebuilt message.

Every path returns one Result per delivery: sent, or failed permanently, or
failed transiently (retry later).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from email import message_from_bytes, policy
from email.message import EmailMessage as StdlibEmailMessage
from email.parser import BytesHeaderParser
from email.utils import parseaddr

from anymail.message import AnymailMessage
from django.core.mail import EmailMultiAlternatives, get_connection

from newsroom.smtp_pipelining import Envelope, TransactionInterrupted

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipient:
    delivery_id: int
    email: str
    values: dict[str, str]  # hole name -> value (email, manage_url, unsubscribe_url)
    headers: dict[str, str]  # per-recipient headers (List-Unsubscribe)
    message_id: str


@dataclass(frozen=True)
class Result:
    delivery_id: int
    status: str  # "sent", "failed" (permanent) or "retry" (transient)
    detail: str = ""
    esp_message_id: str = ""


# How each ESP spells a per-recipient substitution in an on-the-fly body, and
# its recipients-per-call limit. ESPs missing here (Postmark, SES, …) need a
# stored template for that, or (Mandrill) have no per-recipient headers in
# anymail, and every list message needs its own List-Unsubscribe: they take the
# one-message-per-recipient road.
ESP_MERGE = {
    "mailgun": ("%recipient.{}%", 1000),
    "mailjet": ("[[var:{}]]", 50),
    "sparkpost": ("{{{{{}}}}}", 1000),
}


def esp_name(connection: object) -> str | None:
    """The anymail ESP behind a connection, or None for other backends."""
    try:
        from anymail.backends.base import AnymailBaseBackend
    except ImportError:  # pragma: no cover - anymail is a dependency
        return None
    if isinstance(connection, AnymailBaseBackend):
        return connection.esp_name.lower().replace(" ", "").replace("_", "")
    return None


class _PrebuiltMIME(StdlibEmailMessage):
    """The parsed prebuilt message. Django's SMTP backend calls
    `as_bytes(linesep="\r\n")`, as its own MIME classes allow; the stdlib's don't."""

    def as_bytes(self, unixfrom: bool = False, policy=None, linesep: str | None = None) -> bytes:
        if linesep is not None:
            policy = (policy or self.policy).clone(linesep=linesep)
        return super().as_bytes(unixfrom, policy=policy)

    def as_string(self, unixfrom: bool = False, maxheaderlen: int | None = 0, policy=None,
                  linesep: str | None = None) -> str:
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

    def __init__(self, raw: bytes, *, from_email: str, to: str, **kwargs) -> None:
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

    def message(self, *, policy=None):
        return self._parsed


def send_batch(
    *, connection, from_email: str, recipients: Sequence[Recipient],
    render: Callable[[Recipient], bytes],
    esp_content: Callable[[str], tuple[str, str, str]] | None,
) -> list[Result]:
    """Send one batch through `connection`; `render` builds one recipient's bytes.

    `esp_content(syntax)` returns (subject, text, html) with the holes spelt in
    an ESP's merge syntax, for the batch API road; without it, an ESP gets one
    message per recipient (a content that spells the ESP's own merge syntax must
    not go through its merge road: the ESP would fill it in).
    """
    if hasattr(connection, "send_prebuilt"):
        return _send_prebuilt(connection, from_email, recipients, render)
    esp = esp_name(connection)
    if esp in ESP_MERGE and esp_content is not None:
        return _send_esp_batches(connection, esp, from_email, recipients, render, esp_content)
    return _send_one_by_one(connection, from_email, recipients, render)


def _send_prebuilt(connection, from_email, recipients, render) -> list[Result]:
    sender = parseaddr(from_email)[1]  # the envelope takes the bare address
    envelopes = [Envelope(r.delivery_id, sender, r.email, render(r)) for r in recipients]
    try:
        outcomes = connection.send_prebuilt(envelopes)
    except TransactionInterrupted as exc:
        done = {o.key for o in exc.outcomes}
        outcomes = list(exc.outcomes)
        results = [_from_outcome(o) for o in outcomes]
        # Not reached, or ambiguous (data sent, no reply): retried; an ambiguous
        # one may arrive twice, and is counted as a possible duplicate.
        results += [
            Result(r.delivery_id, "retry", f"connection lost: {exc}")
            for r in recipients if r.delivery_id not in done
        ]
        return results
    return [_from_outcome(o) for o in outcomes]


def _from_outcome(outcome) -> Result:
    if outcome.accepted:
        # The MTA's queue id is not stored: one UPDATE per batch matters more,
        # and our own Message-ID (stable per delivery) already traces it.
        return Result(outcome.key, "sent")
    status = "failed" if outcome.permanent else "retry"
    return Result(outcome.key, status, f"{outcome.code} {outcome.reply}"[:500])


# Headers the ESP writes itself from the message's fields (or per recipient).
_ESP_BUILT = frozenset({
    "from", "to", "cc", "bcc", "subject", "date", "message-id", "reply-to",
    "mime-version", "content-type", "content-transfer-encoding",
})


def _fixed_headers(raw: bytes, personal: set[str]) -> tuple[dict[str, str], list[str]]:
    """The prebuilt message's own headers (List-Id, List-Unsubscribe-Post, ...) and
    Reply-To: the batch API builds its own MIME, so they must be handed over."""
    if not raw:
        return {}, []
    parsed = BytesHeaderParser(policy=policy.default).parsebytes(raw)
    headers = {name: str(value) for name, value in parsed.items()
               if name.lower() not in _ESP_BUILT and name.lower() not in personal}
    reply_to = parsed["Reply-To"]
    return headers, [str(a) for a in reply_to.addresses] if reply_to else []


def _send_esp_batches(connection, esp, from_email, recipients, render, esp_content
                      ) -> list[Result]:
    from anymail.exceptions import AnymailError

    syntax, limit = ESP_MERGE[esp]
    content = esp_content(syntax)
    personal = {name.lower() for r in recipients for name in r.headers}
    headers, reply_to = _fixed_headers(render(recipients[0]), personal) if recipients else ({}, [])
    results: list[Result] = []
    recipients, refused = _ascii_domains(connection, recipients)
    results += [Result(r.delivery_id, "failed", f"invalid address: {why}") for r, why in refused]
    pending = [recipients[i : i + limit] for i in range(0, len(recipients), limit)]
    # One HTTP session for every call of the batch, so they share a kept-alive
    # connection: unopened, anymail opens and closes a session per send().
    opened = connection.open()
    try:
        while pending:
            chunk = pending.pop(0)
            message = _batch_message(connection, esp, syntax, chunk, from_email, content,
                                     headers, reply_to)
            try:
                message.send()
            except AnymailError as exc:
                if not _transient(exc) and len(chunk) > 1:
                    # One bad address fails a whole call at some ESPs (Mailgun: 400):
                    # halve the chunk until the refusal is pinned on its recipient.
                    half = len(chunk) // 2
                    pending[:0] = [chunk[:half], chunk[half:]]
                    continue
                # Nothing was accepted (a 4xx/5xx from the API), or a timeout left it unknown.
                status = "retry" if _transient(exc) else "failed"
                results += [Result(r.delivery_id, status, str(exc)[:500]) for r in chunk]
                continue
            statuses = message.anymail_status.recipients
            for r in chunk:
                status = statuses.get(r.email)
                if status is not None and status.status in {"sent", "queued"}:
                    results.append(Result(r.delivery_id, "sent",
                                          esp_message_id=str(status.message_id or "")[:255]))
                elif status is not None and status.status in {"invalid", "rejected"}:
                    results.append(Result(r.delivery_id, "failed", f"ESP: {status.status}"))
                else:
                    results.append(Result(r.delivery_id, "retry", "ESP status unknown"))
    finally:
        if opened:
            connection.close()
    return results


# ESPs that fill in per-recipient values as they are (no escaping) in the
# subject, bodies and headers alike; anymail's own merge_headers relies on it.
_LITERAL_MERGE = frozenset({"mailgun"})


def _personal_headers(r: Recipient) -> dict[str, str]:
    # Our stable Message-ID per delivery lets receivers drop a resend.
    return {**r.headers, "Message-ID": r.message_id} if r.message_id else r.headers


def _batch_message(connection, esp: str, syntax: str, chunk: Sequence[Recipient],
                   from_email: str, content: tuple[str, str, str], headers: dict[str, str],
                   reply_to: list[str]) -> AnymailMessage:
    """One API call's message: the content once, each reader's values on the side."""
    subject, text, html = content
    if esp in _LITERAL_MERGE:
        (subject, text, html), personal, merge_data = _merge_fields(chunk, syntax, content)
        headers = {**headers, **personal}
    message = AnymailMessage(
        subject=subject, body=text, from_email=from_email, to=[r.email for r in chunk],
        connection=connection, headers=headers, reply_to=reply_to,
    )
    message.attach_alternative(html, "text/html")
    if esp in _LITERAL_MERGE:
        message.merge_data = merge_data
    else:
        message.merge_data = {r.email: r.values for r in chunk}
        message.merge_headers = {r.email: _personal_headers(r) for r in chunk}
    message.merge_metadata = {r.email: {"delivery_id": str(r.delivery_id)} for r in chunk}
    return message


def _merge_fields(chunk: Sequence[Recipient], syntax: str, content: tuple[str, str, str]
                  ) -> tuple[tuple[str, str, str], dict[str, str], dict[str, dict[str, str]]]:
    """(subject, text, html), personal headers spelt with merge fields, and merge_data,
    for an ESP that merges literally, with each reader's data cut to what differs.

    The per-recipient data is the bulk of a call (the ESP client JSON-encodes it,
    then form-encodes it byte by byte), and most of it is shared: a header that is
    a value in brackets (List-Unsubscribe) is spelt from that value; a field that
    no part of the message uses is left out; the text every reader's value starts
    and ends with (the links' site and path, the Message-ID's edition and domain)
    goes into the message once. Each reader still gets exactly the same message.
    """
    spelt = {key: syntax.format(key) for r in chunk for key in r.values}
    heads = [_personal_headers(r) for r in chunk]
    personal: dict[str, str] = {}
    fields: dict[str, list[str]] = {}
    for name in dict.fromkeys(name for head in heads for name in head):
        template = _spelt_from_values(chunk[0].values, heads[0].get(name, ""), spelt)
        if template is not None and all(
            _filled(template, r.values, spelt) == head.get(name, "")
            for r, head in zip(chunk, heads, strict=True)
        ):
            personal[name] = template
        else:  # its own field, named as anymail would
            key = f"h:{name.title()}"
            spelt[key] = personal[name] = syntax.format(key)
            fields[key] = [head.get(name, "") for head in heads]
    parts = [*content, *personal.values()]
    for key in spelt.keys() - fields.keys():
        if any(spelt[key] in part for part in parts):
            fields[key] = [r.values.get(key, "") for r in chunk]
    spelling: dict[str, str] = {}
    for key, values in fields.items():
        prefix = _common_prefix(values)
        values = [v[len(prefix):] for v in values]
        suffix = _common_prefix([v[::-1] for v in values])[::-1]
        if suffix:
            values = [v[: -len(suffix)] for v in values]
        fields[key] = values
        spelling[spelt[key]] = prefix + spelt[key] + suffix if any(values) else prefix + suffix
    fields = {key: values for key, values in fields.items() if any(values)}

    def spell(part: str) -> str:
        for old, new in spelling.items():
            part = part.replace(old, new)
        return part

    subject, text, html = (spell(part) for part in content)
    personal = {name: spell(template) for name, template in personal.items()}
    merge_data = {r.email: {key: values[i] for key, values in fields.items()}
                  for i, r in enumerate(chunk)}
    return (subject, text, html), personal, merge_data


def _spelt_from_values(values: dict[str, str], header: str, spelt: dict[str, str]) -> str | None:
    """`header` with the `values` it holds spelt as merge fields; None if it holds none."""
    template = header
    for key, value in sorted(values.items(), key=lambda kv: -len(kv[1])):
        if value:
            template = template.replace(value, spelt[key])
    return template if template != header else None


def _common_prefix(values: list[str]) -> str:
    first, last = min(values), max(values)  # the sorted ends share what all share
    for i, (a, b) in enumerate(zip(first, last, strict=False)):
        if a != b:
            return first[:i]
    return first


def _filled(template: str, values: dict[str, str], spelt: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace(spelt[key], value)
    return template


def _ascii_domains(connection, recipients: Sequence[Recipient]
                   ) -> tuple[list[Recipient], list[tuple[Recipient, str]]]:
    """Recipients with their domains IDNA-encoded, and those whose domain can't be.

    anymail sends an international domain IDNA-encoded but keys the Mailgun
    recipient-variables by the address as given, so that reader would get the
    merge fields unfilled; encoded first, the two match. Their own address in
    the message body (`values["email"]`) stays as they wrote it.
    """
    from anymail.exceptions import AnymailError

    ready: list[Recipient] = []
    refused: list[tuple[Recipient, str]] = []
    for r in recipients:
        local, _, domain = r.email.rpartition("@")
        if domain.isascii():
            ready.append(r)
            continue
        try:
            ready.append(replace(r, email=f"{local}@{connection.idna_encode(domain)}"))
        except AnymailError as exc:
            refused.append((r, str(exc)[:200]))
    return ready, refused


def _transient(exc: Exception) -> bool:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status is None or status == 429 or status >= 500


def _send_one_by_one(connection, from_email, recipients, render) -> list[Result]:
    results = []
    opened = connection.open()  # not when the caller holds a session for several calls
    try:
        for r in recipients:
            message = PrebuiltEmail(render(r), from_email=from_email, to=r.email,
                                    connection=connection)
            try:
                connection.send_messages([message])
            except Exception as exc:
                logger.warning("send failed", extra={"delivery_id": r.delivery_id})
                results.append(Result(r.delivery_id, "retry", str(exc)[:500]))
            else:
                results.append(Result(r.delivery_id, "sent"))
    finally:
        if opened:
            connection.close()
    return results


def merge_opener(esp: str) -> str:
    """How an ESP's merge field starts ("%recipient." for Mailgun): a content that
    holds it literally would have it filled in by the ESP."""
    return ESP_MERGE[esp][0].format("\x00").partition("\x00")[0]


def open_connection():
    return get_connection()
