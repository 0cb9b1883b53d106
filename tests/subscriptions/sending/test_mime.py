"""MessageTemplate: prebuilt MIME must parse back to exactly what was meant.

Property tests (hypothesis) throw awkward bodies and values at it: lines
starting with ".", long lines, "=" signs, trailing spaces, CRLF and LF, URLs
with tokens, non-ASCII. Each rendered message must parse with the stdlib
(policy.default) without defects to the expected text, with every encoded
body line within 78 octets and no line that SMTP would have to dot-stuff.
"""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from django.core.mail import EmailMultiAlternatives
from hypothesis import given, settings
from hypothesis import strategies as st

from subscriptions.sending import mime
from subscriptions.sending.mime import HeaderInjection, MessageTemplate, hole
from subscriptions.tokens import Purpose, token_read

DATE = "Thu, 01 Jan 2026 07:00:00 +0000"
MESSAGE_ID = "<e1.s1.abc@example.com>"
NAMES = ("email", "unsubscribe_url", "manage_url")

# Text without "@" (it would blur the @@hole@@ markers), surrogates (not encodable)
# or a CR outside CRLF (not a line ending mail knows).
_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="@\r")
_awkward_lines = st.one_of(
    st.text(_chars, max_size=20),
    st.text(_chars, min_size=70, max_size=300),  # longer than a QP line
    st.builds("{}{}".format, st.sampled_from([".", "..", ". ", "="]), st.text(_chars, max_size=90)),
    st.builds("{} ".format, st.text(_chars, max_size=80)),  # trailing space
    st.sampled_from([".", "", "=", "=3D", "a=\n", "x" * 75 + ".", " " * 80, "\t"]),
)
_segments = st.lists(
    st.one_of(
        _awkward_lines,
        st.sampled_from(["\n", "\r\n"]),
        st.sampled_from(NAMES).map(hole),
    ),
    max_size=12,
)
bodies = _segments.map("".join)

_token = st.text(st.sampled_from("ABCxyz0189-_:."), min_size=1, max_size=120)
values = st.one_of(
    st.builds("https://news.example.com/unsubscribe/{}/".format, _token),
    st.builds("{}=x@example.com".format, st.text(st.sampled_from("abc=+."), max_size=90)),
    st.builds("{}.{}".format, st.text(st.sampled_from("ab"), min_size=70, max_size=80),
              _token),  # a "." where the wrapping falls
    st.text(_chars, max_size=100),
)
_header_chars = st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"))
header_texts = st.text(_header_chars, min_size=1, max_size=300).map(str.strip).filter(bool)


def normalise(text: str) -> str:
    return text.replace("\r\n", "\n")


def fill(body: str, vals: dict[str, str]) -> str:
    for name, value in vals.items():
        body = body.replace(hole(name), value)
    return body


