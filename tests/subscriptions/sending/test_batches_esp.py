"""Editions through an ESP's HTTP API (anymail's Mailgun backend against tests.fake_esp).

The batch road sends one API call per chunk of recipients, personalised by the
ESP (`merge_data`, `merge_headers`, `merge_metadata`); these tests check what
each reader would receive, what is recorded per delivery, and how every kind
of API failure ends. The per-call limit is lowered to 3 to keep them fast.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from anymail.exceptions import AnymailRequestsAPIError
from django.core import mail
from django.core.mail import EmailMultiAlternatives, get_connection

from subscriptions.models import Delivery, Edition, Subscriber
from subscriptions.sending import batches, dispatch, enqueue
from subscriptions.sending.transports.base import Batch, Recipient
from subscriptions.sending.transports.esp import MailgunTransport
from subscriptions.tokens import Purpose, token_read
from tests.fake_esp import FakeMailgun, send_editions_through
from tests.mailbox import unsubscribe_link
from tests.subscriptions.factories import category, subscriber
from tests.subscriptions.test_alerts import send_all, story

pytestmark = pytest.mark.django_db

LIMIT = 3  # recipients per API call in these tests (Mailgun's real limit: 1,000)
ONE_CLICK = "List-Unsubscribe=One-Click"


@pytest.fixture
def no_enqueue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the broker out: batches run in this process (send_all, rerun)."""
    monkeypatch.setattr(enqueue, "enqueue_dispatch", lambda edition: None)
    monkeypatch.setattr(enqueue, "enqueue_batches", lambda edition, **kwargs: 0)


@pytest.fixture
def fake() -> Iterator[FakeMailgun]:
    with FakeMailgun() as server:
        yield server


@pytest.fixture
def mailgun(fake: FakeMailgun, settings, monkeypatch: pytest.MonkeyPatch,
            no_enqueue: None) -> FakeMailgun:
    """Editions go out through anymail's real Mailgun backend, to the fake."""
    send_editions_through(settings, fake)
    monkeypatch.setattr(MailgunTransport, "batch_limit", LIMIT)
    return fake


def alert_to(count: int) -> tuple[Edition, list[Subscriber]]:
    cat = category("policy")
    subs = [subscriber(f"reader{i}@example.com", categories=[cat]) for i in range(count)]
    return dispatch.edition_create_alert(story=story(cat), by=None), subs


def rerun(edition: Edition) -> None:
    """What the next batch run (a retry) does: send what is still queued."""
    for first, last in enqueue.batch_ranges(edition):
        batches.deliveries_send(edition_id=edition.pk, first_id=first, last_id=last)
    edition.refresh_from_db()


def unsubscribe_token(list_unsubscribe: str) -> str:
    return list_unsubscribe.strip("<>").rstrip("/").rsplit("/", 1)[1]


def first_chunk(subs: list[Subscriber]) -> set[str]:
    """The addresses of the first API call (deliveries are sent in id order)."""
    return {s.email for s in subs[:LIMIT]}


def test_an_alert_is_one_call_per_chunk_and_each_reader_gets_their_own_copy(mailgun, settings):
    settings.NEWSROOM_REPLY_TO = "desk@example.com"
    edition, subs = alert_to(7)
    send_all(edition)

    assert mailgun.call_count == math.ceil(7 / LIMIT)
    assert [c.recipients for c in mailgun.calls] == [3, 3, 1]
    assert Counter(d.to for d in mailgun.received) == Counter(s.email for s in subs)
    for sub in subs:
        [got] = mailgun.to(sub.email)
        unsubscribe = unsubscribe_link(got.headers["List-Unsubscribe"])
        assert token_read(unsubscribe_token(unsubscribe),
                          purpose=Purpose.UNSUBSCRIBE).subscriber_id == sub.pk
        assert unsubscribe in got.text and unsubscribe in got.html
        assert "/preferences/" in got.text and "/preferences/" in got.html
        assert got.headers["List-Unsubscribe-Post"] == ONE_CLICK
        assert got.headers["List-Id"] == "Newsroom <alerts.policy.lists.testserver>"
        assert got.headers["Reply-To"] == "desk@example.com"
        assert "%recipient" not in got.subject + got.text + got.html + str(got.headers)
        assert "@@" not in got.text + got.html

    rows = {d.subscriber.email: d for d in Delivery.objects.select_related("subscriber")}
    for got in mailgun.received:  # webhook events carry v:delivery_id: it must map back
        delivery = rows[got.to]
        assert got.variables["delivery_id"] == str(delivery.pk)
        assert (delivery.status, delivery.message_id) == ("sent", got.message_id)
    assert len({d.message_id for d in rows.values()}) == mailgun.call_count  # one id per call
    edition.refresh_from_db()
    assert (edition.status, edition.sent, edition.failed) == ("done", 7, 0)


