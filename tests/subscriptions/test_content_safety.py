"""Whatever an editor writes reaches the reader as written, in a message that parses.

Arbitrary Unicode headlines, summaries and bodies go through the alert and digest
builders and the per-reader MIME templating: every message parses without
defects, carries the headline and summary unchanged, and the reader's own values
still fill their holes (no story text can open or close one). The one change:
bidi control characters are taken out of subjects and headlines (they could
reorder what an inbox shows), so those are compared with them stripped.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import formatdate

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsroom.models import Category, Story
from subscriptions.mail_look import strip_bidi
from subscriptions.sending.content import ContentError, alert_content, digest_content
from subscriptions.sending.mime import HOLE_NONCE, MessageTemplate

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
READER = {"email": "reader@example.com", "unsubscribe_url": "https://news.example/u/t0k",
          "manage_url": "https://news.example/m/t0k"}
# Any character but surrogates (not encodable) and NUL (refused by every form).
_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
# What editors are known to write that looks like somebody's template syntax.
_syntax = st.sampled_from(["@@email@@", "@@unsubscribe_url@@", "{{ x }}", "{% if %}", "%s",
                           "$x", "%recipient.email%", "[[var:email]]", "{{{email}}}", "=?utf-8?q?",
                           ".\r\n.", "--==nr-", "@@", "\u202e"])
texts = st.lists(st.one_of(st.text(_chars, max_size=40), _syntax), max_size=6).map("".join)


def lines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def story(headline: str, dek: str, body: str, n: int = 1) -> Story:
    category = Category(pk=1, name="Policy & <Law>", slug="policy", order=1)
    return Story(pk=n, slug=f"s-{n}", headline=headline, dek=dek, body=body, category=category,
                 category_id=1, status=Story.Status.PUBLISHED,
                 published_at=NOW - timedelta(hours=n), updated_at=NOW)


def render(content) -> EmailMessage:
    template = MessageTemplate(
        subject=content.subject, from_email="Newsroom <news@example.com>",
        text=content.text, html=content.html, reply_to="desk@example.com",
        headers={"List-Id": "<policy.lists.example.com>"},
    )
    raw = template.render(to=READER["email"], message_id="<e1.s1.x@example.com>",
                          date=formatdate(usegmt=True), values=READER,
                          headers={"List-Unsubscribe": f"<{READER['unsubscribe_url']}>"})
    assert raw.count(b"\r\n") == raw.count(b"\n")  # CRLF only, no bare LF
    message = message_from_bytes(raw, policy=policy.default)
    assert [part.defects for part in message.walk()] == [[] for _ in message.walk()]
    return message


def check_personal(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    for part in (text, html):
        assert HOLE_NONCE not in part  # every hole filled
        assert READER["email"] in part and READER["unsubscribe_url"] in part
        assert READER["manage_url"] in part
    return text, html


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(headline=texts.filter(str.strip), dek=texts, body=texts)
def test_any_alert_parses_and_carries_the_editors_text(headline, dek, body):
    content = alert_content(1, story(headline, dek, body))
    message = render(content)
    assert str(message["Subject"]) == " ".join(f"Breaking: {strip_bidi(headline)}".split())
    text, _html = check_personal(message)
    assert lines(strip_bidi(headline)) in lines(text)
    assert lines(dek) in lines(text)


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(items=st.lists(st.tuples(texts.filter(str.strip), texts.filter(str.strip)),
                      min_size=1, max_size=4))
def test_any_digest_parses_and_carries_each_headline_and_summary(items):
    stories = [story(headline, dek, "Body.", n) for n, (headline, dek) in
               enumerate(items, start=1)]
    content = digest_content(1, NOW - timedelta(days=1), "daily", stories,
                             [stories[0].category])
    text, _html = check_personal(render(content))
    for headline, dek in items:
        assert lines(strip_bidi(headline)) in lines(text)
        assert lines(dek) in lines(text)


def test_an_oversized_story_is_refused_with_the_reason_in_words():
    with pytest.raises(ContentError, match=r"over the 100 KB .* shorten the story"):
        alert_content(1, story("Long read", "", "A long paragraph, again and again. " * 5000))