def parse(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    for part in message.walk():
        assert not part.defects, part.defects
    return message


def check_wire_format(raw: bytes) -> None:
    """Lines end in CRLF only; body lines ≤ 78 octets with CRLF, headers ≤ 998; no dots."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"\r" not in raw.replace(b"\r\n", b"") and b"\n" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    long = [line for line in body.split(b"\r\n") if len(line) > 76]
    assert not long, long
    assert not re.search(rb"(^|\r\n)\.", raw)


def template(text: str, html: str, **kwargs: object) -> MessageTemplate:
    kwargs.setdefault("subject", "Breaking news")
    kwargs.setdefault("from_email", "Newsroom <news@example.com>")
    return MessageTemplate(text=text, html=html, **kwargs)  # type: ignore[arg-type]


def render(tpl: MessageTemplate, vals: dict[str, str], **kwargs: object) -> bytes:
    return tpl.render(to=str(kwargs.pop("to", "reader@example.com")), message_id=MESSAGE_ID,
                      date=DATE, values=vals, **kwargs)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(text=bodies, html=bodies, vals=st.fixed_dictionaries({n: values for n in NAMES}))
def test_bodies_and_values_round_trip(text, html, vals):
    raw = render(template(text, html), vals)
    check_wire_format(raw)
    message = parse(raw)
    assert message.get_content_type() == "multipart/alternative"
    plain, rich = message.iter_parts()
    assert plain.get_content_type() == "text/plain" and rich.get_content_type() == "text/html"
    assert normalise(plain.get_content()) == normalise(fill(text, vals))
    assert normalise(rich.get_content()) == normalise(fill(html, vals))


def quoted(name: str, address: str) -> str:
    """A display name written as a caller must: quoted, so specials stay in it."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}" <{address}>'


@settings(max_examples=100, deadline=None)
@given(subject=header_texts, name=header_texts, list_name=header_texts)
def test_headers_round_trip(subject, name, list_name):
    raw = render(
        template("text", "<p>html</p>", subject=subject,
                 from_email=quoted(name, "news@example.com"),
                 reply_to=quoted(name, "desk@example.com"), headers={"X-List-Name": list_name}),
        {}, headers={"List-Unsubscribe": "<https://news.example.com/u/tok/>"},
    )
    check_wire_format(raw)
    message = parse(raw)
    assert message["Subject"] == subject
    assert message["X-List-Name"] == list_name
    for header in ("From", "Reply-To"):
        [address] = message[header].addresses
        assert address.display_name == name
    assert message["List-Unsubscribe"] == "<https://news.example.com/u/tok/>"
    assert raw.isascii()


def test_non_ascii_subject_and_names_are_encoded_words():
    raw = render(template("t", "<p>h</p>", subject="Dam bursts – ünïcode",  # noqa: RUF001
                          from_email="Rédaction <news@example.com>"), {})
    head = raw.partition(b"\r\n\r\n")[0]
    assert b"Subject: =?utf-8?" in head and b"From: =?utf-8?" in head
    message = parse(raw)
    assert message["Subject"] == "Dam bursts – ünïcode"  # noqa: RUF001
    assert message["From"].addresses[0].display_name == "Rédaction"


def test_text_that_looks_like_an_encoded_word_stays_literal():
    raw = render(template("t", "<p>h</p>", subject="Costs =?utf-8?q?hidden?= rise"), {})
    assert parse(raw)["Subject"] == "Costs =?utf-8?q?hidden?= rise"


def test_idn_domains_become_punycode():
    raw = render(template("t", "<p>h</p>"), {}, to="leser@bücher.example")
    assert b"To: leser@xn--bcher-kva.example\r\n" in raw
    assert parse(raw)["To"].addresses[0].domain == "xn--bcher-kva.example"


@pytest.mark.parametrize("build", [
    lambda: template("t", "h", subject="Hi\r\nBcc: victim@example.com"),
    lambda: template("t", "h", subject="Hi\nthere"),
    lambda: template("t", "h", headers={"List-Id": "x\rBcc: victim@example.com"}),
    lambda: template("t", "h", reply_to="desk@example.com\r\nBcc: victim@example.com"),
    lambda: template("t", "h", from_email="News <news@example.com>\nBcc: victim@example.com"),
    lambda: render(template("t", "h"), {}, headers={"List-Unsubscribe": "<u>\r\nBcc: v@x.y"}),
    lambda: render(template("t", "h"), {}, to="reader@example.com\r\nBcc: victim@example.com"),
    lambda: template("t", "h").render(to="r@example.com", message_id="<a@b>\nBcc: v@x.y",
                                      date=DATE, values={}),
])
def test_line_breaks_in_headers_are_refused(build):
    with pytest.raises(HeaderInjection):
        build()


def test_same_message_as_django_builds():
    text = "Hello @@email@@,\n.dot line\nLong " + "word " * 30 + "\nLeave: @@unsubscribe_url@@\n"
    html = "<p>Hé @@email@@</p>\n<p><a href=\"@@unsubscribe_url@@\">Unsubscribe</a></p>\n"
    vals = {"email": "a=b@example.com",
            "unsubscribe_url": "https://news.example.com/unsubscribe/" + "tok3n-_:" * 12 + "/"}
    headers = {"List-Id": "Newsroom <alerts.policy.lists.example.com>",
               "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    personal = {"List-Unsubscribe": f"<{vals['unsubscribe_url']}>"}
    ours = parse(render(template(text, html, subject="Breaking: Dam bursts – ünïcode",  # noqa: RUF001
                                 from_email="Rédaction <news@example.com>",
                                 reply_to="desk@example.com", headers=headers),
                        vals, headers=personal))

    django = EmailMultiAlternatives(
        subject="Breaking: Dam bursts – ünïcode", body=fill(text, vals),  # noqa: RUF001
        from_email="Rédaction <news@example.com>", to=["reader@example.com"],
        reply_to=["desk@example.com"],
        headers={**headers, **personal, "Message-ID": MESSAGE_ID, "Date": DATE},
    )
    django.attach_alternative(fill(html, vals), "text/html")
    theirs = parse(django.message().as_bytes(linesep="\r\n"))

    for name in ("Subject", "From", "To", "Reply-To", "Date", "Message-ID", "List-Id",
                 "List-Unsubscribe", "List-Unsubscribe-Post", "MIME-Version"):
        # (Django folds a long List-Unsubscribe onto a continuation line: strip)
        assert str(ours[name]).strip() == str(theirs[name]).strip(), name
    assert ours.get_content_type() == theirs.get_content_type() == "multipart/alternative"
    for kind in ("plain", "html"):
        mine, django_part = ours.get_body((kind,)), theirs.get_body((kind,))
        assert normalise(mine.get_content()) == normalise(django_part.get_content())
        assert mine.get_content_charset() == django_part.get_content_charset() == "utf-8"


def body_encode_whole(text: str) -> bytes:
    """The encoding of a whole body at once (as before lines were encoded and cached)."""
    import email.quoprimime

    encoded = email.quoprimime.body_encode(text.encode("utf-8").decode("latin-1"),
                                           maxlinelen=73, eol="\r\n")
    return re.sub(r"(?m)^\.", "=2E", encoded).encode("ascii")


# Any text, with every line break Python knows (body_encode keeps only CR and LF).
_any_lines = st.lists(st.one_of(
    _awkward_lines, st.text(st.characters(blacklist_categories=("Cs",)), max_size=80),
    st.sampled_from(["\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "…Å"]),
), max_size=12).map("".join)


@settings(max_examples=500, deadline=None)
@given(text=_any_lines)
def test_line_by_line_encoding_equals_encoding_the_whole_body(text):
    assert mime._qp(text) == body_encode_whole(text)
    assert mime._qp(text, mime._qp_template_line) == body_encode_whole(text)  # cached
    assert mime._qp(text, mime._qp_template_line) == body_encode_whole(text)


def test_long_ascii_subjects_are_folded_and_unfold_to_the_same_text():
    # The 319-character subject of issue 12, left on one line until then.
    subject = "Breaking: " + " ".join(f"council votes on item {i} of the budget" for i in range(8))
    subject = (subject + " and more")[:319]
    raw = render(template("t", "<p>h</p>", subject=subject,
                          headers={"X-Long": "a\tb " + "word " * 40 + "x" * 120}), {},
                 headers={"List-Unsubscribe": "<https://news.example.com/unsubscribe/"
                          + "t" * 60 + "/>, <mailto:unsubscribe@example.com?subject=unsubscribe>"})
    check_wire_format(raw)
    head = raw.partition(b"\r\n\r\n")[0].split(b"\r\n")
    subject_lines = head[next(i for i, line in enumerate(head) if line.startswith(b"Subject:")):]
    assert len(subject_lines[0]) <= 78 and subject_lines[1].startswith(b" ")
    # Only a word longer than a line may pass 78 (the 120 x's, the long URL): never split.
    too_long = [line for line in head if len(line) > 78]
    assert len(too_long) == 2
    assert all(len(line.split(b": ", 1)[-1].split()) == 1 for line in too_long)
    message = parse(raw)
    assert message["Subject"] == subject
    assert message["X-Long"] == "a\tb " + "word " * 40 + "x" * 120
    assert str(message["List-Unsubscribe"]).endswith(
        "<mailto:unsubscribe@example.com?subject=unsubscribe>")


# --- list headers ------------------------------------------------------------------------


def reader_headers(subscriber_id: int, email: str, list_key: str) -> dict[str, str]:
    """Every list header one reader's message carries, as batches sets them."""
    url = mime.unsubscribe_url(subscriber_id=subscriber_id, email=email)
    return {**mime.list_headers_shared(list_key=list_key),
            **mime.list_headers_personal(unsubscribe_url=url)}


def test_list_headers_offer_rfc8058_one_click(settings):
    settings.SITE_URL = "https://news.example.com"
    headers = reader_headers(5, "a@example.com", "policy")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url, mailto = headers["List-Unsubscribe"].split(", ")
    assert url.startswith("<https://news.example.com/unsubscribe/") and url.endswith("/>")
    assert mailto == f"<mailto:{settings.NEWSROOM_UNSUBSCRIBE_MAILTO}?subject=unsubscribe>"
    token = url[1:-2].rsplit("/", 1)[1]
    assert token_read(token, purpose=Purpose.UNSUBSCRIBE).subscriber_id == 5
    assert headers["List-Id"] == "Newsroom <policy.lists.news.example.com>"
    assert all("\r" not in v and "\n" not in v and len(v) < 998 for v in headers.values())


def test_the_unsubscribe_mailto_is_configurable_and_can_be_left_out(settings):
    settings.NEWSROOM_UNSUBSCRIBE_MAILTO = "leave+news@example.org"
    header = reader_headers(5, "a@example.com", "p")["List-Unsubscribe"]
    assert header.endswith(", <mailto:leave+news@example.org?subject=unsubscribe>")
    settings.NEWSROOM_UNSUBSCRIBE_MAILTO = ""
    header = reader_headers(5, "a@example.com", "p")["List-Unsubscribe"]
    assert "mailto:" not in header and header.startswith("<http") and "," not in header
