"""Build a multipart message once, then personalise it per recipient cheaply.

Django's EmailMultiAlternatives builds the whole MIME tree for every recipient
(about 1.4 ms each); for an edition every recipient gets the same content but
for a few links and headers. So a MessageTemplate encodes the content once and
keeps the per-recipient values as holes, filled in with a byte join.

The bodies are quoted-printable, which mailbox providers prefer to base64 for
text. QP is where naive templating breaks: substituting after encoding corrupts
a value that needs escaping, and substituting before encoding lets soft line
breaks split it. Each literal stretch is encoded on its own and every hole is
fenced by soft line breaks (`=` CRLF, invisible once decoded), so a value always
starts a fresh encoded line and is itself encoded (and wrapped) on its own.
No encoded line starts with a dot, so no SMTP dot-stuffing is ever needed.

The list headers every digest and alert carries (RFC 2369, 2919, 8058) are
built here too, in one place, so that every list email, whatever sends it,
offers the same one-click unsubscribe that Gmail and Yahoo require of bulk
senders: `list_headers_shared` for the template, `list_headers_personal` per
reader.
"""

from __future__ import annotations

import email.quoprimime
import re
import secrets
import uuid
from collections.abc import Callable, Mapping
from email.header import Header
from email.utils import formataddr, parseaddr
from functools import lru_cache
from urllib.parse import quote, urlsplit

from django.conf import settings
from django.urls import reverse

from subscriptions.tokens import Purpose, token_make

# A hole in a template body: @@<nonce>.name@@, which survives Django's autoescaping and
# CSS inlining. The nonce is drawn afresh by each process and never leaves it (every
# hole is filled before a message goes out), so no story text can spell a hole: a
# headline holding "@@email@@", or anything else, reaches the reader as written.
HOLE_NONCE = secrets.token_hex(8)
HOLE = re.compile(rf"@@{HOLE_NONCE}\.([a-z_]+)@@")
_SAFE_VALUE = re.compile(r"[!-<>-~]*")  # printable ASCII but '=' and space: QP-literal
_SOFT_BREAK = b"=\r\n"
_CRLF = "\r\n"
_LINE_END = re.compile(r"\r\n|\r|\n")  # the line breaks body_encode keeps (it encodes the rest)
_LEADING_DOT = re.compile(r"(?m)^\.")


def hole(name: str) -> str:
    """The marker to put into a template body where `name`'s value goes."""
    return f"@@{HOLE_NONCE}.{name}@@"


class HeaderInjection(ValueError):
    """A header value contained a line break (anymail's API backends don't check)."""


