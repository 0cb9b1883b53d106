"""anymail ESPs with merge data: one API call per chunk of readers, personalised by the ESP.

A call carries one content, its per-reader values spelt in the ESP's merge
syntax, and each reader's values beside it (anymail's `merge_data`,
`merge_headers` for List-Unsubscribe and the Message-ID, `merge_metadata` for
the delivery id that webhook events come back with). A batch's calls share
one HTTP session. A content that can't be merged (it spells the ESP's own
merge syntax, which the ESP would fill in) goes one message per reader, as on
any Django backend (`OneByOneTransport`, whose error classes apply here too).

ESPs missing here (Postmark, SES, ...) need a stored template for per-reader
values, or (Mandrill) take no per-recipient headers in anymail, and every list
message needs its own List-Unsubscribe: they take the one-by-one road.

Adding an ESP road is one small class, listed in ROADS, plus its test (that
anymail's payload for it takes merge data, merge headers and merge metadata:
tests/subscriptions/sending/test_transport_contract.py)::

    class PostalTransport(ESPTransport):
        name = "postal"                  # anymail's esp_name, lower case
        merge_field = "{{{{{}}}}}"       # how it spells a reader's value: {{name}}
        batch_limit = 100                # recipients per API call
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from email import policy
from email.parser import BytesHeaderParser
from typing import ClassVar

from anymail.backends.base import AnymailBaseBackend
from anymail.exceptions import AnymailError
from django.core.mail import EmailMultiAlternatives

from subscriptions.sending.transports.base import DETAIL_LIMIT, Batch, Recipient, Result
from subscriptions.sending.transports.one_by_one import OneByOneTransport, held_open

Content = tuple[str, str, str]  # subject, text, html
PerReader = dict[str, dict[str, str]]  # address -> name -> value

# Headers the ESP writes itself from the message's fields (or per recipient).
_ESP_BUILT = frozenset({
    "from", "to", "cc", "bcc", "subject", "date", "message-id", "reply-to",
    "mime-version", "content-type", "content-transfer-encoding",
})


class ESPTransport(OneByOneTransport):
    """An anymail ESP whose batch API fills in per-reader values (merge data)."""

    merges = True
    #: A per-reader value's spelling, `{}` standing for its name.
    merge_field: ClassVar[str]

    def __init__(self, backend: AnymailBaseBackend) -> None:
        super().__init__(backend)
        self.backend: AnymailBaseBackend = backend

    @property
    def merge_opener(self) -> str:
        """How a merge field starts ("%recipient." for Mailgun)."""
        return self.merge_field.format("\x00").partition("\x00")[0]

    def can_merge(self, subject: str, text: str, html: str) -> bool:
        return not any(self.merge_opener in part for part in (subject, text, html))

    def send(self, batch: Batch) -> list[Result]:
        if batch.merge is None:
            return super().send(batch)
        content = batch.merge(self.merge_field)
        personal = {name.lower() for r in batch.recipients for name in r.headers}
        recipients, results = self._ascii_domains(batch.recipients)
        headers, reply_to = (_fixed_headers(batch.render(batch.recipients[0]), personal)
                             if batch.recipients else ({}, []))
        pending = [recipients[i : i + self.batch_limit]
                   for i in range(0, len(recipients), self.batch_limit)]
        # One HTTP session for every call of the batch, so they share a kept-alive
        # connection: unopened, anymail opens and closes a session per send().
        with held_open(self.backend):
            while pending:
                chunk = pending.pop(0)
                message = self.message(chunk, batch.from_email, content, headers, reply_to)
                try:
                    message.send()
                except AnymailError as exc:
                    if self.is_permanent(exc) and len(chunk) > 1:
                        # One bad address fails a whole call at some ESPs (Mailgun: 400):
                        # halve the chunk until the refusal is pinned on its recipient.
                        pending[:0] = [chunk[: len(chunk) // 2], chunk[len(chunk) // 2 :]]
                        continue
                    # Nothing was accepted (a 4xx/5xx), or a timeout left it unknown.
                    detail = str(exc)[:DETAIL_LIMIT]
                    results += [Result(r.delivery_id, self.status_of(exc), detail) for r in chunk]
                    continue
                results += _statuses(message, chunk)
        return results

    def message(self, chunk: Sequence[Recipient], from_email: str, content: Content,
                headers: dict[str, str], reply_to: list[str]) -> EmailMultiAlternatives:
        """One API call's message: the content once, each reader's values on the side."""
        (subject, text, html), headers, merge_data, merge_headers = self.merge_payload(
            chunk, content, headers)
        message = EmailMultiAlternatives(
            subject=subject, body=text, from_email=from_email, to=[r.email for r in chunk],
            connection=self.backend, headers=headers, reply_to=reply_to,
        )
        message.attach_alternative(html, "text/html")
        message.merge_data = merge_data  # type: ignore[attr-defined]
        if merge_headers is not None:
            message.merge_headers = merge_headers  # type: ignore[attr-defined]
        message.merge_metadata = {  # type: ignore[attr-defined]
            r.email: {"delivery_id": str(r.delivery_id)} for r in chunk}
        return message

    def merge_payload(self, chunk: Sequence[Recipient], content: Content,
                      headers: dict[str, str]) -> tuple[Content, dict[str, str], PerReader,
                                                         PerReader | None]:
        """The call's content and headers, each reader's values and personal headers."""
        return (content, headers, {r.email: r.values for r in chunk},
                {r.email: _personal_headers(r) for r in chunk})

    def _ascii_domains(self, recipients: Sequence[Recipient]
                       ) -> tuple[list[Recipient], list[Result]]:
        """Recipients with their domains IDNA-encoded, and a failure for each whose
        domain can't be.

        anymail sends an international domain IDNA-encoded but keys the Mailgun
        recipient-variables by the address as given, so that reader would get the
        merge fields unfilled; encoded first, the two match. Their own address in
        the message body (`values["email"]`) stays as they wrote it.
        """
        ready: list[Recipient] = []
        refused: list[Result] = []
        for r in recipients:
            local, _, domain = r.email.rpartition("@")
            if domain.isascii():
                ready.append(r)
                continue
            try:
                ready.append(replace(r, email=f"{local}@{self.backend.idna_encode(domain)}"))
            except AnymailError as exc:
                refused.append(Result(r.delivery_id, "failed",
                                      f"invalid address: {str(exc)[:200]}"))
        return ready, refused


class MailgunTransport(ESPTransport):
    """Mailgun fills in values as they are (no escaping) in the subject, bodies and
    headers alike (anymail's own merge_headers relies on it), so a call carries
    only what differs between readers (`_merge_fields`)."""

    name = "mailgun"
    merge_field = "%recipient.{}%"
    batch_limit = 1000

    def merge_payload(self, chunk: Sequence[Recipient], content: Content,
                      headers: dict[str, str]) -> tuple[Content, dict[str, str], PerReader,
                                                         PerReader | None]:
        content, personal, merge_data = _merge_fields(chunk, self.merge_field, content)
        return content, {**headers, **personal}, merge_data, None


class MailjetTransport(ESPTransport):
    name = "mailjet"
    merge_field = "[[var:{}]]"
    batch_limit = 50


class SparkPostTransport(ESPTransport):
    name = "sparkpost"
    merge_field = "{{{{{}}}}}"
    batch_limit = 1000


# The ESPs with a merge road, looked up by anymail's esp_name.
ROADS: tuple[type[ESPTransport], ...] = (MailgunTransport, MailjetTransport, SparkPostTransport)


def esp_transport_class(backend: AnymailBaseBackend) -> type[ESPTransport] | None:
    esp = backend.esp_name.lower().replace(" ", "").replace("_", "")
    return next((road for road in ROADS if road.name == esp), None)


def _statuses(message: EmailMultiAlternatives, chunk: Sequence[Recipient]) -> list[Result]:
    """Each reader's fate from the ESP's answer to an accepted call."""
    statuses = message.anymail_status.recipients  # type: ignore[attr-defined]
    results = []
    for r in chunk:
        status = statuses.get(r.email)
        if status is not None and status.status in {"sent", "queued"}:
            results.append(Result(r.delivery_id, "sent",
                                  esp_message_id=str(status.message_id or "")[:255]))
        elif status is not None and status.status in {"invalid", "rejected"}:
            results.append(Result(r.delivery_id, "failed", f"ESP: {status.status}"))
        else:
            results.append(Result(r.delivery_id, "retry", "ESP status unknown"))
    return results


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


def _personal_headers(r: Recipient) -> dict[str, str]:
    # Our stable Message-ID per delivery lets receivers drop a resend.
    return {**r.headers, "Message-ID": r.message_id} if r.message_id else r.headers


def _merge_fields(chunk: Sequence[Recipient], syntax: str, content: Content
                  ) -> tuple[Content, dict[str, str], PerReader]:
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
    personal, fields = _personal_templates(chunk, syntax, spelt)
    parts = [*content, *personal.values()]
    for key in spelt.keys() - fields.keys():
        if any(spelt[key] in part for part in parts):
            fields[key] = [r.values.get(key, "") for r in chunk]
    spelling = _shared_ends(fields, spelt)
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


def _personal_templates(chunk: Sequence[Recipient], syntax: str, spelt: dict[str, str]
                        ) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Each personal header as a template of merge fields: spelt from the values it
    holds where that fits every reader, else a field of its own (added to `spelt`)."""
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
    return personal, fields


def _shared_ends(fields: dict[str, list[str]], spelt: dict[str, str]) -> dict[str, str]:
    """Cut the text all readers' values of a field start and end with (in place);
    returns how each field is spelt now, that text around its merge field."""
    spelling: dict[str, str] = {}
    for key, values in fields.items():
        prefix = _common_prefix(values)
        values = [v[len(prefix):] for v in values]
        suffix = _common_prefix([v[::-1] for v in values])[::-1]
        if suffix:
            values = [v[: -len(suffix)] for v in values]
        fields[key] = values
        spelling[spelt[key]] = prefix + spelt[key] + suffix if any(values) else prefix + suffix
    return spelling


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