def test_a_503_leaves_its_chunk_queued_and_the_retry_serves_everyone_once(mailgun):
    edition, subs = alert_to(7)
    mailgun.fail_next(1, status=503)
    send_all(edition)

    queued = Delivery.objects.filter(status="queued")
    assert {d.subscriber.email for d in queued} == first_chunk(subs)
    assert all("503" in d.last_error and d.attempts == 1 for d in queued)
    assert edition.status == "sending" and edition.sent == 4

    rerun(edition)
    assert Counter(d.to for d in mailgun.received) == Counter(s.email for s in subs)
    assert (edition.status, edition.sent, edition.failed) == ("done", 7, 0)
    assert mailgun.call_count == 3 + 1


@pytest.mark.parametrize("esp_accepted", [True, False])
def test_a_timeout_is_retried_and_can_duplicate_only_that_call(mailgun, settings, esp_accepted):
    """A call that times out is ambiguous: the ESP may have queued it anyway.

    It is retried (losing an alert is worse than sending it twice), so the
    readers of that one call may get a second copy, and nobody else can: the
    duplicates are bounded by the calls that timed out, LIMIT readers each.
    """
    settings.ANYMAIL = {**settings.ANYMAIL, "REQUESTS_TIMEOUT": 0.3}
    edition, subs = alert_to(7)
    mailgun.hang_next(1, seconds=3, accept=esp_accepted)
    send_all(edition)

    timed_out = Delivery.objects.filter(status="queued")
    assert {d.subscriber.email for d in timed_out} == first_chunk(subs)
    assert all("timed out" in d.last_error for d in timed_out)
    assert mailgun.calls[0].hung and mailgun.calls[0].accepted is esp_accepted

    rerun(edition)
    copies = Counter(d.to for d in mailgun.received)
    assert set(copies) == {s.email for s in subs}
    duplicated = {address for address, n in copies.items() if n > 1}
    assert max(copies.values()) <= 2
    accepted_while_hung = {d.to for d in mailgun.received if mailgun.calls[d.call - 1].hung}
    assert duplicated == accepted_while_hung
    assert len(duplicated) == (LIMIT if esp_accepted else 0)
    assert (edition.status, edition.sent) == ("done", 7)


def test_a_400_fails_its_chunk_for_good_with_the_error(mailgun):
    edition, subs = alert_to(7)
    mailgun.fail_next(3, status=400, message="'from' parameter is missing")
    send_all(edition)

    # A refused chunk is halved until the refusal is pinned on single recipients:
    # [r0 r1 r2] refused, then [r0] refused (for good), then [r1 r2] refused, and
    # [r1] and [r2] go through.
    failed = Delivery.objects.filter(status="failed")
    assert {d.subscriber.email for d in failed} == {sorted(first_chunk(subs))[0]}
    assert all("400" in d.last_error and "'from' parameter" in d.last_error for d in failed)
    edition.refresh_from_db()
    assert (edition.status, edition.sent, edition.failed) == ("done", 6, 1)
    calls = mailgun.call_count
    rerun(edition)
    assert mailgun.call_count == calls  # nothing retried


def test_one_invalid_address_does_not_sink_its_whole_batch(mailgun):
    edition, subs = alert_to(7)
    bad = sorted(first_chunk(subs))[1]
    mailgun.invalid_addresses.add(bad)
    send_all(edition)
    edition.refresh_from_db()
    assert (edition.sent, edition.failed) == (6, 1)
    assert Delivery.objects.get(status="failed").subscriber.email == bad
    assert {d.to for d in mailgun.received} == {s.email for s in subs} - {bad}


def test_transient_errors_fail_after_the_last_attempt(mailgun, settings):
    settings.NEWSROOM_DELIVERY_MAX_ATTEMPTS = 2
    edition, _subs = alert_to(4)
    mailgun.fail_randomly(1.0, status=503)  # every call fails
    send_all(edition)
    assert set(Delivery.objects.values_list("status", "attempts")) == {("queued", 1)}

    rerun(edition)
    assert set(Delivery.objects.values_list("status", "attempts")) == {("failed", 2)}
    assert all("503" in e for e in Delivery.objects.values_list("last_error", flat=True))
    assert (edition.status, edition.failed) == ("done", 4)
    assert not mailgun.received


def test_the_real_mailgun_limit_is_respected(fake, settings):
    """1,001 recipients: two calls through the transport; one call of 1,001 is refused."""
    settings.ANYMAIL = {"MAILGUN_API_KEY": "key", "MAILGUN_SENDER_DOMAIN": "mg.example.com",
                        "MAILGUN_API_URL": fake.url}
    connection = get_connection("anymail.backends.mailgun.EmailBackend")
    recipients = [
        Recipient(i, f"r{i}@example.com", {"email": f"r{i}@example.com"},
                  {"List-Unsubscribe": f"<https://example.com/u/{i}/>"}, "")
        for i in range(1001)
    ]
    results = MailgunTransport(connection).send(Batch(
        from_email="News <news@example.com>", recipients=recipients, render=lambda r: b"",
        merge=lambda s: ("Hi", "To " + s.format("email"), "<p/>"),
    ))
    assert [c.recipients for c in fake.calls] == [1000, 1]
    assert {r.status for r in results} == {"sent"} and len(results) == 1001
    assert fake.to("r1000@example.com")[0].text == "To r1000@example.com"

    message = EmailMultiAlternatives("Hi", "text", "news@example.com",
                                     [r.email for r in recipients], connection=connection)
    message.merge_data = {}
    with pytest.raises(AnymailRequestsAPIError) as caught:
        message.send()
    assert caught.value.status_code == 400 and "1000" in str(caught.value)