def check_header(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise HeaderInjection(f"line break in the {name} header: {value[:80]!r}")
    if len(name) + 2 + len(value) > 998:
        raise HeaderInjection(f"{name} header longer than 998 octets")
    return value


def _qp_line(line: str) -> str:
    """One line (UTF-8 octets as latin-1, no line break) as quoted-printable."""
    # Lines of 73: room for "=2E" (+2) and a hole's fencing soft break (+1) within
    # QP's 76 characters (78 octets with CRLF).
    encoded = email.quoprimime.body_encode(line, maxlinelen=73, eol=_CRLF)
    # A line starting with "." would need dot-stuffing on the wire; "=2E" needs none.
    return _LEADING_DOT.sub("=2E", encoded)


# A template's lines recur from content to content (a digest's sections, the
# layout around them): each is encoded once per process. Not for personal values.
_qp_template_line = lru_cache(maxsize=8192)(_qp_line)


def _qp(text: str, encode_line: Callable[[str], str] = _qp_line) -> bytes:
    """Quoted-printable, encoded line by line as `body_encode` does: a line's
    encoding does not depend on the other lines."""
    octets = text.encode("utf-8").decode("latin-1")
    return _CRLF.join(map(encode_line, _LINE_END.split(octets))).encode("ascii")


def _qp_value(value: str) -> bytes:
    if _SAFE_VALUE.fullmatch(value) and not value.startswith("."):
        raw = value.encode("ascii")
        if len(raw) <= 75:
            return raw
        wrapped = _SOFT_BREAK.join(raw[i : i + 75] for i in range(0, len(raw), 75))
        if b"\n." not in wrapped:  # else a wrapped line would start with "."
            return wrapped
    return _qp(value)


def _compile(body: str) -> list[bytes | str]:
    """Alternate pre-encoded literals (bytes) and hole names (str)."""
    pieces = HOLE.split(body.replace("\r\n", "\n"))
    compiled: list[bytes | str] = []
    for index, piece in enumerate(pieces):
        if index % 2:
            compiled.append(piece)
        elif piece:
            compiled.append(_qp(piece, _qp_template_line))
    return compiled


_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")


def _encode_address(address: str) -> str:
    """An address header value; non-ASCII display names become encoded words."""
    if _PLAIN_ADDRESS.fullmatch(address):  # the common case, without parsing
        return address
    check_header("address", address)  # parseaddr would silently drop what follows a break
    name, addr = parseaddr(address)
    if not addr or "@" not in addr:
        raise ValueError(f"not an email address: {address!r}")
    local, _, domain = addr.rpartition("@")
    domain = domain.encode("idna").decode("ascii")
    return formataddr((name, f"{local}@{domain}"), charset="utf-8")


_FOLD_AT = 78  # RFC 5322 2.1.1: lines SHOULD be at most 78 characters
_WORDS = re.compile(r"[ \t]*[^ \t]+|[ \t]+")


def _encode_text_header(name: str, value: str) -> str:
    check_header(name, value)
    if value.isascii() and "=?" not in value:  # else it could read as an encoded word
        return _fold(name, value)
    return Header(value, "utf-8", header_name=name).encode(linesep=_CRLF)


def _fold(name: str, value: str) -> str:
    """An ASCII value folded before whitespace into lines of at most 78 characters
    (RFC 5322 2.2.3); unfolding (removing each CRLF) gives `value` back exactly.

    A word longer than a line stays whole: the 998-octet limit still holds.
    """
    if len(name) + 2 + len(value) <= _FOLD_AT:
        return value
    lines = [""]
    width = len(name) + 2
    for word in _WORDS.findall(value):
        if width + len(word) > _FOLD_AT and lines[-1].strip() and word.strip() and word[0] in " \t":
            lines.append("")
            width = 0
        lines[-1] += word
        width += len(word)
    return _CRLF.join(lines)


class MessageTemplate:
    """One edition's content as a message, personalised by `render()`.

    `text` and `html` may hold holes (see `hole()`); `render` fills every hole
    from `values`. Per-recipient headers (To, Message-ID, and e.g.
    List-Unsubscribe) are passed to `render`; everything else is fixed here.
    """

    def __init__(
        self, *, subject: str, from_email: str, text: str, html: str,
        reply_to: str = "", headers: Mapping[str, str] | None = None,
    ) -> None:
        self.boundary = f"==nr-{uuid.uuid4().hex}=="
        self.from_email = from_email
        self.subject = subject
        self.holes = set(HOLE.findall(text)) | set(HOLE.findall(html))
        lines = [
            f"From: {_encode_address(from_email)}",
            f"Subject: {_encode_text_header('Subject', subject)}",
        ]
        if reply_to:
            lines.append(f"Reply-To: {_encode_address(reply_to)}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {_encode_text_header(name, value)}")
        lines += [
            "MIME-Version: 1.0",
            f'Content-Type: multipart/alternative;{_CRLF} boundary="{self.boundary}"',  # 78 max
        ]
        self._head = (_CRLF.join(lines) + _CRLF).encode("ascii")
        part_head = (
            "--{b}\r\nContent-Type: {t}; charset=\"utf-8\"\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        )
        self._parts = [
            (part_head.format(b=self.boundary, t="text/plain").encode(), _compile(text)),
            (part_head.format(b=self.boundary, t="text/html").encode(), _compile(html)),
        ]
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()

    def render(
        self, *, to: str, message_id: str, date: str, values: Mapping[str, str],
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """The complete message for one recipient, CRLF line endings, ready for DATA."""
        out = [
            self._head,
            f"To: {_encode_address(to)}\r\nDate: {date}\r\n"
            f"Message-ID: {check_header('Message-ID', message_id)}\r\n".encode("ascii"),
        ]
        for name, value in (headers or {}).items():
            out.append(f"{name}: {_encode_text_header(name, value)}\r\n".encode("ascii"))
        out.append(b"\r\n")
        encoded = {name: _qp_value(values[name]) for name in self.holes}
        for index, (part_head, compiled) in enumerate(self._parts):
            out.append(b"\r\n" + part_head if index else part_head)
            for piece in compiled:
                if isinstance(piece, bytes):
                    out.append(piece)
                else:
                    out += (_SOFT_BREAK, encoded[piece], _SOFT_BREAK)
        out.append(self._tail)
        return b"".join(out)


# --- List headers ------------------------------------------------------------

@lru_cache(maxsize=8)
def _url_around_token(view: str, site_url: str) -> tuple[str, str]:
    # reverse() once, not once per recipient: the URL is fixed around the token.
    before, _, after = reverse(view, args=["TOKEN"]).partition("TOKEN")
    return site_url + before, after


def unsubscribe_url(*, subscriber_id: int, email: str) -> str:
    token = token_make(subscriber_id=subscriber_id, email=email, purpose=Purpose.UNSUBSCRIBE)
    before, after = _url_around_token("subscriptions:unsubscribe", settings.SITE_URL)
    return before + token + after


def manage_url(*, subscriber_id: int, email: str) -> str:
    token = token_make(subscriber_id=subscriber_id, email=email, purpose=Purpose.MANAGE)
    before, after = _url_around_token("subscriptions:manage", settings.SITE_URL)
    return before + token + after


def list_id(list_key: str) -> str:
    """`List-Id` from an immutable key, so renaming a category keeps the id."""
    host = urlsplit(settings.SITE_URL).hostname
    return f"{settings.NEWSROOM_NAME} <{list_key}.lists.{host}>"


@lru_cache(maxsize=8)
def _mailto(address: str) -> str:
    return f"mailto:{quote(address, safe='@+')}?subject=unsubscribe"


def list_unsubscribe(url: str) -> str:
    """The `List-Unsubscribe` value: the one-click https URL first (RFC 8058 wants
    https; mail programs try the URIs in order), then a mailto (RFC 2369) for
    programs that offer only that. The mailto unsubscribes only where an inbound
    route for NEWSROOM_UNSUBSCRIBE_MAILTO exists; the URL always does."""
    mailto = settings.NEWSROOM_UNSUBSCRIBE_MAILTO
    return f"<{url}>, <{_mailto(mailto)}>" if mailto else f"<{url}>"


def list_headers_shared(*, list_key: str) -> dict[str, str]:
    """The list headers every reader of a list gets: fixed in its MessageTemplate."""
    return {
        "List-Id": list_id(list_key),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Post": "NO",
        "Precedence": "bulk",
    }


def list_headers_personal(*, unsubscribe_url: str) -> dict[str, str]:
    """The list header each reader gets their own of: passed to `render()`."""
    return {"List-Unsubscribe": list_unsubscribe(unsubscribe_url)}
