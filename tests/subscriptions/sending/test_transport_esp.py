"""The ESP merge road's economies (sending/transports/esp.py), against tests.fake_esp.

The calls of a batch share one HTTP session (one kept-alive TCP connection),
closed after the batch unless the caller had opened it; and the Mailgun
payload carries only what differs between readers, while each reader still
gets exactly the copy the plain payload (every value, merge_headers) gives.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from django.core.mail import get_connection

from subscriptions.sending.mime import manage_url, unsubscribe_url
from subscriptions.sending.transports.base import Batch, Recipient, Result
from subscriptions.sending.transports.esp import ROADS, ESPTransport, MailgunTransport
from subscriptions.tokens import Purpose, token_read
from tests.fake_esp import FakeMailgun
from tests.mailbox import unsubscribe_link

SYNTAX = "%recipient.{}%"


@pytest.fixture
def fake() -> Iterator[FakeMailgun]:
    with FakeMailgun() as server:
        yield server


@pytest.fixture
def connection(fake: FakeMailgun, settings):
    settings.ANYMAIL = {"MAILGUN_API_KEY": "key", "MAILGUN_SENDER_DOMAIN": "mg.example.com",
                        "MAILGUN_API_URL": fake.url, "REQUESTS_TIMEOUT": 5}
    return get_connection("anymail.backends.mailgun.EmailBackend")


@pytest.fixture
def limit_3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MailgunTransport, "batch_limit", 3)


class PlainMailgun(ESPTransport):
    """Mailgun as any merging ESP: every value in merge_data, headers in merge_headers."""

    name = "mailgun"
    merge_field = SYNTAX
    batch_limit = 1000


def reader(n: int, email: str | None = None, *, message_id: bool = True,
           **values: str) -> Recipient:
    """A recipient as deliveries builds one: real link tokens, a stable Message-ID."""
    email = email or f"reader{n}@example.com"
    unsubscribe = unsubscribe_url(subscriber_id=n, email=email)
    return Recipient(
        delivery_id=1000 + n, email=email,
        values={"email": email, "unsubscribe_url": unsubscribe,
                "manage_url": manage_url(subscriber_id=n, email=email), **values},
        headers={"List-Unsubscribe": f"<{unsubscribe}>"},
        message_id=f"<e7.s{n}.{n * 7919:012x}@example.com>" if message_id else "",
    )


def content(syntax: str) -> tuple[str, str, str]:
    def v(name: str) -> str:
        return syntax.format(name)

    return (f"News for {v('email')}",
            f"Hello {v('email')}\nPreferences: {v('manage_url')}\nLeave: {v('unsubscribe_url')}\n",
            f'<p>Hello {v("email")}</p><a href="{v("manage_url")}">Preferences</a> '
            f'<a href="{v("unsubscribe_url")}">Unsubscribe</a>')


def send(connection, recipients: list[Recipient],
         road: type[ESPTransport] = MailgunTransport) -> list[Result]:
    return road(connection).send(Batch(
        from_email="News <news@example.com>", recipients=recipients,
        render=lambda r: b"", merge=content,
    ))


def closed(fake: FakeMailgun, number: int, wait: float = 5.0) -> bool:
    """Whether the client closes connection `number` (the fake sees it a moment later)."""
    deadline = time.monotonic() + wait
    while number not in fake.connections_closed:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def copies(fake: FakeMailgun) -> dict[str, tuple]:
    return {d.to: (d.sender, d.subject, d.text, d.html, d.headers, d.variables)
            for d in fake.received}


# --- one connection per batch -----------------------------------------------------------


def test_the_calls_of_a_batch_share_one_connection_closed_after(fake, connection, limit_3):
    results = send(connection, [reader(n) for n in range(7)])

    assert [c.recipients for c in fake.calls] == [3, 3, 1]
    [number] = {c.connection for c in fake.calls}
    assert {r.status for r in results} == {"sent"}
    assert connection.session is None
    assert closed(fake, number)


def test_a_refused_call_halved_stays_on_the_connection(fake, connection, limit_3):
    fake.invalid_addresses.add("reader1@example.com")
    results = send(connection, [reader(n) for n in range(3)])

    # [r0 r1 r2] refused, [r0] taken, [r1 r2] refused, [r1] refused, [r2] taken.
    assert [c.status for c in fake.calls] == [400, 200, 400, 400, 200]
    assert len({c.connection for c in fake.calls}) == 1
    assert [r.status for r in results] == ["sent", "failed", "sent"]


def test_a_connection_the_caller_opened_is_left_open(fake, connection, limit_3):
    connection.open()
    session = connection.session
    send(connection, [reader(n) for n in range(4)])
    send(connection, [reader(n) for n in range(4, 6)])

    assert connection.session is session
    [number] = {c.connection for c in fake.calls}
    assert not closed(fake, number, wait=0.2)
    connection.close()
    assert closed(fake, number)


def test_the_connection_is_closed_after_a_failed_batch(fake, connection, limit_3):
    fake.fail_next(3, status=503)
    results = send(connection, [reader(n) for n in range(7)])

    assert {r.status for r in results} == {"retry"}
    assert connection.session is None
    assert all(closed(fake, number) for number in {c.connection for c in fake.calls})


# --- the payload: what differs, and nothing else -------------------------------------------


BATCHES = {
    "a batch": lambda: [reader(n) for n in range(1, 8)],
    "addresses with nothing in common": lambda: [
        reader(5, "ann@example.org"), reader(12, "Bob.Smith+news@mail.example.net"),
        reader(340, "zoë@example.de"), reader(7, "x@y.io"),
    ],
    "one reader": lambda: [reader(3)],
    "some readers without a Message-ID": lambda: [
        reader(1), reader(2, message_id=False), reader(3),
    ],
    "a personal header not made of values": lambda: [
        Recipient(r.delivery_id, r.email, r.values,
                             {**r.headers, "X-Reader": f"r{r.delivery_id}"}, r.message_id)
        for r in (reader(n) for n in range(3))
    ],
    "a value no part of the message uses": lambda: [
        reader(n, nickname=f"reader number {n}") for n in range(3)
    ],
}


@pytest.mark.parametrize("batch", list(BATCHES))
def test_each_reader_gets_exactly_the_copy_the_plain_payload_gives(
        fake, connection, monkeypatch, batch):
    recipients = BATCHES[batch]()
    send(connection, recipients)
    compact = copies(fake)
    compact_form = fake.calls[0].form

    fake.reset()
    send(connection, recipients, road=PlainMailgun)
    plain = copies(fake)
    plain_form = fake.calls[0].form

    assert set(compact) == {r.email for r in recipients}
    assert compact == plain
    assert "%recipient" not in json.dumps(compact)
    variables = json.loads(compact_form["recipient-variables"][0])
    assert "nickname" not in json.dumps(variables)  # nothing unused travels
    size, plain_size = (len(form["recipient-variables"][0]) for form in (compact_form, plain_form))
    assert size < plain_size * (0.6 if len(recipients) > 3 else 1)


def test_a_call_carries_each_reader_only_what_is_theirs(fake, connection, settings):
    settings.SITE_URL = "https://news.example.com"
    recipients = [reader(n) for n in range(100, 130)]
    send(connection, recipients)
    [call] = fake.calls
    form = call.form
    variables = json.loads(form["recipient-variables"][0])

    # List-Unsubscribe is spelt from the unsubscribe link rather than repeated;
    # the links' site and path, the Message-ID's edition and domain go once.
    assert form["h:List-Unsubscribe"][0].startswith("<https://news.example.com/unsubscribe/")
    assert "%recipient.unsubscribe_url%" in form["h:List-Unsubscribe"][0]
    assert form["h:Message-Id"][0].endswith("@example.com>")
    mine = variables["reader100@example.com"]
    assert set(mine) == {"email", "unsubscribe_url", "manage_url", "h:Message-Id",
                         "v:delivery_id"}
    assert "news.example.com" not in form["recipient-variables"][0]

    for r in recipients:
        [got] = fake.to(r.email)
        link = unsubscribe_link(got.headers["List-Unsubscribe"])
        assert link == r.values["unsubscribe_url"] and link in got.text and link in got.html
        token = link.rstrip("/").rsplit("/", 1)[1]
        assert token_read(token, purpose=Purpose.UNSUBSCRIBE).subscriber_id == r.delivery_id - 1000
        assert r.values["manage_url"] in got.html
        assert got.headers["Message-Id"] == r.message_id
        assert got.variables["delivery_id"] == str(r.delivery_id)
        assert got.subject == f"News for {r.email}"


def test_a_reader_at_an_international_domain_gets_their_own_copy(fake, connection):
    """anymail sends the domain IDNA-encoded: the merge fields must be keyed the same way."""
    recipients = [reader(1, "jürgen@bücher.example"), reader(2)]
    results = send(connection, recipients)
    assert [r.status for r in results] == ["sent", "sent"]
    [copy] = fake.to("jürgen@xn--bcher-kva.example")
    assert "%recipient" not in copy.text + copy.html + json.dumps(copy.headers)
    assert "Hello jürgen@bücher.example" in copy.text  # as they wrote it
    assert copy.headers["List-Unsubscribe"] == recipients[0].headers["List-Unsubscribe"]


def test_a_domain_that_cannot_be_encoded_fails_that_reader_alone(fake, connection):
    results = send(connection, [reader(1, "x@ü..example"), reader(2)])
    assert {r.delivery_id: r.status for r in results} == {1001: "failed", 1002: "sent"}
    assert "invalid address" in results[0].detail
    assert [c.recipients for c in fake.calls] == [1]


def test_every_batch_esp_takes_per_recipient_headers():
    """List-Unsubscribe differs per reader: an ESP whose anymail payload can't take
    merge_headers (Mandrill) must take the one-by-one road instead."""
    from anymail.backends.base_requests import RequestsPayload

    for esp in (road.name for road in ROADS):
        module = __import__(f"anymail.backends.{esp}", fromlist=["EmailBackend"])
        payload = next(cls for cls in vars(module).values() if isinstance(cls, type)
                       and issubclass(cls, RequestsPayload) and cls is not RequestsPayload)
        for feature in ("set_merge_data", "set_merge_headers", "set_merge_metadata"):
            assert feature in vars(payload), (esp, feature)