def test_the_fake_requires_the_api_key(fake, settings):
    settings.ANYMAIL = {"MAILGUN_API_KEY": "wrong", "MAILGUN_SENDER_DOMAIN": "mg.example.com",
                        "MAILGUN_API_URL": fake.url}
    connection = get_connection("anymail.backends.mailgun.EmailBackend")
    with pytest.raises(AnymailRequestsAPIError) as caught:
        EmailMultiAlternatives("Hi", "text", "a@example.com", ["b@example.com"],
                               connection=connection).send()
    assert caught.value.status_code == 401 and not fake.received


def test_the_fake_reads_multipart_posts(fake, settings):
    """With an attachment anymail posts multipart/form-data instead of a form."""
    settings.ANYMAIL = {"MAILGUN_API_KEY": "key", "MAILGUN_SENDER_DOMAIN": "mg.example.com",
                        "MAILGUN_API_URL": fake.url}
    message = EmailMultiAlternatives(
        "Hé %recipient.name%", "Hi %recipient.name%", "news@example.com",
        ["a@example.com", "b@example.com"],
        connection=get_connection("anymail.backends.mailgun.EmailBackend"),
    )
    message.attach("notes.txt", "attached", "text/plain")
    message.merge_data = {"a@example.com": {"name": "Ann"}, "b@example.com": {"name": "Bő"}}
    message.send()
    assert fake.calls[0].content_type == "multipart/form-data"
    assert [(d.to, d.subject, d.text) for d in fake.received] == [
        ("a@example.com", "Hé Ann", "Hi Ann"), ("b@example.com", "Hé Bő", "Hi Bő"),
    ]


def test_a_backend_without_batch_api_gets_one_correct_message_per_reader(settings, no_enqueue):
    """The fallback road: one prebuilt message per reader through any Django backend."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.EMAIL_TRANSPORT = "locmem"
    edition, subs = alert_to(4)
    send_all(edition)

    assert len(mail.outbox) == 4
    by_reader: dict[str, EmailMessage] = {}
    for sent in mail.outbox:
        # The bytes a Django backend would send (re-serialised), not just our own.
        wire = sent.message().as_bytes(linesep="\r\n")
        parsed = message_from_bytes(wire, policy=policy.default)
        assert not parsed.defects
        assert sent.recipients() == [str(parsed["To"])]
        by_reader[str(parsed["To"])] = parsed
        original = message_from_bytes(sent.raw, policy=policy.default)
        for header in ("Subject", "From", "To", "List-Id", "List-Unsubscribe", "Message-ID"):
            assert str(parsed[header]) == str(original[header]), header
    assert set(by_reader) == {s.email for s in subs}
    for sub in subs:
        parsed = by_reader[sub.email]
        assert parsed["List-Unsubscribe-Post"] == ONE_CLICK
        unsubscribe = unsubscribe_link(parsed["List-Unsubscribe"])
        assert token_read(unsubscribe_token(unsubscribe),
                          purpose=Purpose.UNSUBSCRIBE).subscriber_id == sub.pk
        text = parsed.get_body(("plain",)).get_content()
        html = parsed.get_body(("html",)).get_content()
        assert unsubscribe in text and unsubscribe in html
        assert "@@" not in text + html
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
    edition.refresh_from_db()
    assert (edition.status, edition.sent) == ("done", 4)


def test_an_api_backend_without_batch_support_gets_the_whole_message(settings, no_enqueue):
    """ESPs without a merge road (Postmark, Resend, ...) read an EmailMessage's fields,
    not its MIME: the prebuilt message must fill them (bodies, Reply-To, headers)."""
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    settings.EMAIL_TRANSPORT = "test"
    settings.NEWSROOM_REPLY_TO = "desk@example.com"
    edition, subs = alert_to(2)
    send_all(edition)

    params = {str(m.to[0]): m.anymail_test_params for m in mail.outbox}
    assert set(params) == {s.email for s in subs}
    for sub in subs:
        sent = params[sub.email]
        headers = sent["extra_headers"]
        unsubscribe = unsubscribe_link(headers["List-Unsubscribe"])
        assert token_read(unsubscribe_token(unsubscribe),
                          purpose=Purpose.UNSUBSCRIBE).subscriber_id == sub.pk
        assert unsubscribe in sent["text_body"] and unsubscribe in sent["html_body"]
        assert headers["List-Unsubscribe-Post"] == ONE_CLICK
        assert headers["Message-ID"] and headers["List-Id"]
        assert [a.addr_spec for a in sent["reply_to"]] == ["desk@example.com"]
        assert not sent["is_batch_send"]
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}
